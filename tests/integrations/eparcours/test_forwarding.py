"""Forwarding to a regional e-parcours platform over mutual TLS, through the connector-jobs outbox,
against a real local HTTPS server that requires our client certificate."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask
from sqlalchemy import select

from coordination_api import jobs
from coordination_api.app import create_app
from coordination_api.config import EparcoursSettings, JobSettings, Settings
from coordination_api.integrations.eparcours import FORWARD
from coordination_api.storage.schema import connector_job
from tests.conftest import Fhir, _truncate, authed, close_app
from tests.factories import consent
from tests.support.eparcours import Platform, platform
from tests.support.pki import Pki, make_pki

__all__ = ["platform"]  # module fixture: the platform server

PATIENT = {"resourceType": "Patient", "name": [{"family": "Martin", "given": ["Paul"]}], "gender": "male"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _app(database_url: str, eparcours: EparcoursSettings) -> Flask:
    settings = Settings(
        database_url=database_url,
        audit_reads="sync",
        public_base_url="https://cpts.example/fhir",
        eparcours=eparcours,
        jobs=JobSettings(retry_base=0.01, retry_cap=0.05, max_attempts=3),
    )
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


def _settings(
    platform: Platform, pki: Pki, *, cert: Path | None = None, key: Path | None = None
) -> EparcoursSettings:
    return EparcoursSettings(
        url=platform.url,
        client_cert=str(cert or pki.client_cert),
        client_key=str(key or pki.client_key),
        ca_file=str(pki.ca),
        connect_timeout=2.0,
        read_timeout=3.0,
    )


@pytest.fixture
def forwarding(database_url: str, app: Flask, platform: Platform, pki: Pki) -> Iterator[Flask]:
    # ``app`` (the session fixture) has migrated the database; this one shares it.
    forwarding_app = _app(database_url, _settings(platform, pki))
    _truncate(forwarding_app)
    platform.received.clear()
    platform.peers.clear()
    platform.answer, platform.body = 200, b""
    yield forwarding_app
    close_app(forwarding_app)


def _job_rows(app: Flask) -> list[Any]:
    with app.extensions["coordination"].repo.engine.connect() as conn:
        return list(conn.execute(select(connector_job).order_by(connector_job.c.pk)).all())


def _run_all(app: Flask) -> None:
    for _ in range(10):
        if not jobs.run_due(app):
            return


def test_encounter_and_careplan_versions_travel_as_messages_over_mutual_tls(
    forwarding: Flask, platform: Platform
) -> None:
    fhir = Fhir(authed(forwarding.test_client()))
    patient = fhir.create(PATIENT)
    encounter = fhir.create(
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": f"Patient/{patient['id']}"},
        }
    )
    plan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": f"Patient/{patient['id']}"},
    }
    created = fhir.create(plan)
    fhir.request(
        "PUT", f"/fhir/CarePlan/{created['id']}", {**plan, "id": created["id"], "status": "completed"}
    )
    assert len(_job_rows(forwarding)) == 3  # queued in the writes' transactions
    _run_all(forwarding)

    assert {r.status for r in _job_rows(forwarding)} == {"done"}
    assert set(platform.peers) == {"coordination-cpts-test"}  # our client certificate
    messages = platform.received
    foci = [
        (m["entry"][1]["resource"]["resourceType"], m["entry"][1]["resource"]["meta"]["versionId"])
        for m in messages
    ]
    assert sorted(foci) == [("CarePlan", "1"), ("CarePlan", "2"), ("Encounter", "1")]
    first = next(m for m in messages if m["entry"][1]["resource"]["resourceType"] == "Encounter")
    header = first["entry"][0]["resource"]
    assert first["type"] == "message" and header["resourceType"] == "MessageHeader"
    assert header["eventCoding"]["code"] == "encounter-change"
    assert header["focus"] == [{"reference": f"https://cpts.example/fhir/Encounter/{encounter['id']}"}]
    assert first["entry"][2]["resource"]["id"] == patient["id"]  # the subject travels with it
    assert len({m["id"] for m in messages}) == 3  # one message id per version


def test_platform_down_or_refusing_our_certificate_is_retried_never_lost(
    database_url: str, app: Flask, platform: Platform, pki: Pki
) -> None:
    stranger = _app(database_url, _settings(platform, pki, cert=pki.stranger_cert, key=pki.stranger_key))
    try:
        _truncate(stranger)
        platform.received.clear()
        fhir = Fhir(authed(stranger.test_client()))
        fhir.create(
            {
                "resourceType": "CarePlan",
                "status": "active",
                "intent": "plan",
                "subject": {"reference": "Patient/x"},
            }
        )
        assert jobs.run_due(stranger) == 1
        (row,) = _job_rows(stranger)
        assert row.status == "pending" and row.attempts == 1  # TLS refused: kept for a retry
        assert "e-parcours" in row.last_error and platform.received == []
    finally:
        close_app(stranger)
    # The operator installs the right certificate: the same job goes out, once.
    fixed = _app(database_url, _settings(platform, pki))
    try:
        with fixed.extensions["coordination"].repo.writing() as conn:
            conn.execute(connector_job.update().values(next_attempt_us=0))
        _run_all(fixed)
        (row,) = _job_rows(fixed)
        assert row.status == "done" and len(platform.received) == 1
    finally:
        close_app(fixed)


def test_a_fatal_answer_ends_in_the_dead_letter_and_a_transient_one_is_retried(
    forwarding: Flask, platform: Platform
) -> None:
    fhir = Fhir(authed(forwarding.test_client()))
    platform.answer = 400
    fhir.create(
        {
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": "Patient/x"},
        }
    )
    _run_all(forwarding)
    assert [(r.status, r.attempts) for r in _job_rows(forwarding)] == [("dead", 1)]

    platform.answer = 200
    platform.body = orjson.dumps(
        {
            "resourceType": "Bundle",
            "type": "message",
            "entry": [
                {"resource": {"resourceType": "MessageHeader", "response": {"code": "transient-error"}}}
            ],
        }
    )
    fhir.create(
        {
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": "Patient/y"},
        }
    )
    jobs.run_due(forwarding)
    assert _job_rows(forwarding)[-1].status == "pending"  # a 200 that says transient-error: again later


def test_objecting_patients_deleted_resources_and_other_types_are_not_forwarded(
    forwarding: Flask, platform: Platform
) -> None:
    fhir = Fhir(authed(forwarding.test_client()))
    patient = fhir.create(PATIENT)
    fhir.create(consent(f"Patient/{patient['id']}", {"type": "deny"}))
    plan = fhir.create(
        {
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": f"Patient/{patient['id']}"},
        }
    )
    fhir.request("DELETE", f"/fhir/CarePlan/{plan['id']}")
    fhir.create({"resourceType": "Observation", "status": "final", "code": {"text": "poids"}})
    rows = _job_rows(forwarding)
    assert len(rows) == 1  # the CarePlan's version 1 only: no deletion, no Observation
    _run_all(forwarding)
    assert [r.status for r in _job_rows(forwarding)] == ["done"]
    assert platform.received == []  # the patient objects to sharing with everyone


def test_nothing_is_queued_when_no_platform_is_configured(app: Flask, fhir: Fhir) -> None:
    fhir.create(
        {
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": "Patient/x"},
        }
    )
    assert _job_rows(app) == []


def test_a_job_left_when_the_platform_is_unconfigured_dies_saying_so(app: Flask) -> None:
    """Issue 19: the Null platform never reports success; a forward queued while a platform was
    configured, run by a worker that has none, ends dead with the reason (``coordination jobs retry``
    once it is configured again), not ``done``."""
    _truncate(app)
    with app.extensions["coordination"].repo.writing() as conn:
        jobs.enqueue(conn, FORWARD, {"type": "CarePlan", "id": "gone", "version": 1})
    jobs.run_due(app)
    (row,) = [r for r in _job_rows(app) if r.kind == FORWARD]
    assert row.status == "dead" and "e-parcours connector not configured" in row.last_error


def test_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "COORDINATION_EPARCOURS_URL": "https://eparcours.example/fhir/$process-message",
            "COORDINATION_EPARCOURS_CLIENT_CERT": "/run/secrets/cert.pem",
            "COORDINATION_EPARCOURS_CLIENT_KEY": "/run/secrets/key.pem",
            "COORDINATION_EPARCOURS_TYPES": "Encounter CarePlan Task",
        }
    )
    assert settings.eparcours.types == ("Encounter", "CarePlan", "Task")
    assert replace(settings.eparcours, types=()).client_key == "/run/secrets/key.pem"
