"""HL7 v2.5 ACK construction (chapter 2: MSH, MSA, ERR), read back with python-hl7."""

from __future__ import annotations

from typing import Any

import hl7
import pytest

from connectors.events import EventError
from connectors.hl7v2.ack import ack
from connectors.hl7v2.parse import parse

ORIGINAL = (
    b"MSH|^~\\&|SIH-PASTEL|CHU-NANTES^440000289^M|CPTS-CONNECT|CPTS44|20240315103000||ADT^A03^ADT_A03|"
    b"CTRL-42|T|2.5|||||FRA|8859/1\rEVN||20240315102500\rPID|||1^^^H&1.2.3&ISO^PI\rPV1||I\r"
)


def read(answer: bytes) -> Any:
    assert answer.endswith(b"\r")
    assert b"\n" not in answer
    return hl7.parse(answer.decode("utf-8"))


def test_aa_swaps_sender_and_receiver() -> None:
    answer = read(ack(parse(ORIGINAL), "AA", None))
    msh = answer.segment("MSH")
    assert str(msh[3]) == "CPTS-CONNECT"
    assert str(msh[4]) == "CPTS44"
    assert str(msh[5]) == "SIH-PASTEL"
    assert str(msh[6]) == "CHU-NANTES^440000289^M"
    assert str(msh[9]) == "ACK^A03^ACK"
    assert str(msh[10]) not in {"", "CTRL-42"}
    assert len(str(msh[10])) <= 20
    assert str(msh[11]) == "T"
    assert str(msh[12]) == "2.5"
    assert str(msh[18]) == "UNICODE UTF-8"
    assert [str(x) for x in answer.segment("MSA")[1:3]] == ["AA", "CTRL-42"]
    with pytest.raises(KeyError):
        answer.segment("ERR")


def test_control_ids_are_unique() -> None:
    ids = {str(read(ack(parse(ORIGINAL), "AA")).segment("MSH")[10]) for _ in range(50)}
    assert len(ids) == 50


@pytest.mark.parametrize("code", ["AE", "AR"])
def test_error_segment(code: str) -> None:
    error = EventError("PID-3: invalid INS", code="102", location="PID-3", rejected=code == "AR")
    answer = read(ack(parse(ORIGINAL), code, error))
    assert str(answer.segment("MSA")[1]) == code
    assert str(answer.segment("MSA")[2]) == "CTRL-42"
    err = answer.segment("ERR")
    assert str(err[2]) == "PID^1^3"
    assert str(err[3]) == "102^Data type error^HL70357"
    assert str(err[4]) == "E"
    assert str(err[8]) == "PID-3: invalid INS"


def test_error_without_details_defaults_to_207() -> None:
    err = read(ack(parse(ORIGINAL), "AE", None)).segment("ERR")
    assert str(err[3]).startswith("207^")


def test_error_text_is_escaped() -> None:
    error = EventError("bad | field ^ with ~ & \\ and\nnewline", code="999", location="weird place")
    answer = read(ack(parse(ORIGINAL), "AE", error))
    err = answer.segment("ERR")
    assert str(err[3]).startswith("207^")  # unknown codes fall back to 207
    assert str(err[2]) == ""
    assert answer.unescape(str(err[8])) == "bad | field ^ with ~ & \\ and\rnewline"
    assert len(answer.segments("ERR")) == 1


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"\x00\xff\xfe random bytes",
        b"MSH|^~\\&|A|B|C|D|||ADT^A01|ID-1|P|2.5\rPID|\xff\xfe",
        b"junk before MSH|^~\\&|APP|FAC|||||ADT^A01|RAW-ID|P|2.3.1\nmore",
        b"MSH|abcd|A",
        b"MSH|^~\\&|A|B|C|D|||ADT^" + b"X" * 5000 + b"|" + b"9" * 5000,
    ],
)
def test_ack_for_garbage_is_valid(raw: bytes | None) -> None:
    answer = read(ack(None, "AR", EventError("not HL7", code="100", rejected=True), raw=raw))
    msh = answer.segment("MSH")
    assert str(msh[9]).startswith("ACK")
    assert str(msh[12]) in {"2.5", "2.3.1"}
    assert str(answer.segment("MSA")[1]) == "AR"
    assert len(str(answer)) < 2000


def test_ack_salvages_control_id_from_raw() -> None:
    raw = b"junk before MSH|^~\\&|APP|FAC|RCV|RFAC|||ADT^A01|RAW-ID|P|2.3.1\nPID|bad\xff"
    answer = read(ack(None, "AR", EventError("x", code="100"), raw=raw))
    assert str(answer.segment("MSA")[2]) == "RAW-ID"
    assert str(answer.segment("MSH")[5]) == "APP"
    assert str(answer.segment("MSH")[9]) == "ACK^A01^ACK"
    assert str(answer.segment("MSH")[12]) == "2.3.1"


def test_ack_with_other_delimiters_in_the_original() -> None:
    raw = b"MSH#:*!@#APP:X#FAC#RCV#RFAC###ADT:A08#ID|7#P#2.5\r"
    answer = read(ack(None, "AE", EventError("x", code="101"), raw=raw))
    assert str(answer.segment("MSA")[2]) == "ID\\F\\7"
    assert str(answer.segment("MSH")[5]) == "APP^X"


def test_unknown_code_raises() -> None:
    with pytest.raises(ValueError, match="acknowledgement code"):
        ack(None, "CA", None)
