"""Helpers shared by the search tests: resources with chosen ids, bundle inspection, error checks."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tests.conftest import Fhir


def put(fhir: Fhir, resource: dict[str, Any]) -> dict[str, Any]:
    """Create (update-as-create) a resource under the id it carries, so tests can name their data."""
    response = fhir.request("PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
    assert response.status_code in (200, 201), response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def patient(pid: str, family: str = "Dupont", given: str = "Jean", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": family, "given": [given]}], **extra}


def encounter(eid: str, subject: str | dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
    }
    if subject:
        out["subject"] = {"reference": subject} if isinstance(subject, str) else subject
    out.update(extra)
    return out


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
