"""HL7 v2 ADT identifiers as hospitals send them (issue 18): PID-3 local identifier types (PI, MR, PN,
AN; COORDINATION_HL7V2_LOCAL_ID_TYPES), assigning authorities mapped to URIs
(COORDINATION_HL7V2_AUTHORITIES, else ``urn:coordination:hl7v2:<sender>:<namespace>``), no non-URI
``Identifier.system``, table 0357 codes, PID-32 outside table 0445 as a warning, idempotent re-import,
and AR 207 when the database is down (HL7 v2.5 2.9.2.2). Samples in the IHE PAM FR style."""

from __future__ import annotations

import re
import socket
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import hl7
import pytest
from flask.testing import FlaskClient

from connectors.events import EncounterEvent, EventError
from connectors.hl7v2 import Options, handle
from connectors.hl7v2.ack import ERROR_TEXT
from connectors.hl7v2.mapping import to_event
from connectors.hl7v2.mllp import read_frame
from connectors.hl7v2.parse import parse
from coordination_api.app import create_app
from coordination_api.config import DatabaseTimeouts, Hl7v2Settings, Settings
from coordination_api.integrations.hl7v2 import mllp_server
from coordination_api.storage.migrate import upgrade
from fhir_profiles.french_identifiers import INS_NIR, RPPS
from tests.conftest import Fhir, authed, close_app
from tests.support.db_faults import timeouts_app, write_lock_held
from tests.support.hl7v2 import adt
from tests.support.messages import HL7_SENDER, as_sender

ER7 = {"Content-Type": "x-application/hl7-v2+er7"}
NIR_OK = "180057505612342"
# PID-3 as an IHE PAM FR sender emits it: IPP under a bare namespace, the hospital's record number
# under an OID, the INS-NIR.
PAM_PID3 = (
    "123^^^SIGEMS^PI"
    "~456^^^HOSP&1.2.250.1.71.4.2.2&ISO^MR"
    f"~{NIR_OK}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"
)
SIGEMS_URN = "urn:coordination:hl7v2:SIH-PASTEL%5ECHU-NANTES:SIGEMS"
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")


def pam(trigger: str, control_id: str, **pv1: str) -> bytes:
    fields = {19: "NDA77^^^SIGEMS^AN", **{int(k[1:]): v for k, v in pv1.items()}}
    return adt(trigger, control_id=control_id, pid={3: PAM_PID3, 32: "VALI"}, pv1=fields)


def event_of(raw: bytes, options: Options | None = None) -> EncounterEvent:
    return to_event(parse(raw), options)


def error_of(raw: bytes, options: Options | None = None) -> EventError:
    with pytest.raises(EventError) as info:
        event_of(raw, options)
    return info.value


def systems(value: Any) -> list[str]:
    """Every ``system`` string anywhere in a resource (Identifier and Coding alike; ContactPoint.system is
    a code, not a URI)."""
    if isinstance(value, dict):
        found = [value["system"]] if isinstance(value.get("system"), str) else []
        return found + [s for k, v in value.items() if k != "telecom" for s in systems(v)]
    if isinstance(value, list):
        return [s for v in value for s in systems(v)]
    return []


def read(answer: bytes) -> Any:
    return hl7.parse(answer.decode("utf-8"))


# -- Mapping -------------------------------------------------------------------------------------------


def test_pam_fr_pid3_repetitions() -> None:
    event = event_of(pam("A01", "P1"))
    ids = {(i["system"], i["value"]): i for i in event.patient["identifier"]}
    assert set(ids) == {(SIGEMS_URN, "123"), ("urn:oid:1.2.250.1.71.4.2.2", "456"), (INS_NIR, NIR_OK)}
    assert ids[(SIGEMS_URN, "123")]["type"]["coding"][0]["code"] == "PI"
    assert ids[("urn:oid:1.2.250.1.71.4.2.2", "456")]["type"]["coding"][0]["code"] == "MR"
    assert event.encounter is not None
    assert event.encounter["identifier"][0] == {"system": SIGEMS_URN, "value": "NDA77"}
    assert event.warnings == []


