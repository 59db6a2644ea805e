"""Kick-off at the three levels and its parameters, the status answers and the manifest (export.html)."""

from __future__ import annotations

import time

import orjson
from flask import Flask
from flask.testing import FlaskClient

from coordination_api.bulk import export
from coordination_api.search.dates import format_instant
from coordination_api.storage.repository import now_us
from tests.bulk.data import observation, put, record
from tests.bulk.support import drain, exported, kick_off, local, manifest, started
from tests.conftest import Fhir


def test_system_export_holds_every_resource_once(client: FlaskClient, fhir: Fhir, export_app: Flask) -> None:
    written = record(fhir, "p1") + record(fhir, "p2") + record(fhir, "p3")
    before = now_us()
    response = kick_off(client, "/fhir/$export")
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert response.headers["Content-Location"].startswith("http://localhost/fhir/$export-status/")
    body = manifest(client, export_app, local(response.headers["Content-Location"]))
    assert body["requiresAccessToken"] is True
    assert body["request"] == "http://localhost/fhir/$export"
    assert format_instant(before) <= body["transactionTime"] <= format_instant(now_us())
    assert body["error"] == [] and "deleted" not in body
    resources = exported(client, body)
    assert set(resources) == set(written)
    # Several files for a type beyond resources_per_file (5 here): 6 Observations -> 5 + 1.
    assert sorted(i["count"] for i in body["output"] if i["type"] == "Observation") == [1, 5]
    # The lines are the stored resources, meta included.
    assert resources["Patient/p1"]["meta"]["versionId"] == "1"
    assert resources["CarePlan/plan-p1"]["title"] == "Retour à domicile — suivi infirmier"


def test_patient_export_is_the_patient_compartments(
    client: FlaskClient, fhir: Fhir, export_app: Flask
) -> None:
    written = record(fhir, "p1") + record(fhir, "p2")
    body = manifest(client, export_app, started(client, "/fhir/Patient/$export"))
    assert set(exported(client, body)) == {r for r in written if not r.startswith("Practitioner/")}


def test_patient_export_of_listed_patients_by_post(
    client: FlaskClient, fhir: Fhir, export_app: Flask
) -> None:
    mine = record(fhir, "p1")
    record(fhir, "p2")
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "patient", "valueReference": {"reference": "Patient/p1"}},
            {"name": "_type", "valueString": "Patient,Observation"},
            {"name": "_outputFormat", "valueString": "application/ndjson"},
        ],
    }
    status = started(client, "/fhir/Patient/$export", parameters)
    body = manifest(client, export_app, status)
    assert body["request"] == "http://localhost/fhir/Patient/$export"  # a POST's parameters are not in it
    assert set(exported(client, body)) == {r for r in mine if r.split("/")[0] in {"Patient", "Observation"}}


def test_group_export_is_its_members_compartments(client: FlaskClient, fhir: Fhir, export_app: Flask) -> None:
    p1, p2 = record(fhir, "p1"), record(fhir, "p2")
    record(fhir, "p3")
    put(
        fhir,
        {
            "resourceType": "Group",
            "id": "g1",
            "type": "person",
            "actual": True,
            "member": [
                {"entity": {"reference": "Patient/p1"}},
                {"entity": {"reference": "http://localhost/fhir/Patient/p2"}},
                {"entity": {"reference": "Patient/p3"}, "inactive": True},
                {"entity": {"reference": "Practitioner/gp-p1"}},
            ],
        },
    )
    body = manifest(client, export_app, started(client, "/fhir/Group/g1/$export"))
    # The Group is in its members' compartments too (compartmentdefinition-patient: Group.member).
    members = {r for r in p1 + p2 if not r.startswith("Practitioner/")}
    assert set(exported(client, body)) == members | {"Group/g1"}
    # The non-Patient member is said in the error file (an information OperationOutcome).
    [notes] = body["error"]
    assert notes["type"] == "OperationOutcome"
    outcome = orjson.loads(client.get(local(notes["url"])).data)
    assert "not Patients" in outcome["issue"][0]["diagnostics"]


def test_type_limits_the_types(client: FlaskClient, fhir: Fhir, export_app: Flask) -> None:
    written = record(fhir, "p1")
    body = manifest(client, export_app, started(client, "/fhir/$export?_type=Patient,CarePlan"))
    assert set(exported(client, body)) == {r for r in written if r.split("/")[0] in {"Patient", "CarePlan"}}


