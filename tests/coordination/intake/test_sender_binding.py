"""Senders are bound to credentials (issue 16, finding 4): a client sends only as the senders registered
to it, and the de-duplication key is (authenticated client, sender, message id)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hl7
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text

from coordination_api.app import create_app
from coordination_api.cli import main
from coordination_api.config import Settings
from coordination_api.storage.migrate import upgrade
from coordination_api.storage.schema import message_log
from tests.conftest import Fhir, close_app
from tests.support.hl7v2 import adt
from tests.support.messages import HL7_SENDER, SENDER, discharge_message, nde, patient

FHIR_JSON = {"Content-Type": "application/fhir+json"}
ER7 = {"Content-Type": "x-application/hl7-v2+er7"}
SCOPE = "system/*.cruds"


def _client(app: Flask, *senders: str) -> FlaskClient:
    """A new backend client registered with these senders, carrying its own token."""
    store = app.extensions["auth"].store
    client_id, secret = store.create_client("sender-test", SCOPE, "client_secret_basic", [], None, None)
    store.add_senders(client_id, list(senders))
    test_client = app.test_client()
    token = test_client.post(
        "/auth/token", data={"grant_type": "client_credentials", "scope": SCOPE}, auth=(client_id, secret)
    ).get_json()["access_token"]
    test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return test_client


def _code(response: Any) -> str:
    code: str = response.get_json()["entry"][0]["resource"]["response"]["code"]
    return code


def _log_rows(app: Flask) -> list[tuple[str, str, str]]:
    with app.extensions["coordination"].repo.engine.connect() as conn:
        rows = conn.execute(select(message_log.c.client, message_log.c.sender, message_log.c.message_id))
        return sorted((r[0], r[1], r[2]) for r in rows)


def _msa(ack: bytes) -> tuple[str, str]:
    message = hl7.parse(ack.decode())
    return str(message.segment("MSA")[1]), str(message.segment("MSA")[3])


def test_unregistered_sender_gets_403_and_cannot_swallow_the_real_message(
    client: FlaskClient, fhir: Fhir
) -> None:
    app = client.application
    intruder = _client(app, "https://elsewhere.example/fhir")  # may send only as another sender
    attempt = intruder.post(
        "/fhir/$process-message", json=discharge_message(message_id="M-1"), headers=FHIR_JSON
    )
    assert attempt.status_code == 403
    outcome = attempt.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "forbidden"
    assert "not registered to this client" in outcome["issue"][0]["diagnostics"]
    assert SENDER in outcome["issue"][0]["diagnostics"]
    assert _log_rows(app) == []
    hospital = _client(app, SENDER)
    real = hospital.post(
        "/fhir/$process-message", json=discharge_message(message_id="M-1"), headers=FHIR_JSON
    )
    assert real.status_code == 200 and _code(real) == "ok"
    assert "already processed" not in json.dumps(real.get_json())
    assert len(fhir.search("Encounter")["entry"]) == 1


def test_a_client_registered_with_no_sender_may_send_as_any_and_swallows_nothing(
    client: FlaskClient, fhir: Fhir
) -> None:
    """CONTRACT.md: a client registered with none may send as any sender; its message ids are its own."""
    app = client.application
    trusted = _client(app)
    sent = trusted.post("/fhir/$process-message", json=discharge_message(message_id="N-1"), headers=FHIR_JSON)
    assert sent.status_code == 200 and _code(sent) == "ok"
    hospital = _client(app, SENDER)
    real = hospital.post(
        "/fhir/$process-message", json=discharge_message(message_id="N-1"), headers=FHIR_JSON
    )
    assert _code(real) == "ok" and "already processed" not in json.dumps(real.get_json())
    assert len({r[0] for r in _log_rows(app)}) == 2


def test_dedup_key_is_client_sender_and_message_id(client: FlaskClient, fhir: Fhir) -> None:
    """Two clients both allowed to send as one sender (e.g. two interfaces of a hospital): the first
    one's message id never makes the other's message a replay."""
    app = client.application
    first, second = _client(app, SENDER), _client(app, SENDER)
    message = discharge_message(message_id="SAME-ID")
    one = first.post("/fhir/$process-message", json=message, headers=FHIR_JSON)
    assert _code(one) == "ok" and "already processed" not in json.dumps(one.get_json())
    two = second.post("/fhir/$process-message", json=message, headers=FHIR_JSON)
    assert _code(two) == "ok" and "already processed" not in json.dumps(two.get_json())
    again = second.post("/fhir/$process-message", json=message, headers=FHIR_JSON)
    assert "already processed" in json.dumps(again.get_json())  # the same client's replay
    rows = _log_rows(app)
    assert len(rows) == 2 and {r[1:] for r in rows} == {(SENDER, "SAME-ID")}
    assert len({r[0] for r in rows}) == 2


def test_a_client_sends_only_as_its_own_senders(client: FlaskClient) -> None:
    app = client.application
    other_hospital = _client(app, "https://other-hospital.example/fhir")
    response = other_hospital.post(
        "/fhir/$process-message", json=discharge_message(message_id="X-1"), headers=FHIR_JSON
    )
    assert response.status_code == 403
    assert response.get_json()["issue"][0]["expression"] == ["MessageHeader.source.endpoint"]


def test_hl7v2_over_http_unregistered_sender_gets_ar_403(client: FlaskClient, fhir: Fhir) -> None:
    app = client.application
    intruder = _client(app, "OTHER-APP^OTHER-FACILITY")
    response = intruder.post("/hl7v2", data=adt("A01", control_id="H-1"), headers=ER7)
    assert response.status_code == 403
    code, text = _msa(response.data)
    assert code == "AR" and "not registered to this client" in text
    assert "SIH-PASTEL\\S\\CHU-NANTES" in text  # MSH-3^MSH-4, the ^ escaped in MSA-3
    assert b"SENDER-NOT-ALLOWED" in response.data  # ERR-5
    assert fhir.search("Patient").get("entry") is None
    hospital = _client(app, HL7_SENDER)
    accepted = hospital.post("/hl7v2", data=adt("A01", control_id="H-1"), headers=ER7)
    assert accepted.status_code == 200 and b"MSA|AA|H-1" in accepted.data


def test_nde_unregistered_sender_gets_403(client: FlaskClient, fhir: Fhir) -> None:
    app = client.application
    intruder = _client(app, "999999999")  # registered for another FINESS only
    response = intruder.post("/fhir/CommunicationRequest", json=nde(identifier="n-1"), headers=FHIR_JSON)
    assert response.status_code == 403, response.get_json()
    assert "750100125" in response.get_json()["issue"][0]["diagnostics"]
    assert fhir.search("CommunicationRequest").get("entry") is None
    by_finess = _client(app, "750100125")  # the bare FINESS of the NdE sender (or "nde:750100125")
    stored = by_finess.post("/fhir/CommunicationRequest", json=nde(identifier="n-1"), headers=FHIR_JSON)
    assert stored.status_code == 201, stored.get_json()


def test_clients_create_registers_senders(app: Flask, client: FlaskClient) -> None:
    result = app.test_cli_runner().invoke(
        main,
        args=[
            *("clients", "create", "--name", "CHU Nord", "--scope", SCOPE, "--json"),
            *("--sender", SENDER, "--sender", HL7_SENDER),
        ],
    )
    assert result.exit_code == 0, result.output
    credentials = json.loads(result.output)
    test_client = app.test_client()
    token = test_client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": SCOPE},
        auth=(credentials["client_id"], credentials["client_secret"]),
    ).get_json()["access_token"]
    test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    ok = test_client.post(
        "/fhir/$process-message", json=discharge_message(message_id="C-1"), headers=FHIR_JSON
    )
    assert ok.status_code == 200 and _code(ok) == "ok"
    assert test_client.post("/hl7v2", data=adt("A01", control_id="C-2"), headers=ER7).status_code == 200
    bad = app.test_cli_runner().invoke(
        main, args=["clients", "create", "--name", "x", "--scope", SCOPE, "--sender", "bad\x1bsender"]
    )
    assert bad.exit_code != 0 and "invalid sender" in bad.output


def test_security_disabled_development_mode_accepts_any_sender(
    database_url: str, client: FlaskClient
) -> None:
    dev = create_app(Settings(database_url=database_url, security_disabled=True))
    try:
        response = dev.test_client().post(
            "/fhir/$process-message", json=discharge_message(message_id="D-1"), headers=FHIR_JSON
        )
        assert response.status_code == 200 and _code(response) == "ok"
        assert _log_rows(dev) == [("-", SENDER, "D-1")]
    finally:
        close_app(dev)


def test_migration_0012_keeps_earlier_message_log_rows_under_no_client(tmp_path: Path) -> None:
    old = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'old.db'}", security_disabled=True))
    engine = old.extensions["coordination"].repo.engine
    try:
        upgrade(engine, "0010")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO message_log (sender, message_id, kind, received_us, outcome) "
                    "VALUES ('S', 'M', 'discharge', 1, '{}')"
                )
            )
        upgrade(engine)
        assert _log_rows(old) == [("", "S", "M")]
    finally:
        engine.dispose()


def test_another_senders_nde_with_the_same_identifier_does_not_swallow_it(
    client: FlaskClient, fhir: Fhir
) -> None:
    app = client.application
    other = nde(identifier="shared-id", ipp="IPP-OTHER")
    other["contained"][1]["identifier"][0]["value"] = "440000289"  # another hospital's FINESS
    first = _client(app, "440000289").post("/fhir/CommunicationRequest", json=other, headers=FHIR_JSON)
    assert first.status_code == 201, first.get_json()
    hospital = _client(app, "750100125")
    real = hospital.post("/fhir/CommunicationRequest", json=nde(identifier="shared-id"), headers=FHIR_JSON)
    assert real.status_code == 201, real.get_json()  # created, not the other sender's "resend"
    assert real.get_json()["id"] != first.get_json()["id"]
    assert real.get_json()["sender"]["reference"].startswith("Organization/")
    again = hospital.post("/fhir/CommunicationRequest", json=nde(identifier="shared-id"), headers=FHIR_JSON)
    assert again.status_code == 200 and again.get_json()["id"] == real.get_json()["id"]
    assert len(fhir.search("Encounter")["entry"]) == 2


def test_control_characters_in_a_message_are_refused_never_stored(client: FlaskClient, fhir: Fhir) -> None:
    hospital = _client(client.application, SENDER)
    message = discharge_message(message_id="CTL-1")
    message["entry"][2]["resource"]["name"][0]["family"] = "Lef\x1b[31mèvre"
    response = hospital.post("/fhir/$process-message", json=message, headers=FHIR_JSON)
    # The R4 string rule refuses it when the message is read (400), before any intake step.
    assert response.status_code == 400, response.get_json()
    text = json.dumps(response.get_json())
    assert "U+001B" in text and "Bundle.entry[2].resource.name[0].family" in text
    nul = discharge_message(message_id="CTL-2")
    nul["entry"][0]["resource"]["source"]["endpoint"] = SENDER + "\x00"
    response = hospital.post("/fhir/$process-message", json=nul, headers=FHIR_JSON)
    assert response.status_code == 400 and "U+0000" in json.dumps(response.get_json())  # never a 500
    assert fhir.search("Patient").get("entry") is None


def test_a_client_cannot_rewrite_another_senders_stay_by_its_visit_number(
    client: FlaskClient, fhir: Fhir
) -> None:
    """Second review of issue 16 (H7): the stay belongs to the sender that opened it."""

    other_sender = "mllp://clinique-sud.example/ADT"
    nord = _client(client.application, SENDER)
    first = nord.post("/fhir/$process-message", json=discharge_message(message_id="N-1"), headers=FHIR_JSON)
    assert first.status_code == 200 and _code(first) == "ok"
    [entry] = fhir.search("Encounter")["entry"]
    stay, nord_patient = entry["resource"]["id"], entry["resource"]["subject"]["reference"]

    sud = _client(client.application, other_sender)
    stranger = patient(nir=None, ipp="SUD-42")
    stranger["identifier"] = [{"system": "urn:oid:1.2.250.1.71.4.2.7.130000000", "value": "SUD-42"}]
    stranger["name"] = [{"family": "Autre", "given": ["Patient"]}]
    forged = discharge_message(message_id="S-1", patient_resource=stranger, letter=False)
    forged["entry"][0]["resource"]["source"]["endpoint"] = other_sender
    response = sud.post("/fhir/$process-message", json=forged, headers=FHIR_JSON)
    assert response.status_code == 403, response.get_json()
    after = fhir.client.get(f"/fhir/Encounter/{stay}").get_json()
    assert after["subject"]["reference"] == nord_patient
    assert after["meta"]["versionId"] == entry["resource"]["meta"]["versionId"]
