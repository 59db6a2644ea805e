"""$process-message: discharge notifications from a hospital (R4 messaging, Da Vinci / NdE events)."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from tests.conftest import Fhir, system_token
from tests.support.messages import (
    IPP_SYSTEM,
    NOS_R254,
    VISIT_SYSTEM,
    as_sender,
    discharge_message,
    ins,
    patient,
)

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _post(client: FlaskClient, message: dict[str, Any]) -> Any:
    return as_sender(client).post("/fhir/$process-message", json=message, headers=FHIR_JSON)


def _response_header(body: dict[str, Any]) -> dict[str, Any]:
    assert body["resourceType"] == "Bundle" and body["type"] == "message"
    header: dict[str, Any] = body["entry"][0]["resource"]
    assert header["resourceType"] == "MessageHeader"
    return header


def test_discharge_creates_patient_encounter_and_letter(client: FlaskClient, fhir: Fhir) -> None:
    message = discharge_message(message_id="msg-1")
    response = _post(client, message)
    assert response.status_code == 200, response.get_json()
    header = _response_header(response.get_json())
    assert header["response"] == {**header["response"], "identifier": "msg-1", "code": "ok"}
    encounters = fhir.search(f"Encounter?identifier={VISIT_SYSTEM}|V2026-001")["entry"]
    assert len(encounters) == 1
    encounter = encounters[0]["resource"]
    assert encounter["status"] == "finished"
    assert encounter["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] == "home"
    patients = fhir.search(f"Patient?identifier={IPP_SYSTEM}|IPP0001")["entry"]
    assert encounter["subject"]["reference"] == f"Patient/{patients[0]['resource']['id']}"
    assert encounter["serviceProvider"]["reference"].startswith("Organization/")
    assert encounter["participant"][0]["individual"]["reference"].startswith("Practitioner/")
    letters = fhir.search("DocumentReference?type=http://loinc.org|11490-0")["entry"]
    url = letters[0]["resource"]["content"][0]["attachment"]["url"]
    assert url.startswith("Binary/")
    assert client.get(f"/fhir/{url}").status_code == 200
    assert header["focus"][0]["reference"].endswith(f"Encounter/{encounter['id']}")


def test_same_message_twice_writes_nothing_new(client: FlaskClient, fhir: Fhir) -> None:
    message = discharge_message(message_id="msg-dup")
    first = _post(client, message)
    second = _post(client, message)
    assert first.status_code == second.status_code == 200
    assert _response_header(second.get_json())["response"]["code"] == "ok"
    assert "already processed" in second.get_json()["entry"][1]["resource"]["issue"][0]["diagnostics"]
    assert len(fhir.search("Encounter")["entry"]) == 1
    assert len(fhir.search("Patient")["entry"]) == 1
    assert len(fhir.search("DocumentReference")["entry"]) == 1


def test_admission_then_discharge_updates_the_same_encounter(client: FlaskClient, fhir: Fhir) -> None:
    admit = discharge_message(message_id="a1", code=(NOS_R254, "ADM"), status="in-progress", letter=False)
    assert _post(client, admit).status_code == 200
    leave = discharge_message(message_id="s1", code=(NOS_R254, "SOR"))
    assert _post(client, leave).status_code == 200
    entries = fhir.search("Encounter")["entry"]
    assert len(entries) == 1
    encounter = entries[0]["resource"]
    assert encounter["status"] == "finished" and encounter["meta"]["versionId"] == "2"
    assert encounter["period"]["end"].startswith("2026-11-20")


def test_patient_matched_by_ins_only_when_validated(client: FlaskClient, fhir: Fhir) -> None:
    nir = ins()
    first = discharge_message(message_id="m1", patient_resource=patient(nir=nir, ipp="IPP-A"), visit="V1")
    assert _post(client, first).status_code == 200
    # Another hospital IPP, same validated INS: the same patient, who gains the second IPP.
    second = discharge_message(message_id="m2", patient_resource=patient(nir=nir, ipp="IPP-B"), visit="V2")
    assert _post(client, second).status_code == 200
    patients = fhir.search("Patient")["entry"]
    assert len(patients) == 1
    values = {i["value"] for i in patients[0]["resource"]["identifier"]}
    assert {"IPP-A", "IPP-B", nir} <= values
    # A provisional identity carrying an INS is refused (CONTRACT: INS only when VALI/QUAL).
    provisional = discharge_message(message_id="m3", patient_resource=patient("PROV", nir=nir, ipp="IPP-C"))
    response = _post(client, provisional)
    assert response.status_code in {400, 422}
    body = response.get_json()
    if body["resourceType"] == "Bundle":
        assert _response_header(body)["response"]["code"] == "fatal-error"


def test_without_ins_the_ipp_matches_and_names_never_merge(client: FlaskClient, fhir: Fhir) -> None:
    same_name = patient(status="PROV", ipp="IPP-X")
    assert (
        _post(client, discharge_message(message_id="n1", patient_resource=same_name, visit="V1")).status_code
        == 200
    )
    assert (
        _post(client, discharge_message(message_id="n2", patient_resource=same_name, visit="V2")).status_code
        == 200
    )
    other = patient(status="PROV", ipp="IPP-Y")  # same name and birth date, another IPP: another patient
    assert (
        _post(client, discharge_message(message_id="n3", patient_resource=other, visit="V3")).status_code
        == 200
    )
    assert len(fhir.search("Patient")["entry"]) == 2


def test_unknown_event_is_fatal_error_not_500(client: FlaskClient, fhir: Fhir) -> None:
    message = discharge_message(message_id="u1", code=("http://example.org/events", "lunch"))
    response = _post(client, message)
    assert response.status_code == 400
    header = _response_header(response.get_json())
    assert header["response"]["code"] == "fatal-error"
    assert (
        "Unsupported message event" in response.get_json()["entry"][1]["resource"]["issue"][0]["diagnostics"]
    )
    assert fhir.search("Encounter").get("entry") is None


def test_invalid_ins_is_never_stored(client: FlaskClient, fhir: Fhir) -> None:
    bad = ins()[:-2] + "00"
    response = _post(client, discharge_message(message_id="i1", patient_resource=patient(nir=bad)))
    assert response.status_code in {400, 422}
    assert fhir.search("Patient").get("entry") is None


def test_not_a_message_is_400_operation_outcome(client: FlaskClient) -> None:
    for body in [
        {"resourceType": "Patient"},
        {"resourceType": "Bundle", "type": "transaction", "entry": []},
        {"resourceType": "Bundle", "type": "message", "entry": [{"resource": {"resourceType": "Patient"}}]},
    ]:
        response = _post(client, body)
        assert response.status_code == 400, body
        assert response.get_json()["resourceType"] == "OperationOutcome"
    response = as_sender(client).post("/fhir/$process-message", data=b"{not json", headers=FHIR_JSON)
    assert response.status_code == 400
    assert (
        as_sender(client)
        .post("/fhir/$process-message?async=true", json=discharge_message(), headers=FHIR_JSON)
        .status_code
        == 400
    )


def test_message_without_encounter_is_fatal_error(client: FlaskClient) -> None:
    message = discharge_message(message_id="x1")
    message["entry"] = [e for e in message["entry"] if e["resource"]["resourceType"] != "Encounter"]
    message["entry"][0]["resource"].pop("focus")
    response = _post(client, message)
    assert response.status_code == 422
    assert _response_header(response.get_json())["response"]["code"] == "fatal-error"


def test_process_message_needs_write_scopes(client: FlaskClient) -> None:

    token = system_token(client, "system/*.rs")
    response = as_sender(client).post(
        "/fhir/$process-message",
        json=discharge_message(),
        headers={**FHIR_JSON, "Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 403
