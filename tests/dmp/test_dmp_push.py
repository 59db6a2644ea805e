"""$dmp-push: IHE MHD ITI-65 to a real local document recipient that checks what it gets, through the
connector-jobs outbox; outcomes recorded on the DocumentReference."""

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
from sqlalchemy import select
from werkzeug.serving import make_server

from coordination_api import jobs
from coordination_api.app import create_app
from coordination_api.config import DmpSettings, JobSettings, Settings
from coordination_api.fhir.dmp import SUBMISSION
from coordination_api.storage.schema import connector_job
from tests.conftest import Fhir, _truncate, authed, close_app, system_token
from tests.profiles.support import example

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


def _check(bundle: dict[str, Any]) -> list[str]:
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
        if state.mode == "slow":
            time.sleep(3)
        if state.mode == "500":
            return Response("down", status=500)
        if state.mode == "malformed":
            return Response("<html>not FHIR</html>", status=200, content_type="text/html")
        bundle = orjson.loads(flask_request.get_data())
        problems = _check(bundle)
        if state.mode == "400" or problems:
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


@pytest.fixture
def dmp_app(database_url: str, app: Flask, recipient: Recipient) -> Iterator[Flask]:
    settings = Settings(
        database_url=database_url,
        audit_reads="sync",
        dmp=DmpSettings(
            recipient_url=recipient.url, connect_timeout=1.0, read_timeout=1.0, source_oid="1.2.3.4"
        ),
        jobs=JobSettings(retry_base=0.01, retry_cap=0.05, max_attempts=3),
    )
    pushing = create_app(settings)
    pushing.config["TESTING"] = True
    _truncate(pushing)
    recipient.mode = "ok"
    recipient.bundles.clear()
    recipient.problems.clear()
    yield pushing
    close_app(pushing)


def _patient(fhir: Fhir, status: str = "VALI") -> str:
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


