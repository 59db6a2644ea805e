"""HL7 v2.5 ADT (IHE PAM France) parsing and mapping to EncounterEvent."""

from __future__ import annotations

from typing import Any

import hl7
import pytest

from connectors.events import EncounterEvent, EventError
from connectors.hl7v2 import handle
from connectors.hl7v2.mapping import to_event, ts_to_fhir
from connectors.hl7v2.parse import decode, parse
from coordination_api.fhir.resources import validate_resource
from fhir_profiles.french_identifiers import (
    FINESS,
    INS_NIR,
    INS_NIR_TEST,
    RELIABILITY_SYSTEM,
    RELIABILITY_URL,
    RPPS,
)
from tests.support.hl7v2 import INS_BAD_KEY, INS_NIR_CX, INS_NIR_TEST_CX, INS_OK, IPP, NIR_OK, adt


def event_of(raw: bytes) -> EncounterEvent:
    return to_event(parse(raw))


def error_of(raw: bytes) -> EventError:
    with pytest.raises(EventError) as info:
        event_of(raw)
    return info.value


def ack_of(raw: bytes, process: Any = None) -> Any:
    answer = handle(raw, process or (lambda event: None))
    return hl7.parse(answer.decode("utf-8"))


# -- Triggers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "kind", "status"),
    [
        ("A01", "admit", "in-progress"),
        ("A02", "transfer", "in-progress"),
        ("A03", "discharge", "finished"),
        ("A04", "register", "in-progress"),
        ("A08", "update", "in-progress"),
        ("A11", "cancel-admit", "entered-in-error"),
        ("A13", "cancel-discharge", "in-progress"),
    ],
)
def test_each_trigger(trigger: str, kind: str, status: str) -> None:
    event = event_of(adt(trigger))
    assert event.kind == kind
    assert event.sender == "SIH-PASTEL^CHU-NANTES"
    assert event.message_id == "MSG00001"
    assert event.encounter is not None
    assert event.encounter["status"] == status
    assert event.encounter["identifier"][0] == {"system": "urn:oid:1.2.250.1.999.1.2", "value": "NDA2024001"}
    assert event.occurred == "2024-03-15T10:25:00+01:00"
    for resource in [event.patient, event.encounter, event.service_provider, *event.practitioners]:
        assert resource is not None
        validate_resource(resource, profiles=False)


def test_admit_full_mapping() -> None:
    event = event_of(adt("A01"))
    patient = event.patient
    assert patient["extension"] == [
        {
            "url": RELIABILITY_URL,
            "extension": [
                {"url": "identityStatus", "valueCoding": {"system": RELIABILITY_SYSTEM, "code": "VALI"}}
            ],
        }
    ]
    systems = {i["system"]: i for i in patient["identifier"]}
    assert systems["urn:oid:1.2.250.1.999.1.1"]["value"] == "IPP123456"
    assert systems["urn:oid:1.2.250.1.999.1.1"]["type"]["coding"][0]["code"] == "PI"
    assert systems[INS_NIR_TEST]["value"] == INS_OK
    assert patient["name"][0] == {
        "use": "official",
        "extension": [
            {
                "url": "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-birth-list-given-name",
                "valueString": "Hélène Marie",
            }
        ],
        "family": "LÉGER",
        "given": ["Hélène"],
        "prefix": ["Mme"],
    }
    assert patient["name"][1]["use"] == "usual"
    assert patient["gender"] == "female"
    assert patient["birthDate"] == "1984-05-24"
    assert patient["address"][0]["line"] == ["12 rue de l'Église", "Bât. B"]
    assert patient["address"][0]["postalCode"] == "44000"
    assert {"system": "phone", "value": "0240000000", "use": "home"} in patient["telecom"]
    assert {"system": "email", "value": "helene@example.fr"} in patient["telecom"]
    encounter = event.encounter
    assert encounter is not None
    assert encounter["class"]["code"] == "IMP"
    assert encounter["period"] == {"start": "2024-03-15T10:00:00+01:00"}
    assert encounter["location"][0]["location"]["display"] == "CARDIO / 201 / 1"
    assert event.service_provider == {
        "resourceType": "Organization",
        "identifier": [{"system": FINESS, "value": "440000289"}],
        "name": "CHU-NANTES",
    }
    rpps = [p["identifier"][0] for p in event.practitioners]
    assert rpps == [{"system": RPPS, "value": "10003456789"}, {"system": RPPS, "value": "10101010101"}]
    assert event.practitioners[0]["name"][0]["family"] == "MARTIN"


def test_discharge_period_and_disposition() -> None:
    event = event_of(adt("A03", pv1={2: "O", 36: "8^Domicile", 45: "20240720143000+0200"}))
    encounter = event.encounter
    assert encounter is not None
    assert encounter["status"] == "finished"
    assert encounter["class"]["code"] == "AMB"
    assert encounter["period"] == {"start": "2024-03-15T10:00:00+01:00", "end": "2024-07-20T14:30:00+02:00"}
    coding = encounter["hospitalization"]["dischargeDisposition"]["coding"][0]
    assert coding["code"] == "8"
    assert coding["display"] == "Domicile"
    validate_resource(encounter, profiles=False)


