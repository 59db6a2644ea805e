"""Each outbox the worker serves rings its lane (coordination_api/outbox/doorbell.py): a connector job due
now and a Bulk Data export kick-off start within seconds, though the worker polls once a minute."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from coordination_api import jobs
from coordination_api.app import create_app
from coordination_api.config import ExportSettings, Settings, SubscriptionSettings
from coordination_api.storage.migrate import upgrade
from coordination_api.subscriptions import worker_loop
from tests.conftest import _truncate, authed, close_app

IDLE = replace(SubscriptionSettings(), poll_interval=60.0)  # any poll comes far too late for BOUND
BOUND = 10.0  # seconds
KIND = "doorbell-test"


@pytest.fixture(scope="module")
def lanes_app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    directory: Path = tmp_path_factory.mktemp("doorbell-exports")
    export = ExportSettings(directory=str(directory), settle=0.0)
    app = create_app(
        Settings(database_url=database_url, audit_reads="sync", export=export, subscriptions=IDLE)
    )
    app.config["TESTING"] = True
    upgrade(app.extensions["coordination"].repo.engine)
    ran: list[dict[str, Any]] = []
    app.extensions["doorbell-test-ran"] = ran
    jobs.register(app, KIND, lambda _app, payload: ran.append(payload))
    yield app
    close_app(app)


@pytest.fixture
def running(lanes_app: Flask) -> Iterator[FlaskClient]:
    """A real worker loop on the app (polling once a minute), and an authorised client."""
    _truncate(lanes_app)
    stop = threading.Event()
    thread = threading.Thread(target=worker_loop, args=(lanes_app, stop), daemon=True)
    thread.start()
    yield authed(lanes_app.test_client())
    stop.set()
    thread.join(30)
    assert not thread.is_alive()


def within(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {BOUND} s"
        time.sleep(0.02)


def test_a_connector_job_due_now_wakes_the_jobs_lane(lanes_app: Flask, running: FlaskClient) -> None:
    ran: list[dict[str, Any]] = lanes_app.extensions["doorbell-test-ran"]
    ran.clear()
    repo = lanes_app.extensions["coordination"].repo
    for n in (1, 2):  # the second one finds the lane idle: only the ring can start it
        with repo.writing() as conn:
            assert jobs.enqueue(conn, KIND, {"n": n})
        within(lambda n=n: {"n": n} in ran, f"job {n}")


def test_an_export_kick_off_wakes_the_export_lane(running: FlaskClient) -> None:
    for _ in range(2):
        answer = running.get(
            "/fhir/$export", headers={"Prefer": "respond-async", "Accept": "application/fhir+json"}
        )
        assert answer.status_code == 202, answer.get_json()
        status = answer.headers["Content-Location"].split("/fhir", 1)[1]
        within(lambda status=status: running.get("/fhir" + status).status_code == 200, "the export")