@pytest.mark.parametrize("type_code", ["PI", "MR", "PN", "AN", "mr"])
def test_each_local_type_is_the_senders_identifier(type_code: str) -> None:
    event = event_of(adt(pid={3: f"4711^^^HOSP&1.2.250.1.71.4.2.2&ISO^{type_code}", 32: "PROV"}))
    [identifier] = event.patient["identifier"]
    assert identifier["system"] == "urn:oid:1.2.250.1.71.4.2.2"
    assert identifier["type"]["coding"][0]["code"] == type_code.upper()


def test_the_local_types_are_configurable() -> None:
    only_mr = Options(local_id_types=("MR",))
    error = error_of(adt(pid={3: "4711^^^HOSP&1.2.3&ISO^PI", 32: "PROV"}), only_mr)
    assert (error.code, error.location) == ("103", "PID-3")
    assert "MR" in str(error)
    assert event_of(adt(pid={3: "4711^^^HOSP&1.2.3&ISO^MR", 32: "PROV"}), only_mr).patient["identifier"]


@pytest.mark.parametrize(
    ("cx", "system"),
    [
        ("1^^^HOSP&1.2.250.1.71.4.2.2&ISO^PI", "urn:oid:1.2.250.1.71.4.2.2"),
        ("1^^^&1.2.250.1.71.4.2.2&ISO^PI", "urn:oid:1.2.250.1.71.4.2.2"),
        ("1^^^1.2.250.1.71.4.2.2^PI", "urn:oid:1.2.250.1.71.4.2.2"),
        (
            "1^^^X&6F9619FF-8B86-D011-B42D-00C04FC964FF&UUID^PI",
            "urn:uuid:6f9619ff-8b86-d011-b42d-00c04fc964ff",
        ),
        ("1^^^X&https://hopital.example/ipp&URI^PI", "https://hopital.example/ipp"),
        ("1^^^SIGEMS^PI", SIGEMS_URN),
        ("1^^^SIGEMS&not-an-oid&ISO^PI", SIGEMS_URN),
        ("1^^^MAPPED^PI", "urn:oid:1.2.3.4"),
        ("1^^^MAPPED&1.9.9&ISO^PI", "urn:oid:1.9.9"),  # the universal id wins over the map
        ("1^^^ZZ/ÉÀ é^PI", "urn:coordination:hl7v2:SIH-PASTEL%5ECHU-NANTES:ZZ%2F%C3%89%C3%80%20%C3%A9"),
    ],
)
def test_assigning_authority_to_uri(cx: str, system: str) -> None:
    options = Options(authorities=(("MAPPED", "urn:oid:1.2.3.4"),))
    event = event_of(adt(pid={3: cx, 32: "PROV"}), options)
    assert event.patient["identifier"][0]["system"] == system


@pytest.mark.parametrize(
    "pv1_19", ["NDA1^^^SIGEMS^AN", "NDA1^^^CHU&1.2.250.1.999.1.2&ISO^AN", "NDA1^^^MAPPED^VN"]
)
def test_every_system_is_a_uri(pv1_19: str) -> None:
    options = Options(authorities=(("MAPPED", "https://chu.example/nda"),))
    raw = adt(
        pid={3: PAM_PID3 + "~9^^^OTHER^PN", 32: "QUAL"},
        pv1={19: pv1_19, 7: "10003456789^MARTIN^Paul^^^Dr^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS"},
    )
    event = event_of(raw, options)
    resources = [event.patient, event.encounter, event.service_provider, *event.practitioners]
    found = systems(resources)
    assert found and all(_URI.fullmatch(s) for s in found), found
    assert {"system": RPPS, "value": "10003456789"} in event.practitioners[0]["identifier"]


def test_a_visit_number_without_authority_keeps_no_system_for_the_intake_to_scope() -> None:
    event = event_of(adt(pv1={19: "NDA-LOCAL"}))
    assert event.encounter is not None
    assert event.encounter["identifier"][0] == {"value": "NDA-LOCAL"}  # discharge.visit_system scopes it


