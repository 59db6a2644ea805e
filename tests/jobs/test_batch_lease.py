"""A claimed batch runs its jobs one after another: each job's lease is renewed just before it runs,
so a job whose lease lapsed meanwhile (another worker took it) is not run twice (review of issue 8:
duplicate DMP submissions)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from coordination_api import jobs
from coordination_api.app import create_app
from coordination_api.config import DmpSettings, JobSettings, Settings
from coordination_api.storage.schema import connector_job
from tests.conftest import Fhir, _truncate, authed, close_app
from tests.support.dmp import Recipient, ins_patient, pdf_letter
from tests.support.dmp import recipient as recipient


@pytest.fixture
def short_lease_app(database_url: str, app: Flask, recipient: Recipient) -> Iterator[Flask]:
    settings = Settings(
        database_url=database_url,
        audit_reads="sync",
        dmp=DmpSettings(recipient_url=recipient.url, read_timeout=5.0, source_oid="1.2.3.4"),
        jobs=JobSettings(lease=1.0, batch_size=20),
    )
    made = create_app(settings)
    made.config["TESTING"] = True
    _truncate(made)
    recipient.mode = "ok"
    recipient.bundles.clear()
    yield made
    close_app(made)


def test_a_job_whose_lease_lapsed_in_a_batch_is_not_run_twice(
    short_lease_app: Flask,
    recipient: Recipient,
) -> None:
    fhir = Fhir(authed(short_lease_app.test_client()))
    patient = ins_patient(fhir)
    for doc in [pdf_letter(fhir, patient) for _ in range(2)]:
        assert fhir.request("POST", f"/fhir/DocumentReference/{doc}/$dmp-push").status_code == 202
    worker_a = jobs.of(short_lease_app)
    batch = worker_a._claim()  # both jobs, under one lease of 1 s
    assert len(batch) == 2
    time.sleep(1.2)  # worker A is slow to get to them
    jobs.run_due(short_lease_app)  # worker B: the lease ran out, it claims and sends both
    worker_a.run_claimed(short_lease_app, batch)  # worker A goes on: its leases are no longer its own
    assert len(recipient.bundles) == 2  # each document once


def test_a_job_running_past_its_lease_is_not_taken_by_another_worker(
    short_lease_app: Flask,
    recipient: Recipient,
) -> None:
    """Review 20 F5, the connector-job class: a call slower than the lease (the recipient answers after
    3 s, the lease is 1 s) keeps its lease renewed while it runs, so a second worker claims nothing
    meanwhile and the document is sent once."""

    fhir = Fhir(authed(short_lease_app.test_client()))
    doc = pdf_letter(fhir, ins_patient(fhir))
    assert fhir.request("POST", f"/fhir/DocumentReference/{doc}/$dmp-push").status_code == 202
    recipient.mode = "slow"
    worker_a = threading.Thread(target=jobs.run_due, args=(short_lease_app,))
    worker_a.start()
    try:
        time.sleep(1.8)  # past the first lease; worker A's POST is still open
        assert worker_a.is_alive()
        assert jobs.of(short_lease_app)._claim() == []  # worker B: nothing to take
    finally:
        worker_a.join(30)
    assert len(recipient.bundles) == 1
    with short_lease_app.extensions["coordination"].repo.engine.connect() as conn:
        assert conn.scalar(select(connector_job.c.status)) == "done"
