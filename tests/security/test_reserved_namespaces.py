"""The server's reserved identifier namespaces (``urn:coordination:``) at every write door.

Intake files a sender's messages on the patient and the stay that carry its identifiers
(``urn:coordination:hl7v2:<sender>:<namespace>``, ``urn:coordination:visit-number:<sender>``). A client
with write reach on patient X that adds hospital B's IPP to X would receive B's next ADT for that
patient: only B's intake may add them (coordination/namespaces.py). Keeping or removing one is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient

from coordination_api.cli import main
from tests.conftest import Fhir
from tests.support.hl7v2 import adt
from tests.support.messages import as_sender

ER7 = {"Content-Type": "x-application/hl7-v2+er7"}
SENDER = "SIH-PASTEL^CHU-NANTES"  # tests.support.hl7v2.adt's MSH-3^MSH-4
IPP_SYSTEM = f"urn:coordination:hl7v2:{quote(SENDER, safe='')}:SIGEMS"
VISIT_SYSTEM = f"urn:coordination:visit-number:{quote(SENDER, safe='')}"
JSON_PATCH = "application/json-patch+json"


def _admit(client: FlaskClient, control_id: str, ipp: str = "123", visit: str = "V1") -> None:
    raw = adt("A01", control_id=control_id, pid={3: f"{ipp}^^^SIGEMS^PI"}, pv1={19: visit})
    answer = client.post("/hl7v2", data=raw, headers=ER7)
    assert b"MSA|AA" in answer.data, answer.data


def _hospital_patient(fhir: Fhir, ipp: str = "123") -> dict[str, Any]:
    bundle = fhir.search(f"Patient?identifier={quote(IPP_SYSTEM, safe='')}|{ipp}")
    assert bundle["total"] == 1, bundle
    resource: dict[str, Any] = bundle["entry"][0]["resource"]
    return resource


def _refused(response: Any, element: str = "Patient.identifier[1].system") -> None:
    assert response.status_code == 422, (response.status_code, response.get_data(as_text=True)[:500])
    issue = response.get_json()["issue"][0]
    assert issue["expression"] == [element], issue
    assert "reserved for the messages of sender" in issue["diagnostics"], issue
    assert SENDER in issue["diagnostics"], issue


def _victim(fhir: Fhir) -> dict[str, Any]:
    return fhir.create(
        {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:oid:1.2.3.4", "value": "X1"}],
            "name": [{"family": "Victime"}],
        }
    )


def _with_hospital_ipp(patient: dict[str, Any], ipp: str = "123") -> dict[str, Any]:
    body = {k: v for k, v in patient.items() if k != "meta"}
    body["identifier"] = [*patient["identifier"], {"system": IPP_SYSTEM, "value": ipp}]
    return body


@pytest.fixture
def hospital(client: FlaskClient) -> Fhir:
    """The hospital has admitted patient IPP 123 (its own namespace, through its intake)."""
    _admit(as_sender(client, SENDER), "M1")
    return Fhir(client)


def test_post_with_a_senders_namespace_is_refused(hospital: Fhir) -> None:
    body = _with_hospital_ipp({"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "1"}]})
    _refused(hospital.request("POST", "/fhir/Patient", body))
    # Any case of the reserved prefix, and an Encounter in the sender's visit numbers.
    body["identifier"][1]["system"] = IPP_SYSTEM.replace("urn:coordination:", "URN:Coordination:")
    _refused(hospital.request("POST", "/fhir/Patient", body))
    patient = _hospital_patient(hospital)
    stay = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "identifier": [{"system": VISIT_SYSTEM, "value": "V2"}],
        "subject": {"reference": f"Patient/{patient['id']}"},
    }
    _refused(hospital.request("POST", "/fhir/Encounter", stay), "Encounter.identifier[0].system")
    assert hospital.search("Patient?identifier=urn:x|1")["total"] == 0


def test_put_and_conditional_put_cannot_add_a_senders_namespace(hospital: Fhir) -> None:
    victim = _victim(hospital)
    body = _with_hospital_ipp(victim)
    _refused(hospital.request("PUT", f"/fhir/Patient/{victim['id']}", body))
    _refused(hospital.request("PUT", "/fhir/Patient?identifier=urn:oid:1.2.3.4|X1", body))
    # Update-as-create with a client id, and a conditional update that creates: nothing to keep.
    _refused(hospital.request("PUT", "/fhir/Patient/fresh", {**body, "id": "fresh"}))
    unknown = {k: v for k, v in body.items() if k != "id"}
    _refused(hospital.request("PUT", "/fhir/Patient?identifier=urn:oid:1.2.3.4|none", unknown))
    assert hospital.request("GET", f"/fhir/Patient/{victim['id']}").get_json()["meta"]["versionId"] == "1"


def test_patch_cannot_add_a_senders_namespace(hospital: Fhir) -> None:
    victim = _victim(hospital)
    patch = [{"op": "add", "path": "/identifier/-", "value": {"system": IPP_SYSTEM, "value": "123"}}]
    response = hospital.request(
        "PATCH", f"/fhir/Patient/{victim['id']}", orjson.dumps(patch), **{"Content-Type": JSON_PATCH}
    )
    _refused(response)


def test_transaction_and_batch_entries_cannot_add_a_senders_namespace(hospital: Fhir) -> None:
    victim = _victim(hospital)
    body = _with_hospital_ipp(victim)
    entries = [
        {"resource": body, "request": {"method": "PUT", "url": f"Patient/{victim['id']}"}},
        {
            "fullUrl": "urn:uuid:7d1c52a4-4c1f-4b0e-9d0c-5b2f3c1e0a11",
            "resource": _with_hospital_ipp(
                {"resourceType": "Patient", "identifier": [{"system": "u:a", "value": "2"}]}
            ),
            "request": {"method": "POST", "url": "Patient"},
        },
    ]
    for entry in entries:
        transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
        response = hospital.request("POST", "/fhir", transaction)
        assert response.status_code == 422, response.get_json()
        assert "reserved for the messages of sender" in str(response.get_json())
    batch = {"resourceType": "Bundle", "type": "batch", "entry": entries}
    response = hospital.request("POST", "/fhir", batch)
    assert response.status_code == 200, response.get_json()
    for entry in response.get_json()["entry"]:
        assert entry["response"]["status"].startswith("422"), entry
        assert "reserved for the messages of sender" in str(entry["response"]["outcome"]), entry
    assert hospital.request("GET", f"/fhir/Patient/{victim['id']}").get_json()["meta"]["versionId"] == "1"
    assert hospital.search("Patient?identifier=u:a|2")["total"] == 0


def test_keeping_and_removing_are_allowed_adding_back_is_not(hospital: Fhir) -> None:
    patient = _hospital_patient(hospital)
    renamed = {k: v for k, v in patient.items() if k != "meta"}
    renamed["name"] = [{"family": "Renamed"}]
    assert hospital.request("PUT", f"/fhir/Patient/{patient['id']}", renamed).status_code == 200
    patch = [{"op": "replace", "path": "/gender", "value": "female"}]
    response = hospital.request(
        "PATCH", f"/fhir/Patient/{patient['id']}", orjson.dumps(patch), **{"Content-Type": JSON_PATCH}
    )
    assert response.status_code == 200, response.get_json()
    removed = {k: v for k, v in renamed.items() if k != "identifier"}
    others = [i for i in patient["identifier"] if i["system"] != IPP_SYSTEM]
    if others:
        removed["identifier"] = others
    assert hospital.request("PUT", f"/fhir/Patient/{patient['id']}", removed).status_code == 200
    response = hospital.request("PUT", f"/fhir/Patient/{patient['id']}", renamed)
    assert response.status_code == 422, response.get_json()


def test_the_senders_intake_still_adds_and_finds_its_own(hospital: Fhir) -> None:
    """The hospital's next message for IPP 123 reaches the patient its intake created, and a new IPP
    creates a new patient: the intake writes its own namespace (and the stay its visit number)."""
    first = _hospital_patient(hospital)
    victim = _victim(hospital)
    _refused(hospital.request("PUT", f"/fhir/Patient/{victim['id']}", _with_hospital_ipp(victim)))
    _admit(hospital.client, "M2", visit="V2")
    assert _hospital_patient(hospital)["id"] == first["id"]
    stays = hospital.search(f"Encounter?subject=Patient/{first['id']}")
    assert stays["total"] == 2
    _admit(hospital.client, "M3", ipp="456", visit="V3")
    assert _hospital_patient(hospital, "456")["id"] not in {first["id"], victim["id"]}


def test_other_reserved_namespaces_are_the_servers_own(hospital: Fhir) -> None:
    """``urn:coordination:annuaire-sante:`` keys the directory sync's roles: no REST write adds it."""
    role = {
        "resourceType": "PractitionerRole",
        "identifier": [{"system": "urn:coordination:annuaire-sante:PractitionerRole", "value": "r1"}],
    }
    response = hospital.request("POST", "/fhir/PractitionerRole", role)
    assert response.status_code == 422, response.get_json()
    issue = response.get_json()["issue"][0]
    assert issue["expression"] == ["PractitionerRole.identifier[0].system"]
    assert "server's own use" in issue["diagnostics"]


def test_the_operators_import_may_carry_reserved_identifiers(
    app: Flask, hospital: Fhir, tmp_path: Path
) -> None:
    """``coordination import`` is the operator's own (no client credentials): an export of intake's
    patients imports back with their identifiers."""
    exported = {
        "resourceType": "Patient",
        "id": "imported",
        "identifier": [{"system": IPP_SYSTEM, "value": "789"}],
    }
    path = tmp_path / "patients.ndjson"
    path.write_bytes(orjson.dumps(exported) + b"\n")
    result = app.test_cli_runner().invoke(main, args=["import", str(path)])
    assert result.exit_code == 0, result.output
    assert _hospital_patient(hospital, "789")["id"] == "imported"
