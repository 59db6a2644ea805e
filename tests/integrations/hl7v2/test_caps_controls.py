"""HL7 v2 caps and control characters (issue 16): repetitions and field sizes are bounded (AE naming the
limit and the field), control characters never reach stored FHIR strings, ``\\X00\\`` in MSH-10 is a
clear AE (never "internal error")."""

from __future__ import annotations

import hl7
import pytest
from flask.testing import FlaskClient

from connectors.events import EncounterEvent
from connectors.hl7v2 import Limits, handle
from coordination_api.config import Settings
from tests.conftest import Fhir
from tests.support.hl7v2 import adt
from tests.support.messages import as_sender

ER7 = {"Content-Type": "x-application/hl7-v2+er7"}


def _ack(data: bytes) -> tuple[str, str, str]:
    """(MSA-1, MSA-3 text, ERR-2 location)."""
    message = hl7.parse(data.decode())
    msa, err = message.segment("MSA"), message.segment("ERR")
    return str(msa[1]), str(msa[3]), str(err[2])


def _post(client: FlaskClient, raw: bytes) -> tuple[int, tuple[str, str, str]]:
    response = as_sender(client).post("/hl7v2", data=raw, headers=ER7)
    return response.status_code, _ack(response.data)


def test_200000_repetitions_of_pid5_get_ae_naming_the_limit(client: FlaskClient, fhir: Fhir) -> None:
    raw = adt("A01", control_id="R1", pid={5: "~".join(["DUPONT^Jean"] * 200_000)})
    status, (code, text, location) = _post(client, raw)
    assert (status, code) == (422, "AE")
    assert "PID-5" in text and "200000 repetitions" in text and "limit of 100" in text
    assert location == "PID^1^5"
    assert fhir.search("Patient").get("entry") is None


def test_an_oversized_field_gets_ae_naming_the_field(client: FlaskClient, fhir: Fhir) -> None:
    raw = adt("A01", control_id="R2", pid={11: "x" * 70_000})
    status, (code, text, location) = _post(client, raw)
    assert (status, code) == (422, "AE")
    assert "PID-11" in text and "larger than 65536 bytes" in text and location == "PID^1^11"
    assert fhir.search("Patient").get("entry") is None


def test_limits_come_from_the_settings() -> None:
    settings = Settings.from_env(
        {"COORDINATION_HL7V2_MAX_REPETITIONS": "3", "COORDINATION_HL7V2_MAX_FIELD_BYTES": "2048"}
    )
    assert (settings.hl7v2.max_repetitions, settings.hl7v2.max_field_bytes) == (3, 2048)
    limits = Limits(settings.hl7v2.max_repetitions, settings.hl7v2.max_field_bytes)
    seen: list[EncounterEvent] = []
    ack = handle(adt("A01", pid={5: "A^B~C^D~E^F~G^H"}), seen.append, limits)
    assert b"MSA|AE" in ack and b"4 repetitions, more than the limit of 3" in ack and not seen
    assert b"MSA|AA" in handle(adt("A01", pid={5: "A^B~C^D~E^F"}), seen.append, limits)


def test_nul_in_msh10_is_a_clear_ae_not_an_internal_error(client: FlaskClient, fhir: Fhir) -> None:
    status, (code, text, location) = _post(client, adt("A01", control_id="ID\\X00\\1"))
    assert (status, code) == (422, "AE")
    assert "MSH-10: control character U+0000" in text and location == "MSH^1^10"
    assert "internal error" not in text.lower()
    assert fhir.search("Patient").get("entry") is None


@pytest.mark.parametrize(
    ("pid5", "char"),
    [("DUPONT\\X1B\\[31m^Jean", "U+001B"), ("DUPONT\x1b^Jean", "U+001B"), ("DU\\X7F\\PONT^Jean", "U+007F")],
)
def test_control_characters_in_a_mapped_field_are_refused(
    client: FlaskClient, fhir: Fhir, pid5: str, char: str
) -> None:
    status, (code, text, location) = _post(client, adt("A01", control_id="E1", pid={5: pid5}))
    assert (status, code) == (422, "AE")
    assert f"PID-5: control character {char}" in text and location == "PID^1^5"
    assert fhir.search("Patient").get("entry") is None


def test_escaped_line_breaks_become_spaces_in_single_line_fields(client: FlaskClient, fhir: Fhir) -> None:
    raw = adt(
        "A01",
        control_id="L1",
        pid={
            5: "DUPONT\\X0D0A\\MARTIN^Jean\\.br\\Pierre^^^^^L",
            11: "12 rue\\X09\\Haute^^Nantes^^44000^FRA^H",
        },
    )
    response = as_sender(client).post("/hl7v2", data=raw, headers=ER7)
    assert response.status_code == 200 and b"MSA|AA|L1" in response.data
    stored = fhir.search("Patient")["entry"][0]["resource"]
    assert stored["name"][0]["family"] == "DUPONT MARTIN"
    assert stored["name"][0]["given"] == ["Jean Pierre"]
    assert stored["address"][0]["line"] == ["12 rue Haute"]
    text = str(stored)
    assert not any(c in text for c in "\r\n\t\x1b\x00")


def test_an_overlong_msh10_gets_ae_rather_than_a_truncated_key(client: FlaskClient, fhir: Fhir) -> None:
    status, (code, text, location) = _post(client, adt("A01", control_id="X" * 200))
    assert (status, code) == (422, "AE")
    assert "longer than 199 characters" in text and location == "MSH^1^10"
