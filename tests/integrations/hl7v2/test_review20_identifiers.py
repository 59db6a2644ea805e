"""Review 20: a sender-scoped HL7 v2 namespace (``urn:coordination:hl7v2:<sender>:<namespace>``) can be
claimed by another sender as a URI universal id (CX-4.2 with CX-4.3 = URI), which the mapping takes as
the system as it is (connectors/hl7v2/mapping.Authorities.system): hospital A's message then lands on
hospital B's patient (matched by B's IPP), adds A's identifiers to B's record and files A's stay there."""

from __future__ import annotations

from urllib.parse import quote

from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import authed
from tests.support.hl7v2 import adt
from tests.support.messages import as_sender, discharge_message, patient

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


def test_a_reserved_namespace_is_refused_with_ae_103_unless_it_is_the_senders_own(
    app: Flask, client: FlaskClient
) -> None:
    hospital_a = as_sender(client, A_SENDER)
    own = f"urn:coordination:hl7v2:{quote(A_SENDER, safe='')}:SIGEMS"
    answer = hospital_a.post(
        "/hl7v2", data=_message("SIH-PASTEL", "A1", f"77^^^&{own}&URI^PI", "NDA1"), headers=ER7
    )
    assert b"MSA|AA" in answer.data, answer.data
    for n, system in enumerate(
        (
            f"urn:coordination:hl7v2:{quote(B_SENDER, safe='')}:SIGEMS",
            f"URN:Coordination:hl7v2:{quote(B_SENDER, safe='')}:SIGEMS",
            "urn:coordination:client",
            f"urn:coordination:visit-number:{quote(B_SENDER, safe='')}",
        )
    ):
        answer = hospital_a.post(
            "/hl7v2",
            data=_message("SIH-PASTEL", f"A{n + 2}", f"78^^^&{system}&URI^PI", f"NDA{n + 2}"),
            headers=ER7,
        )
        assert b"MSA|AE" in answer.data and b"|103^" in answer.data, (system, answer.data)
    # The visit number (PV1-19) likewise.
    other_visit = f"urn:coordination:visit-number:{quote(B_SENDER, safe='')}"
    raw = adt("A01", control_id="A9", pid={3: "79^^^SIGEMS^PI"}, pv1={19: f"NDA9^^^&{other_visit}&URI^AN"})
    answer = hospital_a.post("/hl7v2", data=raw, headers=ER7)
    assert b"MSA|AE" in answer.data and b"PV1^1^19|103^" in answer.data, answer.data


def test_a_process_message_cannot_claim_an_hl7v2_senders_namespace(client: FlaskClient) -> None:
    """The same rule at every intake door (discharge.check_namespaces): a $process-message Bundle whose
    Patient carries another sender's scoped IPP system is refused, nothing stored."""

    as_sender(client)
    forged = patient(ipp="123")
    forged["identifier"][0]["system"] = f"urn:coordination:hl7v2:{quote(A_SENDER, safe='')}:SIGEMS"
    response = client.post(
        "/fhir/$process-message",
        json=discharge_message(patient_resource=forged),
        headers={"Content-Type": "application/fhir+json"},
    )
    assert 400 <= response.status_code < 500, response.get_json()
    assert "another sender" in str(response.get_json())
    assert client.get("/fhir/Patient?identifier=123").get_json()["total"] == 0
