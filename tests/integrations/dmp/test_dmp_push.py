"""$dmp-push: IHE MHD ITI-65 to a real local document recipient that checks what it gets, through the
connector-jobs outbox; outcomes recorded on the DocumentReference."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from coordination_api import jobs
from coordination_api.app import create_app
from coordination_api.config import DmpSettings, JobSettings, Settings
from coordination_api.integrations.dmp import SUBMISSION
from coordination_api.storage.schema import connector_job
from tests.conftest import Fhir, _truncate, authed, close_app, system_token
from tests.support.dmp import LETTER, Recipient, ins_patient, pdf_letter, recipient

__all__ = ["recipient"]  # module fixture: the document recipient


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
    doc_id = pdf_letter(fhir, ins_patient(fhir), via_binary=True)
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
    doc_id = pdf_letter(fhir, ins_patient(fhir, status), with_content=with_content)
    answer = fhir.request("POST", f"/fhir/DocumentReference/{doc_id}/$dmp-push")
    assert answer.status_code == 422
    assert expected in answer.get_json()["issue"][0]["diagnostics"]
    assert _jobs(dmp_app) == []


def test_unknown_documents_and_narrow_tokens(dmp_app: Flask) -> None:
    client = dmp_app.test_client()
    fhir = Fhir(authed(client))
    assert fhir.request("POST", "/fhir/DocumentReference/nope/$dmp-push").status_code == 404
    doc_id = pdf_letter(fhir, ins_patient(fhir))
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
    doc_id = pdf_letter(fhir, ins_patient(fhir))
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
    doc_id = pdf_letter(fhir, ins_patient(fhir))
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
    doc_id = pdf_letter(fhir, ins_patient(fhir))
    fhir.request("POST", f"/fhir/DocumentReference/{doc_id}/$dmp-push")
    recipient.mode = "malformed"
    jobs.run_due(dmp_app)
    (row,) = _jobs(dmp_app)
    assert row.status == "dead" and "not JSON" in row.last_error
    assert _submission(fhir, doc_id)["status"] == "failed"


def test_without_a_dmp_the_push_is_refused_and_nothing_is_queued(app: Flask, fhir: Fhir) -> None:
    """Issue 19: the Null recipient never reports success; with no DMP configured the push is a 503
    ``not-supported`` naming the missing setting, and no job is queued."""
    doc_id = pdf_letter(fhir, ins_patient(fhir))
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
    doc_id = pdf_letter(fhir, ins_patient(fhir))
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
    patient, other = ins_patient(fhir), ins_patient(fhir)
    doc_id = pdf_letter(fhir, patient, via_binary=True, binary_of=other)
    answer = fhir.request("POST", f"/fhir/DocumentReference/{doc_id}/$dmp-push")
    assert answer.status_code == 422, answer.get_json()
    doc = fhir.request("GET", f"/fhir/DocumentReference/{doc_id}").get_json()
    binary_id = doc["content"][0]["attachment"]["url"].split("/")[1]
    doc["content"][0]["attachment"]["url"] = f"https://evil.example/Binary/{binary_id}"
    assert fhir.request("PUT", f"/fhir/DocumentReference/{doc_id}", doc).status_code == 200
    answer = fhir.request("POST", f"/fhir/DocumentReference/{doc_id}/$dmp-push")
    assert answer.status_code == 422, answer.get_json()
    assert doc_id not in str(recipient.bundles)  # (another test's pushes may be in flight)
