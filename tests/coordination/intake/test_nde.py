"""NdE (ANS Notifications d'événements): a CommunicationRequest announcing a discharge."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.conftest import Fhir
from tests.support.messages import IPP_SYSTEM, NOS_R254, as_sender, nde

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def test_nde_discharge_is_stored_searchable_and_an_encounter_event(client: FlaskClient, fhir: Fhir) -> None:
    response = as_sender(client).post("/fhir/CommunicationRequest", json=nde(), headers=FHIR_JSON)
    assert response.status_code == 201, response.get_json()
    stored = response.get_json()
    patients = fhir.search(f"Patient?identifier={IPP_SYSTEM}|IPP0001")["entry"]
    assert stored["subject"]["reference"] == f"Patient/{patients[0]['resource']['id']}"
    encounter = fhir.search("Encounter")["entry"][0]["resource"]
    assert encounter["status"] == "finished" and encounter["period"]["end"].startswith("2026-11-20")
    assert stored["encounter"]["reference"] == f"Encounter/{encounter['id']}"
    found = fhir.search(f"CommunicationRequest?event-type={NOS_R254}|SOR")["entry"]
    assert [e["resource"]["id"] for e in found] == [stored["id"]]
    assert fhir.search("CommunicationRequest?event-type=ADM").get("entry") is None
    by_patient = fhir.search(f"CommunicationRequest?subject.identifier={IPP_SYSTEM}|IPP0001")["entry"]
    assert [e["resource"]["id"] for e in by_patient] == [stored["id"]]


def test_nde_resent_changes_nothing(client: FlaskClient, fhir: Fhir) -> None:
    first = as_sender(client).post(
        "/fhir/CommunicationRequest", json=nde(identifier="same"), headers=FHIR_JSON
    )
    second = as_sender(client).post(
        "/fhir/CommunicationRequest", json=nde(identifier="same"), headers=FHIR_JSON
    )
    assert first.status_code == 201 and second.status_code == 200
    assert second.get_json()["id"] == first.get_json()["id"]
    assert len(fhir.search("CommunicationRequest")["entry"]) == 1
    assert len(fhir.search("Encounter")["entry"]) == 1


def test_nde_errors_are_4xx_and_write_nothing(client: FlaskClient, fhir: Fhir) -> None:
    for body in [nde(code="XYZ"), nde(identifier=None), nde(status="PROV")]:
        response = as_sender(client).post("/fhir/CommunicationRequest", json=body, headers=FHIR_JSON)
        assert response.status_code in {400, 422}, response.get_json()
        assert response.get_json()["resourceType"] == "OperationOutcome"
    assert fhir.search("CommunicationRequest").get("entry") is None
    assert fhir.search("Patient").get("entry") is None


def test_plain_communication_request_is_untouched(client: FlaskClient) -> None:
    body = {"resourceType": "CommunicationRequest", "status": "active"}
    response = as_sender(client).post("/fhir/CommunicationRequest", json=body, headers=FHIR_JSON)
    assert response.status_code == 201
