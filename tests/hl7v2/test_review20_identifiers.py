"""Review 20: a sender-scoped HL7 v2 namespace (``urn:coordination:hl7v2:<sender>:<namespace>``) can be
claimed by another sender as a URI universal id (CX-4.2 with CX-4.3 = URI), which the mapping takes as
the system as it is (connectors/hl7v2/mapping.Authorities.system): hospital A's message then lands on
hospital B's patient (matched by B's IPP), adds A's identifiers to B's record and files A's stay there."""

from __future__ import annotations

from urllib.parse import quote

from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import authed
from tests.coordination.messages import as_sender
from tests.hl7v2.test_parse_mapping import adt

ER7 = {"Content-Type": "x-application/hl7-v2+er7"}
B_APP = "OTHER-APP"
B_SENDER = f"{B_APP}^CHU-NANTES"
A_SENDER = "SIH-PASTEL^CHU-NANTES"


def _message(app_name: str, control_id: str, pid3: str, nda: str) -> bytes:
    raw = adt("A01", control_id=control_id, pid={3: pid3, 18: f"{nda}^^^NS^AN"}, pv1={19: f"{nda}^^^NS^AN"})
    return raw.replace(b"SIH-PASTEL", app_name.encode())


def test_a_sender_cannot_claim_another_senders_scoped_namespace(app: Flask, client: FlaskClient) -> None:
    hospital_b = as_sender(authed(app.test_client()), B_SENDER)
    hospital_a = as_sender(client, A_SENDER)
    answer = hospital_b.post("/hl7v2", data=_message(B_APP, "B1", "123^^^SIGEMS^PI", "NDAB1"), headers=ER7)
    assert b"MSA|AA" in answer.data, answer.data
    b_system = f"urn:coordination:hl7v2:{quote(B_SENDER, safe='')}:SIGEMS"
    before = client.get(f"/fhir/Patient?identifier={quote(b_system, safe='')}|123").get_json()
    assert before["total"] == 1
    b_patient = before["entry"][0]["resource"]["id"]
    forged = f"123^^^&{b_system}&URI^PI~999^^^AHOSP^PI"
    answer = hospital_a.post("/hl7v2", data=_message("SIH-PASTEL", "A1", forged, "NDAA1"), headers=ER7)
    record = client.get(f"/fhir/Patient/{b_patient}").get_json()
    systems = {i.get("system") for i in record.get("identifier", [])}
    stays = client.get(f"/fhir/Encounter?subject=Patient/{b_patient}").get_json()["total"]
    assert not any("SIH-PASTEL" in (s or "") for s in systems) and stays == 1, (
        f"hospital A's message was filed on hospital B's patient: {sorted(systems)}, {stays} stays"
    )
