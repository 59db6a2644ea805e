"""Who may export what (SMART Backend Services), ownership of jobs, audit, the per-client limit."""

from __future__ import annotations

import base64

import orjson
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from auth.schema import audit_event
from tests.bulk.data import record
from tests.bulk.support import bad, drain, exported, kick_off, local, manifest, started
from tests.conftest import Fhir, authed
from tests.support.auth import practitioner_user, user_token


def _client(app: Flask, scope: str = "system/*.cruds") -> FlaskClient:
    return authed(app.test_client(), scope)


def test_user_tokens_cannot_export(client: FlaskClient, export_app: Flask) -> None:
    export_app.test_client().get("/fhir/.well-known/smart-configuration")  # loads the session key
    practitioner_user(export_app)
    token = user_token(export_app, "user/*.cruds")
    response = kick_off(export_app.test_client(), "/fhir/$export", Authorization=f"Bearer {token}")
    assert "system-level access token" in bad(response, 403)
    response = kick_off(export_app.test_client(), "/fhir/Patient/$export", Authorization=f"Bearer {token}")
    assert "backend services" in bad(response, 403)


def test_a_narrow_scope_limits_the_types(client: FlaskClient, fhir: Fhir, export_app: Flask) -> None:
    record(fhir, "p1")
    narrow = _client(export_app, "system/Patient.rs system/Encounter.read")
    body = manifest(narrow, export_app, started(narrow, "/fhir/$export"))
    assert set(exported(narrow, body)) == {"Patient/p1", "Encounter/enc-p1"}
    assert "do not allow reading Observation" in bad(
        kick_off(narrow, "/fhir/$export?_type=Patient,Observation"), 403
    )
    query = "/fhir/$export?_typeFilter=Observation%3Fcode%3D1"
    assert "do not allow reading Observation" in bad(kick_off(narrow, query), 403)
    write_only = _client(export_app, "system/*.cud")
    assert "allow reading no resource type" in bad(kick_off(write_only, "/fhir/$export"), 403)


def test_v1_read_scopes_export_everything(client: FlaskClient, fhir: Fhir, export_app: Flask) -> None:
    written = record(fhir, "p1")
    reader = _client(export_app, "system/*.read")
    assert set(exported(reader, manifest(reader, export_app, started(reader, "/fhir/$export")))) == set(
        written
    )


def test_only_the_client_that_kicked_off_reaches_the_job(
    client: FlaskClient, fhir: Fhir, export_app: Flask
) -> None:
    record(fhir, "p1")
    status = started(client, "/fhir/$export")
    body = manifest(client, export_app, status)
    file_url = local(body["output"][0]["url"])
    other = _client(export_app)
    assert "is not known" in bad(other.get(status), 404)
    assert "is not known" in bad(other.get(file_url), 404)
    assert "is not known" in bad(other.delete(status), 404)
    # As unknown as a job that does not exist (no existence oracle).
    assert bad(other.get(status), 404).replace(status.rsplit("/", 1)[1], "x") == bad(
        other.get("/fhir/$export-status/" + "A" * 32), 404
    ).replace("A" * 32, "x")
    assert client.get(status).status_code == 200
    assert client.get(file_url).status_code == 200


def test_other_clients_subscriptions_are_never_exported(
    client: FlaskClient, fhir: Fhir, export_app: Flask
) -> None:
    def subscription(owner: FlaskClient, secret: str) -> str:
        body = {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "test",
            "criteria": "Encounter?status=finished",
            "channel": {
                "type": "rest-hook",
                "endpoint": "http://127.0.0.1:9/hook",
                "header": [f"Authorization: Bearer {secret}"],
            },
        }
        response = owner.post(
            "/fhir/Subscription", data=orjson.dumps(body), content_type="application/fhir+json"
        )
        assert response.status_code == 201, response.get_json()
        return f"Subscription/{response.get_json()['id']}"

    mine = subscription(client, "my-secret")
    other = _client(export_app)
    theirs = subscription(other, "their-secret")
    resources = exported(
        client, manifest(client, export_app, started(client, "/fhir/$export?_type=Subscription"))
    )
    assert set(resources) == {mine}
    resources = exported(other, manifest(other, export_app, started(other, "/fhir/$export")))
    assert set(resources) == {theirs}


def test_kick_off_and_downloads_are_audited(client: FlaskClient, fhir: Fhir, export_app: Flask) -> None:
    record(fhir, "p1")
    status = started(client, "/fhir/$export?_type=Patient")
    body = manifest(client, export_app, status)
    client.get(local(body["output"][0]["url"]))
    export_app.extensions["audit_writer"].flush()
    with export_app.extensions["coordination"].repo.engine.connect() as conn:
        events = [
            orjson.loads(c) for c in conn.scalars(select(audit_event.c.content).order_by(audit_event.c.pk))
        ]
    queries = [
        base64.b64decode(e["query"]).decode()
        for event in events
        if event["subtype"][0]["code"] == "operation"
        for e in event.get("entity", [])
        if "query" in e
    ]
    assert any('"request":"http://localhost/fhir/$export?_type=Patient"' in q for q in queries)
    assert any(
        q.startswith("$export-file/") and q.endswith(body["output"][0]["url"].rsplit("/", 1)[1])
        for q in queries
    )


def test_concurrent_jobs_are_limited_per_client(client: FlaskClient, fhir: Fhir, export_app: Flask) -> None:
    record(fhir, "p1")
    first = started(client, "/fhir/$export")
    started(client, "/fhir/$export")
    response = kick_off(client, "/fhir/$export")
    assert "at most 2" in bad(response, 429)
    assert int(response.headers["Retry-After"]) > 0
    other = _client(export_app)
    started(other, "/fhir/$export")  # the limit is per client
    assert client.delete(first).status_code == 202
    started(client, "/fhir/$export")
    drain(export_app)
    started(client, "/fhir/$export")  # finished jobs do not count


def test_type_filter_hops_need_their_own_scope(client: FlaskClient, fhir: Fhir, export_app: Flask) -> None:
    """Issue 16: a _typeFilter's chain or _has is no oracle on a type the client may not read."""
    record(fhir, "p1")
    narrow = _client(export_app, "system/Patient.rs system/Encounter.read")
    query = "/fhir/$export?_type=Encounter&_typeFilter=Encounter%3F_has%3AObservation%3Aencounter%3Acode%3D1"
    assert "'s' on Observation" in bad(kick_off(narrow, query), 403)
    query = "/fhir/$export?_type=Patient&_typeFilter=Patient%3Fgeneral-practitioner.name%3Dx"
    assert "do not allow 's' on" in bad(kick_off(narrow, query), 403)