def test_emergency_class_and_nir() -> None:
    event = event_of(adt("A04", pid={3: f"{IPP}~{INS_NIR_CX.format(NIR_OK)}", 32: "QUAL"}, pv1={2: "E"}))
    assert event.encounter is not None
    assert event.encounter["class"]["code"] == "EMER"
    assert {"system": INS_NIR, "value": NIR_OK} in [
        {"system": i["system"], "value": i["value"]} for i in event.patient["identifier"]
    ]


# -- INS and identity reliability ------------------------------------------------------------------


def test_ins_with_provisional_identity_is_not_emitted() -> None:
    event = event_of(adt(pid={32: "PROV"}))
    assert [i["system"] for i in event.patient["identifier"]] == ["urn:oid:1.2.250.1.999.1.1"]
    assert event.patient["extension"][0]["extension"][0]["valueCoding"]["code"] == "PROV"


def test_ins_without_reliability_is_not_emitted() -> None:
    event = event_of(adt(pid={32: ""}))
    assert [i["system"] for i in event.patient["identifier"]] == ["urn:oid:1.2.250.1.999.1.1"]
    assert "extension" not in event.patient


def test_invalid_ins_key_is_ae_102() -> None:
    raw = adt(pid={3: f"{IPP}~{INS_NIR_TEST_CX.format(INS_BAD_KEY)}"})
    error = error_of(raw)
    assert (error.code, error.location, error.rejected) == ("102", "PID-3", False)
    answer = ack_of(raw)
    assert str(answer.segment("MSA")[1]) == "AE"
    assert str(answer.segment("ERR")[3]).startswith("102^")
    assert str(answer.segment("ERR")[2]) == "PID^1^3"


def test_invalid_ins_is_refused_even_with_provisional_identity() -> None:
    assert error_of(adt(pid={3: f"{IPP}~{INS_NIR_TEST_CX.format('12345')}", 32: "PROV"})).code == "102"


def test_unknown_reliability_code_is_a_warning_and_not_validated() -> None:
    """Table 0445 is user-defined: a code outside PAM FR's is an identity that is not validated
    (the INS is not kept, no status recorded), and the AA carries an ERR of severity W."""
    raw = adt(pid={32: "XXXX"})
    event = event_of(raw)
    assert [i["system"] for i in event.patient["identifier"]] == ["urn:oid:1.2.250.1.999.1.1"]
    assert "extension" not in event.patient
    assert [(w.code, w.location) for w in event.warnings] == [("103", "PID-32")]
    answer = ack_of(raw)
    assert [str(x) for x in answer.segment("MSA")[1:3]] == ["AA", "MSG00001"]
    err = answer.segment("ERR")
    assert (str(err[2]), str(err[3]), str(err[4])) == ("PID^1^32", "103^Table value not found^HL70357", "W")
    assert "not validated" in str(err[8])


def test_unknown_reliability_code_beside_vali_is_not_validated() -> None:
    event = event_of(adt(pid={32: "VALI~NOPE"}))
    assert INS_NIR_TEST not in [i["system"] for i in event.patient["identifier"]]
    assert "extension" not in event.patient


def test_no_usable_identifier_is_101() -> None:
    error = error_of(adt(pid={3: "IPP1^^^^PI", 32: "PROV"}))
    assert (error.code, error.location) == ("101", "PID-3")


def test_ipp_with_namespace_only_is_scoped_by_the_sender() -> None:
    event = event_of(adt(pid={3: "IPP9^^^CHUN^PI"}))
    assert event.patient["identifier"][0]["system"] == "urn:coordination:hl7v2:SIH-PASTEL%5ECHU-NANTES:CHUN"


# -- Errors ----------------------------------------------------------------------------------------


def test_missing_control_id_is_ae_101() -> None:
    raw = adt(control_id="")
    error = error_of(raw)
    assert (error.code, error.location, error.rejected) == ("101", "MSH-10", False)
    answer = ack_of(raw)
    assert str(answer.segment("MSA")[1]) == "AE"
    assert str(answer.segment("ERR")[3]) == "101^Required field missing^HL70357"


def test_unsupported_message_type_is_ar_200() -> None:
    answer = ack_of(adt("R01", message_type="ORU"))
    assert str(answer.segment("MSA")[1]) == "AR"
    assert str(answer.segment("MSA")[2]) == "MSG00001"
    assert str(answer.segment("ERR")[3]).startswith("200^")


