"""A stand-in DMP document recipient (IHE MHD ITI-65) that checks what it gets, and the patient and
discharge letter a push starts from."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from flask import Flask, Response
from flask import request as flask_request
from werkzeug.serving import make_server

from tests.conftest import Fhir
from tests.fhir_profiles.support import example

LETTER = b"%PDF-1.4 lettre de liaison de sortie"

MHD = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"


@dataclass
class Recipient:
    port: int = 0
    mode: str = "ok"  # ok | 500 | 400 | slow | malformed
    bundles: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"


def check_submission(bundle: dict[str, Any]) -> list[str]:
    """What a real ITI-65 recipient would refuse."""
    problems = []
    if bundle.get("type") != "transaction":
        problems.append("not a transaction")
    entries = bundle.get("entry") or []
    by_type = {e["resource"]["resourceType"]: e for e in entries}
    lists = [e for e in entries if e["resource"]["resourceType"] == "List"]
    if (
        len(lists) != 1
        or MHD + "IHE.MHD.Minimal.SubmissionSet" not in lists[0]["resource"]["meta"]["profile"]
    ):
        problems.append("one SubmissionSet List expected")
    else:
        submission = lists[0]["resource"]
        if submission["code"]["coding"][0]["code"] != "submissionset":
            problems.append("List.code is not submissionset")
        if submission["entry"][0]["item"]["reference"] != by_type["DocumentReference"]["fullUrl"]:
            problems.append("SubmissionSet does not list the DocumentReference")
    doc = by_type["DocumentReference"]["resource"]
    attachment = doc["content"][0]["attachment"]
    if attachment["url"] != by_type["Binary"]["fullUrl"]:
        problems.append("attachment.url is not the Binary's fullUrl")
    data = base64.b64decode(by_type["Binary"]["resource"]["data"])
    if base64.b64encode(hashlib.sha1(data, usedforsecurity=False).digest()).decode() != attachment["hash"]:
        problems.append("attachment.hash does not match the Binary")
    if attachment["size"] != len(data):
        problems.append("attachment.size does not match the Binary")
    if "urn:oid:1.2.250.1.213.1.4" not in doc["subject"]["identifier"]["system"]:
        problems.append("subject is not identified by an INS")
    return problems


@pytest.fixture(scope="module")
def recipient() -> Iterator[Recipient]:
    state = Recipient()
    server_app = Flask("mhd-recipient")

    @server_app.post("/fhir")
    def provide() -> Response:
        # The mode is read once, on arrival, and a delivery is recorded on arrival: a "slow" answer
        # outlives the client's timeout, and by then the next test may have started (a late append
        # landed in its list); what was delivered is what arrived.
        mode = state.mode
        if mode == "500":
            return Response("down", status=500)
        if mode == "malformed":
            return Response("<html>not FHIR</html>", status=200, content_type="text/html")
        bundle = orjson.loads(flask_request.get_data())
        problems = check_submission(bundle)
        if mode == "400" or problems:
            state.problems.extend(problems)
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [
                    {
                        "severity": "error",
                        "code": "invalid",
                        "diagnostics": "; ".join(problems) or "XDSRegistryError",
                    }
                ],
            }
            return Response(orjson.dumps(outcome), status=400, content_type="application/fhir+json")
        state.bundles.append(bundle)
        if mode == "slow":
            time.sleep(3)
        answer = {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": [
                {
                    "response": {
                        "status": "201 Created",
                        "location": f"{e['request']['url']}/dmp-{i}/_history/1",
                    }
                }
                for i, e in enumerate(bundle["entry"])
            ],
        }
        return Response(orjson.dumps(answer), status=200, content_type="application/fhir+json")

    server = make_server("127.0.0.1", 0, server_app, threaded=True)
    state.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()


def ins_patient(fhir: Fhir, status: str = "VALI") -> str:
    patient = example("patient-ins-valid.json")
    patient.pop("id")
    for ext in patient["extension"]:
        for sub in ext.get("extension", []):
            if sub["url"] == "identityStatus":
                sub["valueCoding"]["code"] = status
    if status not in ("VALI", "QUAL"):  # an INS is allowed only on a trusted identity: drop it
        patient["identifier"] = [i for i in patient["identifier"] if "1.2.250.1.213.1.4" not in i["system"]]
        patient["meta"]["profile"] = ["https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient"]
    created: str = fhir.create(patient)["id"]
    return created


def pdf_letter(
    fhir: Fhir,
    patient_id: str,
    *,
    with_content: bool = True,
    via_binary: bool = False,
    binary_of: str | None = None,
) -> str:
    attachment: dict[str, Any] = {"contentType": "application/pdf", "title": "Lettre de liaison"}
    if with_content and via_binary:
        binary = fhir.create(
            {
                "resourceType": "Binary",
                "contentType": "application/pdf",
                "securityContext": {"reference": f"Patient/{binary_of or patient_id}"},
                "data": base64.b64encode(LETTER).decode(),
            }
        )
        attachment["url"] = f"Binary/{binary['id']}"
    elif with_content:
        attachment["data"] = base64.b64encode(LETTER).decode()
    doc = fhir.create(
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "type": {
                "coding": [{"system": "http://loinc.org", "code": "11490-0", "display": "Lettre de sortie"}]
            },
            "subject": {"reference": f"Patient/{patient_id}"},
            "date": "2026-11-23T10:00:00+01:00",
            "content": [{"attachment": attachment}],
        }
    )
    created: str = doc["id"]
    return created
