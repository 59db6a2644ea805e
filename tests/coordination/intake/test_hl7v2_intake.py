"""HL7 v2 ADT into the store: POST /hl7v2 and the MLLP listener (`coordination mllp`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import hl7
import pytest
from flask.testing import FlaskClient

from connectors.hl7v2.mllp import send
from tests.conftest import Fhir, system_token
from tests.support.hl7v2 import adt
from tests.support.messages import HL7_SENDER, as_sender
from tests.support.net import free_port

ER7 = {"Content-Type": "x-application/hl7-v2+er7"}
BIN = Path(sys.executable).parent


def _msa(ack: bytes) -> list[str]:
    message = hl7.parse(ack.decode().replace("\n", "\r"))
    return [str(message.segment("MSA")[1]), str(message.segment("MSA")[2])]


def test_admit_then_discharge_over_http(client: FlaskClient, fhir: Fhir) -> None:
    admit = as_sender(client).post("/hl7v2", data=adt("A01", control_id="H1"), headers=ER7)
    assert admit.status_code == 200, admit.data
    assert _msa(admit.data) == ["AA", "H1"]
    leave = as_sender(client).post(
        "/hl7v2", data=adt("A03", control_id="H2", pv1={45: "20240320113000"}), headers=ER7
    )
    assert _msa(leave.data) == ["AA", "H2"]
    encounters = fhir.search("Encounter")["entry"]
    assert len(encounters) == 1 and encounters[0]["resource"]["status"] == "finished"
    again = as_sender(client).post(
        "/hl7v2", data=adt("A03", control_id="H2", pv1={45: "20240320113000"}), headers=ER7
    )
    assert _msa(again.data) == ["AA", "H2"]
    assert (
        encounters[0]["resource"]["meta"]["versionId"]
        == fhir.search("Encounter")["entry"][0]["resource"]["meta"]["versionId"]
    )
    assert len(fhir.search("Patient")["entry"]) == 1


def test_visit_number_without_authority_is_scoped_by_the_sender(client: FlaskClient, fhir: Fhir) -> None:
    bare = {19: "NDA-LOCAL-7"}
    admit = as_sender(client).post("/hl7v2", data=adt("A01", control_id="S1", pv1=bare), headers=ER7)
    assert _msa(admit.data) == ["AA", "S1"], admit.data
    leave = as_sender(client).post(
        "/hl7v2", data=adt("A03", control_id="S2", pv1={**bare, 45: "20240320113000"}), headers=ER7
    )
    assert _msa(leave.data) == ["AA", "S2"], leave.data
    encounters = fhir.search("Encounter")["entry"]
    assert len(encounters) == 1, "admission and discharge of one stay are one Encounter"
    identifier = encounters[0]["resource"]["identifier"][0]
    assert identifier["value"] == "NDA-LOCAL-7"
    assert identifier["system"].startswith("urn:coordination:visit-number:")


def test_bad_messages_get_ae_or_ar_and_store_nothing(client: FlaskClient, fhir: Fhir) -> None:
    ae = as_sender(client).post(
        "/hl7v2",
        data=adt(
            "A01",
            control_id="B1",
            pid={3: "284057505612388^^^ASIP-SANTE-INS-NIR-TEST&1.2.250.1.213.1.4.10&ISO^INS"},
        ),
        headers=ER7,
    )
    assert ae.status_code == 422 and _msa(ae.data)[0] == "AE"
    ar = as_sender(client).post("/hl7v2", data=adt("A99", control_id="B2"), headers=ER7)
    assert ar.status_code == 400 and _msa(ar.data)[0] == "AR"
    garbage = as_sender(client).post("/hl7v2", data=b"\x00\xffnot hl7 at all", headers=ER7)
    assert garbage.status_code == 400 and _msa(garbage.data)[0] == "AR"
    assert fhir.search("Patient").get("entry") is None


def test_hl7v2_needs_a_token_with_write_scopes(client: FlaskClient) -> None:
    anonymous = client.application.test_client()
    response = anonymous.post("/hl7v2", data=adt(), headers=ER7)
    assert response.status_code == 401
    reader = system_token(client, "system/*.rs")
    response = anonymous.post("/hl7v2", data=adt(), headers={**ER7, "Authorization": f"Bearer {reader}"})
    assert response.status_code == 403


@pytest.fixture
def mllp_listener(client: FlaskClient, database_url: str) -> Iterator[int]:
    port = free_port()
    env = {**os.environ, "COORDINATION_DATABASE_URL": database_url, "COORDINATION_MLLP_SENDERS": HL7_SENDER}
    process = subprocess.Popen(
        [str(BIN / "coordination"), "mllp", "--port", str(port), "--idle-timeout", "5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"mllp exited: {process.stderr.read() if process.stderr else b''!r}")
                time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.communicate(timeout=30)


def test_mllp_listener_stores_and_acknowledges(mllp_listener: int, fhir: Fhir) -> None:
    ack = send("127.0.0.1", mllp_listener, adt("A01", control_id="M1"), timeout=30)
    assert _msa(ack) == ["AA", "M1"]
    with socket.create_connection(("127.0.0.1", mllp_listener), timeout=10) as sock:
        sock.sendall(b"\x0bnot a message\x1c\x0d")  # a hostile frame: AR, and the listener lives on
        assert b"MSA|AR" in sock.recv(65536)
    ack = send(
        "127.0.0.1", mllp_listener, adt("A03", control_id="M2", pv1={45: "20240320113000"}), timeout=30
    )
    assert _msa(ack) == ["AA", "M2"]
    encounters = fhir.search("Encounter")["entry"]
    assert [e["resource"]["status"] for e in encounters] == ["finished"]
