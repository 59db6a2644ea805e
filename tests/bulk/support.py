"""Helpers of the $export suite: kick-off, the worker's passes, manifest and file downloads."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from coordination_api.bulk import export

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def kick_off(client: FlaskClient, url: str, body: Any = None, **headers: str) -> TestResponse:
    hdrs = {**ASYNC, **{k.replace("_", "-"): v for k, v in headers.items()}}
    if body is None:
        return client.get(url, headers=hdrs)
    hdrs["Content-Type"] = "application/fhir+json"
    return client.post(url, data=orjson.dumps(body), headers=hdrs)


def started(client: FlaskClient, url: str, body: Any = None, **headers: str) -> str:
    """Kick off; the status URL (as a local path)."""
    response = kick_off(client, url, body, **headers)
    assert response.status_code == 202, response.get_json()
    return local(response.headers["Content-Location"])


def drain(app: Flask, limit: int = 1000) -> int:
    """Worker passes until none has anything to do; how many did."""
    passes = 0
    while export.run_due(app):
        passes += 1
        assert passes < limit
    return passes


def manifest(client: FlaskClient, app: Flask, status: str) -> dict[str, Any]:
    drain(app)
    response = client.get(status, headers={"Accept": "application/json"})
    assert response.status_code == 200, response.get_json()
    assert response.headers["Content-Type"] == "application/json"
    body: dict[str, Any] = orjson.loads(response.data)
    return body


def lines(client: FlaskClient, url: str) -> list[dict[str, Any]]:
    response = client.get(local(url), headers={"Accept": "application/fhir+ndjson"})
    assert response.status_code == 200, response.get_json()
    assert response.headers["Content-Type"] == "application/fhir+ndjson"
    return [orjson.loads(line) for line in response.data.splitlines()]


def exported(client: FlaskClient, body: dict[str, Any], kind: str = "output") -> dict[str, dict[str, Any]]:
    """Every resource of the manifest's files, by Type/id; each file's count checked."""
    out: dict[str, dict[str, Any]] = {}
    for item in body[kind]:
        got = lines(client, item["url"])
        assert len(got) == item["count"]
        for resource in got:
            assert resource["resourceType"] == item["type"]
            key = f"{resource['resourceType']}/{resource['id']}"
            assert key not in out, f"{key} exported twice"
            out[key] = resource
    return out


def bad(response: TestResponse, status: int = 400) -> str:
    """A refusal with an OperationOutcome; its diagnostics."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    diagnostics: str = body["issue"][0]["diagnostics"]
    return diagnostics