def test_since_exports_what_changed_after_it_and_lists_deletions(
    client: FlaskClient, fhir: Fhir, export_app: Flask
) -> None:
    record(fhir, "p1")
    time.sleep(0.005)
    since = format_instant(now_us())
    time.sleep(0.005)
    put(fhir, observation("obs-p1-1", "Patient/p1", value=80.0))
    put(fhir, observation("obs-new", "Patient/p1"))
    assert fhir.request("DELETE", "/fhir/CarePlan/plan-p1").status_code in (200, 204)
    body = manifest(client, export_app, started(client, f"/fhir/$export?_since={since.replace('+', '%2B')}"))
    resources = exported(client, body)
    assert set(resources) == {"Observation/obs-p1-1", "Observation/obs-new"}
    assert resources["Observation/obs-p1-1"]["valueQuantity"]["value"] == 80.0
    # export.html "deleted": transaction Bundles of DELETE entries.
    [deleted] = body["deleted"]
    assert deleted["type"] == "Bundle"
    bundle = orjson.loads(client.get(local(deleted["url"])).data)
    assert bundle["type"] == "transaction"
    assert bundle["entry"] == [{"request": {"method": "DELETE", "url": "CarePlan/plan-p1"}}]


def test_type_filter_keeps_the_matching_resources(client: FlaskClient, fhir: Fhir, export_app: Flask) -> None:
    record(fhir, "p1")
    record(fhir, "p2")
    query = "_type=Observation,Patient&_typeFilter=Observation%3Fcode%3D8867-4%26subject%3DPatient/p2"
    body = manifest(client, export_app, started(client, f"/fhir/$export?{query}"))
    assert set(exported(client, body)) == {"Observation/obs-p2-1", "Patient/p1", "Patient/p2"}
    # Two filters of one type: either matches (comma-separated in one value, or repeated).
    query = "_typeFilter=Observation?code=29463-7,Patient?_id=p1&_typeFilter=Observation?subject=Patient/p1"
    body = manifest(client, export_app, started(client, f"/fhir/$export?_type=Observation,Patient&{query}"))
    assert set(exported(client, body)) == {
        "Observation/obs-p1-1",
        "Observation/obs-p1-2",
        "Observation/obs-p2-2",
        "Patient/p1",
    }


def test_the_export_is_the_database_at_transaction_time(
    client: FlaskClient, fhir: Fhir, export_app: Flask
) -> None:
    record(fhir, "p1")
    status = started(client, "/fhir/$export?_type=Observation,Patient")
    # Written after the kick-off, before any worker ran: not in the export.
    put(fhir, observation("obs-p1-1", "Patient/p1", value=99.0))
    put(fhir, observation("obs-late", "Patient/p1"))
    assert fhir.request("DELETE", "/fhir/Observation/obs-p1-2").status_code in (200, 204)
    resources = exported(client, manifest(client, export_app, status))
    assert set(resources) == {"Patient/p1", "Observation/obs-p1-1", "Observation/obs-p1-2"}
    assert resources["Observation/obs-p1-1"]["valueQuantity"]["value"] == 72.5
    assert resources["Observation/obs-p1-1"]["meta"]["versionId"] == "1"


def test_status_reports_progress_until_the_manifest(
    client: FlaskClient, fhir: Fhir, export_app: Flask, sliced_app: Flask
) -> None:
    record(fhir, "p1")
    status = started(client, "/fhir/$export")
    queued = client.get(status)
    assert queued.status_code == 202 and queued.headers["X-Progress"] == "queued"
    assert queued.headers["Retry-After"] == "2" and not queued.data

    assert export.run_due(sliced_app) == 1  # one page of 4 rows, then the job is released
    running = client.get(status)
    assert running.status_code == 202
    assert "4 resources written" in running.headers["X-Progress"]
    passes = drain(sliced_app)
    assert passes >= 2
    done = client.get(status)
    assert done.status_code == 200 and "Expires" in done.headers
    assert len(exported(client, orjson.loads(done.data))) == 8


def test_an_empty_export_has_no_files(client: FlaskClient, export_app: Flask) -> None:
    body = manifest(client, export_app, started(client, "/fhir/$export"))
    assert body["output"] == [] and body["error"] == []


def test_the_capability_statement_declares_the_export(client: FlaskClient) -> None:
    statement = client.get("/fhir/metadata").get_json()
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in statement["instantiates"]
    rest = statement["rest"][0]
    assert {
        "name": "export",
        "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
    } in rest["operation"]
    by_type = {r["type"]: r for r in rest["resource"]}
    for rtype, name in (("Patient", "patient-export"), ("Group", "group-export")):
        definitions = [o["definition"] for o in by_type[rtype]["operation"]]
        assert f"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/{name}" in definitions
