"""The worker is woken by the write, not by its poll (issue 21; coordination_api/outbox/doorbell.py).

Every worker here polls once a minute: a notification that arrives within seconds was woken by the
write that made it. The bounds are generous (a loaded CI machine), they never decide between poll and
doorbell by a few milliseconds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from coordination_api.app import create_app
from coordination_api.config import Settings
from coordination_api.outbox import doorbell
from coordination_api.storage.migrate import upgrade
from coordination_api.storage.schema import subscription_outbox, worker_heartbeat
from coordination_api.subscriptions import worker_loop
from tests.conftest import Fhir, authed, close_app
from tests.subscriptions.conftest import FAST, Receiver
from tests.subscriptions.slow import wait_for
from tests.support.subscriptions import classic, encounter

LANE = doorbell.NOTIFICATIONS
IDLE = replace(FAST, poll_interval=60.0)  # a poll would come far too late for any bound below
BOUND = 10.0  # seconds: a woken worker takes milliseconds; a polling one a minute


@pytest.fixture
def worker(sub_app: Flask) -> Iterator[Callable[[Flask], None]]:
    """Start the real worker loop on an app (its lanes, its doorbell), stopped after the test."""
    stops: list[tuple[threading.Thread, threading.Event]] = []

    def start(app: Flask) -> None:
        app.extensions["subscriptions"].config = IDLE
        stop = threading.Event()
        thread = threading.Thread(target=worker_loop, args=(app, stop), daemon=True)
        thread.start()
        stops.append((thread, stop))

    yield start
    for thread, stop in stops:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the worker did not stop when asked"
    sub_app.extensions["subscriptions"].config = FAST


def notified(receiver: Receiver) -> int:
    return len(receiver.of_kind("event-notification"))


def subscribe(fhir: Fhir, receiver: Receiver) -> None:
    sub = fhir.create(classic(receiver.url))
    wait_for(
        lambda: fhir.request("GET", f"/fhir/Subscription/{sub['id']}").get_json()["status"] == "active",
        BOUND,
        "the handshake, woken by the new Subscription",
    )


def discharges_arrive_one_by_one(fhir: Fhir, receiver: Receiver, count: int) -> None:
    """Each discharge waits for the previous one's notification: the worker is idle when each is
    written, so each one has to wake it."""
    for n in range(1, count + 1):
        fhir.create(encounter("finished"))
        wait_for(lambda n=n: notified(receiver) == n, BOUND, f"notification {n}")


def test_a_discharge_wakes_the_idle_worker(
    sub_app: Flask, sub_fhir: Fhir, receiver: Receiver, worker: Callable[[Flask], None]
) -> None:
    worker(sub_app)
    subscribe(sub_fhir, receiver)
    discharges_arrive_one_by_one(sub_fhir, receiver, 3)


def test_stopping_the_worker_does_not_wait_for_its_poll(sub_app: Flask, sub_fhir: Fhir) -> None:
    sub_app.extensions["subscriptions"].config = IDLE
    stop = threading.Event()
    thread = threading.Thread(target=worker_loop, args=(sub_app, stop), daemon=True)
    thread.start()
    try:
        wait_for(lambda: not thread.is_alive() or _idle(sub_app), BOUND, "the worker's first pass")
        stop.set()
        thread.join(BOUND)
        assert not thread.is_alive(), "the worker waited for its poll instead of stopping"
    finally:
        stop.set()
        sub_app.extensions["subscriptions"].config = FAST


def _idle(app: Flask) -> bool:
    """The worker has written its heartbeat (health.WorkerHeartbeat): its first pass ran."""
    engine = app.extensions["coordination"].repo.engine
    with engine.connect() as conn:
        return bool(conn.scalar(select(func.count()).select_from(worker_heartbeat)))


def _rolled_back_discharge(fhir: Fhir) -> int:
    """A transaction whose matching Encounter is written (its outbox row added) before a later entry
    fails with 412: everything rolls back."""
    other = fhir.create(encounter("in-progress", patient="p2"))
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": encounter("finished"), "request": {"method": "POST", "url": "Encounter"}},
            {
                "resource": {**other, "status": "cancelled"},
                "request": {"method": "PUT", "url": f"Encounter/{other['id']}", "ifMatch": 'W/"99"'},
            },
        ],
    }
    answer = fhir.request("POST", "/fhir", bundle)
    return int(answer.status_code)


def rings_on_commit_only(app: Flask, fhir: Fhir, receiver: Receiver) -> None:
    engine = app.extensions["coordination"].repo.engine
    fhir.create(classic(receiver.url))  # collecting from now on (its handshake is not needed here)
    bell = doorbell.of(engine)
    ticket = bell.ticket(LANE)
    bell.listen()  # as the worker does
    try:
        assert bell.wait(LANE, ticket, BOUND), "listening starts with one wake-up (rows written before)"
        ticket = bell.ticket(LANE)
        assert _rolled_back_discharge(fhir) == 412
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(subscription_outbox)) == 0
        # A ring would arrive in milliseconds; a second without one is the rollback's silence.
        assert not bell.wait(LANE, ticket, 1.0), "a rolled-back write rang the doorbell"
        fhir.create(encounter("finished"))
        assert bell.wait(LANE, ticket, BOUND), "the committed write did not ring"
    finally:
        bell.close()


def test_a_rolled_back_write_does_not_ring(sub_app: Flask, sub_fhir: Fhir, receiver: Receiver) -> None:
    rings_on_commit_only(sub_app, sub_fhir, receiver)


def test_the_worker_survives_its_listening_connection_being_killed(
    sub_app: Flask, sub_fhir: Fhir, receiver: Receiver, worker: Callable[[Flask], None], backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("LISTEN/NOTIFY: PostgreSQL")
    engine = sub_app.extensions["coordination"].repo.engine
    with engine.connect() as conn:
        channel = doorbell.channel(conn)

    def listener() -> int | None:
        with engine.connect() as conn:
            pid = conn.scalar(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = :c"), {"c": channel}
            )
            return int(pid) if pid is not None else None

    worker(sub_app)
    subscribe(sub_fhir, receiver)
    discharges_arrive_one_by_one(sub_fhir, receiver, 1)
    killed = listener()
    assert killed is not None, "the worker holds no listening connection"
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT pg_terminate_backend(:p)"), {"p": killed})
    wait_for(lambda: listener() not in (None, killed), BOUND, "the listening connection back")
    for n in (2, 3):  # woken through the new connection (the poll is a minute away)
        sub_fhir.create(encounter("finished"))
        wait_for(lambda n=n: notified(receiver) == n, BOUND, f"notification {n}")


@pytest.fixture
def memory_app() -> Iterator[Flask]:
    """An app on in-memory SQLite (`make run` without a database file): one process, one connection."""
    app = create_app(Settings(database_url="sqlite://", audit_reads="sync"))
    app.config["TESTING"] = True
    upgrade(app.extensions["coordination"].repo.engine)
    yield app
    close_app(app)


def test_in_memory_sqlite_rings_in_process_on_commit_only(memory_app: Flask, receiver: Receiver) -> None:
    # (No worker thread here: the in-memory database is one connection shared by every thread.)
    rings_on_commit_only(memory_app, Fhir(authed(memory_app.test_client())), receiver)