def test_unsupported_trigger_is_ar_201() -> None:
    error = error_of(adt("A99"))
    assert (error.code, error.rejected) == ("201", True)
    assert str(ack_of(adt("A99")).segment("ERR")[3]).startswith("201^")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   \r\n",
        b"\x00\x01\x02garbage\xff\xfe",
        b"PID|||123\rMSH|^~\\&|A",
        b"MSH",
        b"MSH|",
        b"MSH|^^^^|A|B",
        b"MSHA^~\\&|A",
        b"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5\rpid|bad",
        b"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5\rMSH|^~\\&|A|B|C|D|||ADT^A01|2|P|2.5",
    ],
)
def test_garbage_is_rejected(raw: bytes) -> None:
    with pytest.raises(EventError) as info:
        parse(raw)
    assert info.value.rejected
    assert info.value.code in {"100", "102"}
    answer = ack_of(raw)
    assert str(answer.segment("MSA")[1]) == "AR"
    assert str(answer.segment("MSH")[9]).startswith("ACK")


def test_missing_pv1_and_pid() -> None:
    raw = adt().split(b"\rPV1")[0] + b"\r"
    assert (error_of(raw).code, error_of(raw).location) == ("100", "PV1")
    no_pid = b"\r".join(s for s in adt().split(b"\r") if not s.startswith(b"PID"))
    assert error_of(no_pid).location == "PID"


def test_process_failure_is_ae_207_without_details() -> None:
    def boom(event: EncounterEvent) -> None:
        raise RuntimeError("LÉGER Hélène 284057505612387 duplicate key")

    answer = ack_of(adt(), boom)
    assert str(answer.segment("MSA")[1]) == "AE"
    assert str(answer.segment("ERR")[3]).startswith("207^")
    assert "LÉGER" not in str(answer) and "2840575" not in str(answer)


def test_process_event_error_keeps_its_code() -> None:
    def refuse(event: EncounterEvent) -> None:
        raise EventError("nope", code="204", location="PID-3")

    answer = ack_of(adt(), refuse)
    assert str(answer.segment("MSA")[1]) == "AE"
    assert str(answer.segment("ERR")[3]).startswith("204^")


def test_success_is_aa_and_process_sees_the_event() -> None:
    seen: list[EncounterEvent] = []
    answer = ack_of(adt("A03"), seen.append)
    assert str(answer.segment("MSA")[1]) == "AA"
    assert [e.kind for e in seen] == ["discharge"]


# -- Character sets and separators -----------------------------------------------------------------


def test_latin1_declared() -> None:
    raw = adt(charset="8859/1", encoding="iso-8859-1")
    assert "É".encode() not in raw
    assert event_of(raw).patient["name"][0]["family"] == "LÉGER"


def test_latin9_declared() -> None:
    raw = adt(charset="8859/15", pid={5: "ŒUVRE^Zoé"}, encoding="iso-8859-15")
    assert event_of(raw).patient["name"][0] == {"family": "ŒUVRE", "given": ["Zoé"]}


def test_utf8_declared() -> None:
    assert event_of(adt(charset="UNICODE UTF-8")).patient["name"][0]["given"] == ["Hélène"]


def test_absent_charset_falls_back_to_latin1() -> None:
    assert decode(adt(charset=None, encoding="iso-8859-1")).count("|LÉGER^Hélène") == 1
    assert event_of(adt(charset=None, encoding="utf-8")).patient["name"][0]["family"] == "LÉGER"


def test_declared_utf8_but_latin1_bytes_is_rejected() -> None:
    with pytest.raises(EventError) as info:
        parse(adt(charset="UNICODE UTF-8", encoding="iso-8859-1"))
    assert (info.value.code, info.value.location, info.value.rejected) == ("102", "MSH-18", True)


def test_unknown_charset_is_rejected() -> None:
    with pytest.raises(EventError) as info:
        parse(adt(charset="KLINGON"))
    assert info.value.rejected


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_line_feed_separators(newline: str) -> None:
    assert event_of(adt("A03", newline=newline)).kind == "discharge"


def test_escape_sequences() -> None:
    event = event_of(adt(pid={5: "O\\S\\BRIEN\\T\\CO^Ren\\XC3A9\\"}))
    assert event.patient["name"][0] == {"family": "O^BRIEN&CO", "given": ["René"]}


# -- Times -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2024", "2024"),
        ("202403", "2024-03"),
        ("20240315", "2024-03-15"),
        ("2024031510", "2024-03-15T10:00:00+01:00"),
        ("202407151030", "2024-07-15T10:30:00+02:00"),
        ("20240715103045.123", "2024-07-15T10:30:45.123+02:00"),
        ("20240715103045-0500", "2024-07-15T10:30:45-05:00"),
        ("20240715103045+0000", "2024-07-15T10:30:45+00:00"),
        ("", None),
    ],
)
def test_ts_to_fhir(ts: str, expected: str | None) -> None:
    assert ts_to_fhir(ts) == expected


@pytest.mark.parametrize(
    "ts", ["20241315", "20240230", "2024-03-15", "20240315256000", "abc", "20240315+2500"]
)
def test_invalid_ts(ts: str) -> None:
    with pytest.raises(EventError) as info:
        ts_to_fhir(ts, "PV1-44")
    assert (info.value.code, info.value.location) == ("102", "PV1-44")


def test_invalid_admit_time_is_ae_102() -> None:
    error = error_of(adt(pv1={44: "20241399"}))
    assert (error.code, error.location, error.rejected) == ("102", "PV1-44", False)