def _letter(
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


def _submission(fhir: Fhir, doc_id: str) -> dict[str, Any]:
    doc = fhir.request("GET", f"/fhir/DocumentReference/{doc_id}").get_json()
    ext = next(e for e in doc.get("extension", []) if e["url"] == SUBMISSION)
    return {p["url"]: next(v for k, v in p.items() if k != "url") for p in ext["extension"]}


def _jobs(app: Flask) -> list[Any]:
    with app.extensions["coordination"].repo.engine.connect() as conn:
        return list(conn.execute(select(connector_job).order_by(connector_job.c.pk)).all())


def _drain(app: Flask) -> None:
    for _ in range(10):
        with app.extensions["coordination"].repo.writing() as conn:
            conn.execute(connector_job.update().values(next_attempt_us=0))
        if not jobs.run_due(app):
            return


def test_a_discharge_letter_reaches_the_dmp_as_a_valid_iti65_bundle(
    dmp_app: Flask, recipient: Recipient
) -> None:
    fhir = Fhir(authed(dmp_app.test_client()))
    doc_id = _letter(fhir, _patient(fhir), via_binary=True)
    answer = fhir.request("POST", f"/fhir/DocumentReference/{doc_id}/$dmp-push")
    assert answer.status_code == 202, answer.get_json()
    assert answer.get_json()["issue"][0]["severity"] == "information"
    assert answer.headers["Content-Location"].endswith(f"/DocumentReference/{doc_id}")
    assert _submission(fhir, doc_id)["status"] == "requested"
    again = fhir.request("POST", f"/fhir/DocumentReference/{doc_id}/$dmp-push")
    assert again.status_code == 202 and len(_jobs(dmp_app)) == 1  # pending: no second job

    _drain(dmp_app)
    assert recipient.problems == [] and len(recipient.bundles) == 1
    sent = recipient.bundles[0]
    binary = next(e["resource"] for e in sent["entry"] if e["resource"]["resourceType"] == "Binary")
    assert base64.b64decode(binary["data"]) == LETTER
    submission = _submission(fhir, doc_id)
    assert submission["status"] == "sent" and submission["location"].startswith("DocumentReference/dmp-1")
    refused = fhir.request("POST", f"/fhir/DocumentReference/{doc_id}/$dmp-push")
    assert refused.status_code == 409 and "force=true" in refused.get_json()["issue"][0]["diagnostics"]
    assert fhir.request("POST", f"/fhir/DocumentReference/{doc_id}/$dmp-push?force=true").status_code == 202


@pytest.mark.parametrize(
    ("status", "with_content", "expected"),
    [("PROV", True, "validated or qualified identity"), ("VALI", False, "no content")],
)
def test_requests_the_dmp_cannot_take_are_422(
    dmp_app: Flask, status: str, with_content: bool, expected: str
) -> None:
    fhir = Fhir(authed(dmp_app.test_client()))
    doc_id = _letter(fhir, _patient(fhir, status), with_content=with_content)
    answer = fhir.request("POST", f"/fhir/DocumentReference/{doc_id}/$dmp-push")
    assert answer.status_code == 422
    assert expected in answer.get_json()["issue"][0]["diagnostics"]
    assert _jobs(dmp_app) == []


def test_unknown_documents_and_narrow_tokens(dmp_app: Flask) -> None:
    client = dmp_app.test_client()
    fhir = Fhir(authed(client))
    assert fhir.request("POST", "/fhir/DocumentReference/nope/$dmp-push").status_code == 404
    doc_id = _letter(fhir, _patient(fhir))
    reader = system_token(client, "system/DocumentReference.rs system/Patient.rs")
    answer = client.post(
        f"/fhir/DocumentReference/{doc_id}/$dmp-push", headers={"Authorization": f"Bearer {reader}"}
    )
    assert answer.status_code == 403 and answer.get_json()["resourceType"] == "OperationOutcome"
    assert _jobs(dmp_app) == []


def test_a_recipient_down_or_slow_is_retried_then_the_document_is_sent(
    dmp_app: Flask, recipient: Recipient
) -> None:
    fhir = Fhir(authed(dmp_app.test_client()))
    doc_id = _letter(fhir, _patient(fhir))
    fhir.request("POST", f"/fhir/DocumentReference/{doc_id}/$dmp-push")
    for mode in ("500", "slow"):
        recipient.mode = mode
        jobs.run_due(dmp_app)
        (row,) = _jobs(dmp_app)
        assert row.status == "pending", mode  # retried later, not lost
        with dmp_app.extensions["coordination"].repo.writing() as conn:
            conn.execute(connector_job.update().values(next_attempt_us=0))
    assert "timed out" in _jobs(dmp_app)[0].last_error
    recipient.mode = "ok"
    _drain(dmp_app)
    assert _jobs(dmp_app)[0].status == "done" and _submission(fhir, doc_id)["status"] == "sent"


def test_a_refusal_is_recorded_and_the_job_dead_lettered(dmp_app: Flask, recipient: Recipient) -> None:
    fhir = Fhir(authed(dmp_app.test_client()))
    doc_id = _letter(fhir, _patient(fhir))
    fhir.request("POST", f"/fhir/DocumentReference/{doc_id}/$dmp-push")
    recipient.mode = "400"
    _drain(dmp_app)
    assert [(r.status, r.attempts) for r in _jobs(dmp_app)] == [("dead", 1)]
    submission = _submission(fhir, doc_id)
    assert submission["status"] == "failed" and "XDSRegistryError" in submission["diagnostics"]


def test_a_malformed_answer_is_recorded_as_failed_not_resent_blindly(
    dmp_app: Flask, recipient: Recipient
) -> None:
    fhir = Fhir(authed(dmp_app.test_client()))
    doc_id = _letter(fhir, _patient(fhir))
    fhir.request("POST", f"/fhir/DocumentReference/{doc_id}/$dmp-push")
    recipient.mode = "malformed"
    jobs.run_due(dmp_app)
    (row,) = _jobs(dmp_app)
    assert row.status == "dead" and "not JSON" in row.last_error
    assert _submission(fhir, doc_id)["status"] == "failed"


def test_without_a_dmp_the_push_is_refused_and_nothing_is_queued(app: Flask, fhir: Fhir) -> None:
    """Issue 19: the Null recipient never reports success; with no DMP configured the push is a 503
    ``not-supported`` naming the missing setting, and no job is queued."""
    doc_id = _letter(fhir, _patient(fhir))
    answer = fhir.request("POST", f"/fhir/DocumentReference/{doc_id}/$dmp-push")
    assert answer.status_code == 503, answer.get_json()
    issue = answer.get_json()["issue"][0]
    assert issue["code"] == "not-supported" and "Retry-After" not in answer.headers
    assert "DMP connector not configured" in issue["diagnostics"]
    assert "COORDINATION_DMP_RECIPIENT_URL" in issue["diagnostics"]
    assert _jobs(app) == []
    doc = fhir.request("GET", f"/fhir/DocumentReference/{doc_id}").get_json()
    assert not any(e["url"] == SUBMISSION for e in doc.get("extension", []))


def test_a_push_queued_before_the_dmp_was_unconfigured_ends_not_sent(
    dmp_app: Flask, app: Flask, recipient: Recipient
) -> None:
    """Accepted while a DMP was configured, run by a worker that has none: ``not-sent`` with the
    reason, the job dead (``coordination jobs retry`` once the DMP is configured again); never ``sent``."""
    fhir = Fhir(authed(dmp_app.test_client()))
    doc_id = _letter(fhir, _patient(fhir))
    assert fhir.request("POST", f"/fhir/DocumentReference/{doc_id}/$dmp-push").status_code == 202
    jobs.run_due(app)  # the session app: same database, no DMP configured
    (row,) = _jobs(app)
    assert row.status == "dead" and "DMP connector not configured" in row.last_error
    submission = _submission(fhir, doc_id)
    assert submission["status"] == "not-sent"
    assert "DMP connector not configured" in submission["diagnostics"]
    assert recipient.bundles == []


def test_a_binary_of_another_patient_is_never_pushed(dmp_app: Flask, recipient: Recipient) -> None:
    """Issue 16 (review of the DMP push): attachment.url naming another patient's letter, or a Binary
    elsewhere, is not content of this document."""
    fhir = Fhir(authed(dmp_app.test_client()))
    patient, other = _patient(fhir), _patient(fhir)
    doc_id = _letter(fhir, patient, via_binary=True, binary_of=other)
    answer = fhir.request("POST", f"/fhir/DocumentReference/{doc_id}/$dmp-push")
    assert answer.status_code == 422, answer.get_json()
    doc = fhir.request("GET", f"/fhir/DocumentReference/{doc_id}").get_json()
    binary_id = doc["content"][0]["attachment"]["url"].split("/")[1]
    doc["content"][0]["attachment"]["url"] = f"https://evil.example/Binary/{binary_id}"
    assert fhir.request("PUT", f"/fhir/DocumentReference/{doc_id}", doc).status_code == 200
    answer = fhir.request("POST", f"/fhir/DocumentReference/{doc_id}/$dmp-push")
    assert answer.status_code == 422, answer.get_json()
    assert doc_id not in str(recipient.bundles)  # (another test's pushes may be in flight)