# -- Table 0357 codes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pid", "code", "location"),
    [
        ({3: ""}, "101", "PID-3"),  # really missing
        ({3: "123^^^^PI", 32: "PROV"}, "101", "PID-3"),  # assigning authority missing
        ({3: "123^^^SIGEMS", 32: "PROV"}, "101", "PID-3"),  # identifier type missing
        ({3: "^^^SIGEMS^PI", 32: "PROV"}, "101", "PID-3"),  # value missing
        ({3: f"{NIR_OK}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS", 32: "PROV"}, "101", "PID-3"),
        ({3: "123^^^SIGEMS^XX"}, "103", "PID-3"),  # type not in table 0203 as configured
        ({3: f"{NIR_OK}^^^SOMEONE^INS"}, "103", "PID-3"),  # INS under an unknown authority
        ({3: "12345^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"}, "102", "PID-3"),  # bad INS
        ({8: "Z"}, "103", "PID-8"),
        ({7: "1984-05-24"}, "102", "PID-7"),
    ],
)
def test_error_codes(pid: dict[int, str], code: str, location: str) -> None:
    raw = adt(pid=pid)
    error = error_of(raw)
    assert (error.code, error.location, error.rejected) == (code, location, False), str(error)
    answer = read(handle(raw, lambda event: None))
    assert str(answer.segment("MSA")[1]) == "AE"
    err = answer.segment("ERR")
    assert str(err[3]).startswith(f"{code}^") and str(err[4]) == "E"
    segment_id, field = location.split("-")
    assert str(err[2]) == f"{segment_id}^1^{field}"
    assert str(err[1]) == f"{segment_id}^1^{field}^{code}&{ERROR_TEXT[code]}&HL70357"


@pytest.mark.parametrize(
    ("version", "err1", "err2"), [("2.3", True, False), ("2.5", True, True), ("2.8", False, True)]
)
def test_err_fields_follow_the_version(version: str, err1: bool, err2: bool) -> None:
    raw = adt(pid={8: "Z"}).replace(b"|P|2.5|", f"|P|{version}|".encode(), 1)
    err = read(handle(raw, lambda event: None)).segment("ERR")
    assert (str(err[1]) == "PID^1^8^103&Table value not found&HL70357") is err1
    assert (len(err) > 3 and str(err[3]) == "103^Table value not found^HL70357") is err2


# -- Settings -------------------------------------------------------------------------------------------


def test_settings() -> None:
    settings = Settings.from_env(
        {
            "COORDINATION_HL7V2_LOCAL_ID_TYPES": "pi, MR",
            "COORDINATION_HL7V2_AUTHORITIES": "SIGEMS=urn:oid:1.2.3,CHU=https://chu.example/ipp HOSP=1.2.4",
        }
    )
    assert settings.hl7v2.local_id_types == ("PI", "MR")
    assert settings.hl7v2.authorities == (
        ("SIGEMS", "urn:oid:1.2.3"),
        ("CHU", "https://chu.example/ipp"),
        ("HOSP", "urn:oid:1.2.4"),
    )
    assert Settings.from_env({}).hl7v2.local_id_types == ("PI", "MR", "PN", "AN")
    with pytest.raises(ValueError, match="HL7V2_AUTHORITIES"):
        Settings.from_env({"COORDINATION_HL7V2_AUTHORITIES": "SIGEMS=not a uri"})
    with pytest.raises(ValueError, match="HL7V2_AUTHORITIES"):
        Settings.from_env({"COORDINATION_HL7V2_AUTHORITIES": "SIGEMS"})


# -- Into the store (SQLite and PostgreSQL) -------------------------------------------------------------


def _post(client: FlaskClient, raw: bytes) -> Any:
    return as_sender(client).post("/hl7v2", data=raw, headers=ER7)


