"""docs/integration.md stays true: its complete examples are sent as written."""

from __future__ import annotations

import re
from pathlib import Path

from flask.testing import FlaskClient

from tests.conftest import Fhir
from tests.support.messages import as_sender

DOC = Path(__file__).resolve().parents[2] / "docs" / "integration.md"


def _http_example(heading: str) -> tuple[str, dict[str, str], str]:
    """The first ```http block after ``heading``: request line, headers, body."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    block = re.search(r"```http\n(.*?)```", section, re.S)
    assert block is not None, f"no http example under {heading}"
    head, _, body = block.group(1).partition("\n\n")
    request_line, *header_lines = head.splitlines()
    headers = dict(line.split(": ", 1) for line in header_lines)
    return request_line, headers, body


def test_the_hl7v2_example_is_acknowledged_and_stored(client: FlaskClient, fhir: Fhir) -> None:
    request_line, headers, body = _http_example("### 2.2 HL7 v2 ADT")
    method, path = request_line.split()
    assert (method, headers["Content-Type"]) == ("POST", "x-application/hl7-v2+er7")
    er7 = body.strip("\n").replace("\n", "\r") + "\r"
    sender = as_sender(client, "SIH^CHU")  # MSH-3^MSH-4 of the example, registered as documented
    answer = sender.post(path, data=er7.encode(), headers={"Content-Type": headers["Content-Type"]})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert "MSA|AA|MSG0001" in answer.get_data(as_text=True)
    encounters = fhir.search("Encounter?status=finished")
    assert encounters.get("total", len(encounters.get("entry", []))) >= 1
