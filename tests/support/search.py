"""Helpers shared by the search tests: resources with chosen ids, bundle inspection, error checks."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tests.conftest import Fhir
from tests.factories import encounter, patient
from tests.factories import put_with_id as put

__all__ = ["encounter", "patient", "put"]  # shared builders, re-exported under the search tests' names


LOINC = "http://loinc.org"


def observation(oid: str, code: str = "8867-4", subject: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
    }
    if subject:
        out["subject"] = {"reference": subject}
    out.update(extra)
    return out


def match_ids(bundle: dict[str, Any]) -> list[str]:
    """Ids of the match entries, in bundle order."""
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def entries_by_mode(bundle: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    return [e for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def typed_ids(bundle: dict[str, Any], mode: str) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries_by_mode(bundle, mode)}


def link(bundle: dict[str, Any], relation: str) -> str | None:
    for item in bundle.get("link", []):
        if item["relation"] == relation:
            url: str = item["url"]
            return url
    return None


def local(url: str) -> str:
    """A link of the bundle as a path the test client can GET."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def assert_400(fhir: Fhir, query: str, **headers: str) -> dict[str, Any]:
    """The search is refused with 400 and an OperationOutcome (never a 500)."""
    response = fhir.request("GET", f"/fhir/{query}", **headers)
    body: dict[str, Any] = response.get_json()
    assert response.status_code == 400, body
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] in {"error", "fatal"}
    assert body["issue"][0]["diagnostics"]
    return body