def _msa_err(data: bytes) -> list[str]:
    """The ACK without its own MSH (timestamp and control id differ per answer)."""
    return [s for s in data.decode().split("\r") if s and not s.startswith("MSH")]


def test_pam_fr_admit_update_discharge(client: FlaskClient, fhir: Fhir) -> None:
    for trigger, control_id, pv1 in [
        ("A01", "PAM1", {}),
        ("A08", "PAM2", {"p3": "CARDIO^202^1^CHU-NANTES&440000289&M"}),
        ("A03", "PAM3", {"p3": "CARDIO^202^1^CHU-NANTES&440000289&M", "p45": "20240320113000"}),
    ]:
        response = _post(client, pam(trigger, control_id, **pv1))
        assert response.status_code == 200, response.data
        assert _msa_err(response.data) == [f"MSA|AA|{control_id}"]
    [patient] = [e["resource"] for e in fhir.search("Patient")["entry"]]
    stored = {(i["system"], i["value"]) for i in patient["identifier"]}
    assert stored == {(SIGEMS_URN, "123"), ("urn:oid:1.2.250.1.71.4.2.2", "456"), (INS_NIR, NIR_OK)}
    [encounter] = [e["resource"] for e in fhir.search("Encounter")["entry"]]
    assert encounter["status"] == "finished"
    assert encounter["identifier"][0] == {"system": SIGEMS_URN, "value": "NDA77"}
    assert encounter["location"][0]["location"]["display"] == "CARDIO / 202 / 1"
    # Found again by the sender's IPP alone (no INS): the same Patient.
    again = adt(
        "A08", control_id="PAM4", pid={3: "123^^^SIGEMS^PI", 32: "PROV"}, pv1={19: "NDA78^^^SIGEMS^AN"}
    )
    assert _msa_err(_post(client, again).data) == ["MSA|AA|PAM4"]
    assert len(fhir.search("Patient")["entry"]) == 1
    for resource_type in ("Patient", "Encounter", "Organization", "Practitioner"):
        for entry in fhir.search(resource_type).get("entry") or []:
            found = systems(entry["resource"].get("identifier"))
            assert all(_URI.fullmatch(s) for s in found), (resource_type, found)


def test_configured_authorities_apply(database_url: str) -> None:
    settings = Settings(
        database_url=database_url,
        audit_reads="sync",
        hl7v2=Hl7v2Settings(authorities=(("SIGEMS", "urn:oid:1.2.250.1.71.4.2.7.999"),)),
    )
    app = create_app(settings)
    app.config["TESTING"] = True
    upgrade(app.extensions["coordination"].repo.engine)
    try:
        client = authed(app.test_client())
        assert _post(client, pam("A01", "C1")).status_code == 200
        patient = Fhir(client).search("Patient")["entry"][0]["resource"]
        assert ("urn:oid:1.2.250.1.71.4.2.7.999", "123") in {
            (i["system"], i["value"]) for i in patient["identifier"]
        }
    finally:
        close_app(app)


def _versions(fhir: Fhir) -> dict[str, str]:
    return {
        f"{resource_type}/{e['resource']['id']}": e["resource"]["meta"]["versionId"]
        for resource_type in ("Patient", "Encounter", "Organization", "Practitioner")
        for e in fhir.search(resource_type).get("entry") or []
    }


@pytest.mark.parametrize("pid32", ["VALI", "XXXX"])
def test_the_same_message_again_gets_the_same_ack_and_writes_nothing(
    client: FlaskClient, fhir: Fhir, pid32: str
) -> None:
    messages = [
        adt("A01", control_id="I1", pid={3: PAM_PID3, 32: pid32}),
        adt("A08", control_id="I2", pid={3: PAM_PID3, 32: pid32, 5: "NOUVEAU^Nom^^^^^L"}),
    ]
    first = [_post(client, raw) for raw in messages]
    versions = _versions(fhir)
    history = fhir.request("GET", "/fhir/Patient/_history").get_json()
    again = [_post(client, raw) for raw in messages]
    assert [r.status_code for r in again] == [r.status_code for r in first] == [200, 200]
    assert [_msa_err(r.data) for r in again] == [_msa_err(r.data) for r in first]
    if pid32 == "XXXX":  # the warning is in the replay's ACK as in the first one
        assert "|W|" in again[0].data.decode()
    assert _versions(fhir) == versions
    assert fhir.request("GET", "/fhir/Patient/_history").get_json() == history


