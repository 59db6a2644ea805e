"""Bad kick-offs: a 4xx OperationOutcome each, and no job (export.html "Response - Error")."""

from __future__ import annotations

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from coordination_api.storage.schema import bulk_export_job
from tests.bulk.data import record
from tests.bulk.support import bad, kick_off, local, manifest
from tests.conftest import Fhir


def _jobs(app: Flask) -> int:
    with app.extensions["coordination"].repo.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(bulk_export_job)) or 0)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("_outputFormat=application/fhir%2Bjson", "_outputFormat"),
        ("_since=2024-01-01", "not a FHIR instant"),
        ("_since=2024-13-01T00:00:00Z", "not a valid instant"),
        ("_since=yesterday", "not a FHIR instant"),
        ("_type=Patient,Unicorn", "unknown or unsupported resource type 'Unicorn'"),
        ("_type=,", "at least one resource type"),
        ("_type=AuditEvent", "unknown or unsupported resource type 'AuditEvent'"),
        ("_typeFilter=Observation", "not a search of the form"),
        ("_typeFilter=Unicorn?x=1", "unknown or unsupported resource type"),
        ("_typeFilter=Observation?colour=red", "colour"),
        ("_typeFilter=Observation?date=notadate", "date"),
        ("_typeFilter=Observation?code=x%26_include=Observation:subject", "not allowed in an export filter"),
        ("_typeFilter=Observation?_count=5", "not allowed in an export filter"),
        ("_type=Patient&_typeFilter=Observation?code=x", "which _type does not ask for"),
        ("_elements=id", "_elements' is not supported"),
        ("includeAssociatedData=LatestProvenanceResources", "includeAssociatedData"),
        ("_frobnicate=1", "not a $export parameter"),
        ("patient=Patient/p1", "Patient- and Group-level exports only"),
    ],
)
def test_bad_parameters_are_400(client: FlaskClient, export_app: Flask, query: str, expected: str) -> None:
    assert expected in bad(kick_off(client, f"/fhir/$export?{query}"))
    assert _jobs(export_app) == 0


def test_prefer_respond_async_is_required(client: FlaskClient) -> None:
    response = client.get("/fhir/$export", headers={"Accept": "application/fhir+json"})
    assert "Prefer: respond-async" in bad(response)


def test_head_starts_nothing(client: FlaskClient, export_app: Flask) -> None:
    response = client.head("/fhir/$export", headers={"Prefer": "respond-async"})
    assert response.status_code == 405 and response.headers["Allow"] == "GET, POST"
    assert _jobs(export_app) == 0


def test_xml_is_not_acceptable(client: FlaskClient) -> None:
    assert "not supported" in bad(kick_off(client, "/fhir/$export", Accept="application/fhir+xml"), 406)


def test_lenient_handling_ignores_unsupported_parameters_with_a_note(
    client: FlaskClient, fhir: Fhir, export_app: Flask
) -> None:
    record(fhir, "p1")
    response = kick_off(
        client, "/fhir/$export?_type=Patient&_elements=id", Prefer="respond-async, handling=lenient"
    )
    assert response.status_code == 202, response.get_json()
    assert any("_elements" in i["diagnostics"] for i in response.get_json()["issue"])
    body = manifest(client, export_app, local(response.headers["Content-Location"]))
    [patient] = body["output"]
    assert patient["count"] == 1
    [note] = body["error"]
    outcome = orjson.loads(client.get(local(note["url"])).data)
    assert "'_elements'" in outcome["issue"][0]["diagnostics"]


def test_patient_level_types_outside_the_compartment_are_400(client: FlaskClient) -> None:
    assert "not in the Patient compartment" in bad(
        kick_off(client, "/fhir/Patient/$export?_type=Practitioner")
    )


def test_unknown_patients_and_non_members_are_400(client: FlaskClient, fhir: Fhir) -> None:
    record(fhir, "p1")
    record(fhir, "p2")
    fhir.request(
        "PUT",
        "/fhir/Group/g1",
        {
            "resourceType": "Group",
            "id": "g1",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": "Patient/p1"}}],
        },
    )

    def parameters(*refs: str) -> dict[str, object]:
        return {
            "resourceType": "Parameters",
            "parameter": [{"name": "patient", "valueReference": {"reference": r}} for r in refs],
        }

    assert "Patient/nobody is not known" in bad(
        kick_off(client, "/fhir/Patient/$export", parameters("Patient/nobody"))
    )
    assert "not a Patient reference" in bad(
        kick_off(client, "/fhir/Patient/$export", parameters("Practitioner/x"))
    )
    response = kick_off(client, "/fhir/Group/g1/$export", parameters("Patient/p2"))
    assert "not an active member of Group/g1" in bad(response)
    assert "Group/none is not known" in bad(kick_off(client, "/fhir/Group/none/$export"), 404)


def test_a_post_body_must_be_parameters(client: FlaskClient) -> None:
    assert "Parameters" in bad(kick_off(client, "/fhir/$export", {"resourceType": "Patient"}))
    empty = {"resourceType": "Parameters", "parameter": [{"name": "_type"}]}
    # A parameter without a value breaks the Parameters invariant inv-1 before $export reads it.
    assert "inv-1" in bad(kick_off(client, "/fhir/$export", empty), 422)
    response = client.post(
        "/fhir/$export",
        data=b"{not json",
        headers={"Prefer": "respond-async", "Content-Type": "application/fhir+json"},
    )
    bad(response)