# -- Database outage: AR 207, retry later (HL7 v2.5 2.9.2.2) -------------------------------------------


def _outage_message(control_id: str) -> bytes:
    # A stay of its own per message: a message that changes nothing stored needs no write (no-op
    # updates), so it would be answered AA even while writes are locked out.
    return adt(
        "A01",
        control_id=control_id,
        pid={3: f"{control_id}-P^^^SIGEMS^PI", 32: "PROV"},
        pv1={19: f"{control_id}-V1"},
    )


def test_database_outage_is_ar_207_over_http(database_url: str, backend: str) -> None:
    with timeouts_app(database_url, DatabaseTimeouts(lock=0.3)) as app:
        client = as_sender(authed(app.test_client()))
        with write_lock_held(database_url, backend):
            response = client.post("/hl7v2", data=_outage_message("DB1"), headers=ER7)
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) >= 1
        if response.content_type.startswith("x-application/hl7-v2+er7"):
            ack = read(response.data)
            assert [str(x) for x in ack.segment("MSA")[1:3]] == ["AR", "DB1"]
            assert str(ack.segment("ERR")[3]).startswith("207^")
            assert "retry later" in str(ack.segment("ERR")[8])
        else:  # SQLite: the request's audit needs the same write lock; the audit refusal wins (503)
            assert backend == "sqlite"
        # Nothing was kept: the same message afterwards is a first delivery.
        assert not Fhir(client).search(f"Patient?identifier={quote(SIGEMS_URN + '|DB1-P')}").get("entry")
        after = client.post("/hl7v2", data=_outage_message("DB1"), headers=ER7)
        assert after.status_code == 200 and b"MSA|AA|DB1" in after.data
        found = Fhir(client).search(f"Patient?identifier={quote(SIGEMS_URN + '|DB1-P')}")
        assert len(found["entry"]) == 1


def test_database_outage_is_ar_207_over_mllp(database_url: str, backend: str) -> None:
    with timeouts_app(database_url, DatabaseTimeouts(lock=0.3)) as app:
        config = replace(app.config["SETTINGS"].hl7v2, senders=(HL7_SENDER,))
        srv = mllp_server(app, "127.0.0.1", 0, max_message_bytes=1_048_576, config=config)
        srv.start()
        try:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as conn:
                with write_lock_held(database_url, backend):
                    conn.sendall(b"\x0b" + _outage_message("DB2") + b"\x1c\x0d")
                    ack = read(read_frame(conn))
                assert [str(x) for x in ack.segment("MSA")[1:3]] == ["AR", "DB2"]
                assert str(ack.segment("ERR")[3]).startswith("207^")
                assert "retry later" in str(ack.segment("ERR")[8])
                conn.sendall(b"\x0b" + _outage_message("DB2") + b"\x1c\x0d")
                assert b"MSA|AA|DB2" in read_frame(conn)
        finally:
            srv.stop()


def test_a_visit_number_of_another_patient_is_ae_205(client: FlaskClient, fhir: Fhir) -> None:
    first = adt("A01", control_id="K1", pid={3: "K-1^^^SIGEMS^PI", 32: "PROV"}, pv1={19: "K-V^^^SIGEMS^AN"})
    assert _post(client, first).status_code == 200
    other = adt("A01", control_id="K2", pid={3: "K-2^^^SIGEMS^PI", 32: "PROV"}, pv1={19: "K-V^^^SIGEMS^AN"})
    response = _post(client, other)
    assert response.status_code == 422
    err = read(response.data).segment("ERR")
    assert (str(err[2]), str(err[3])) == ("PV1^1^19", "205^Duplicate key identifier^HL70357")
