"""Slow or failing outside parties (issue 17): a subscriber that hangs, answers 500 or resets the
connection never holds up the other subscribers, never blocks intake, and loses nothing.

The bound checked here is the documented one (docs/operations.md): with fewer hanging origins than
concurrency / per_origin, a healthy endpoint gets its notification within a poll interval plus its own
send, however long the hanging ones take (their read timeout is set to 60 s here, far beyond).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import requests
from flask import Flask

from coordination_api.jobs import enqueue
from tests.conftest import Fhir
from tests.subscriptions.slow import (
    BOUND,
    SLOW,
    Troubled,
    numbers,
    subscribe,
    wait_for,
)
from tests.support.subscriptions import encounter


def test_hanging_endpoints_do_not_delay_a_healthy_one(
    sub_fhir: Fhir, running: Callable[[], None], troubled: Callable[[], Troubled]
) -> None:
    running()
    hanging = troubled()
    healthy = troubled()
    # Several subscriptions on the hanging origin (one practice application, many patients): they
    # share its per-origin share of the pool.
    for path in ("a", "b", "c"):
        subscribe(sub_fhir, f"{hanging.url}/{path}")
    subscribe(sub_fhir, healthy.url)
    hanging.mode = "hang"
    for index in range(6):
        started = time.monotonic()
        sub_fhir.create(encounter())
        assert time.monotonic() - started < BOUND, "intake waited on a subscriber"
        took = wait_for(lambda n=index + 1: len(numbers(healthy)) == n, BOUND, f"event {index + 1}")
        assert took < BOUND
    assert numbers(healthy) == [1, 2, 3, 4, 5, 6]
    assert 1 <= hanging.hanging <= SLOW.per_origin  # the hanging origin holds only its share
    # The endpoint recovers: every event reaches every subscription, in order, none lost.
    hanging.mode = "ok"
    hanging.release.set()

    def per_path() -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for note in hanging.of_kind("event-notification"):
            for event in note.status["notification-event"]:
                out.setdefault(note.path, []).append(int(event["event-number"]))
        return out

    expected = {f"/hook/{p}": [1, 2, 3, 4, 5, 6] for p in ("a", "b", "c")}
    wait_for(lambda: per_path() == expected, 15, "the hanging endpoint catches up")


def test_failing_and_resetting_endpoints_lose_nothing(
    sub_fhir: Fhir, running: Callable[[], None], troubled: Callable[[], Troubled]
) -> None:
    running()
    failing, resetting, healthy = troubled(), troubled(), troubled()
    for receiver in (failing, resetting, healthy):
        subscribe(sub_fhir, receiver.url)
    failing.mode, resetting.mode = "fail", "reset"
    for index in range(5):
        sub_fhir.create(encounter())
        wait_for(lambda n=index + 1: len(numbers(healthy)) == n, BOUND, f"event {index + 1}")
    assert numbers(failing) == numbers(resetting) == []
    failing.mode = resetting.mode = "ok"  # they come back: the retries (FAST backoff) deliver all
    wait_for(lambda: numbers(failing) == [1, 2, 3, 4, 5], 15, "failing endpoint catches up")
    wait_for(lambda: numbers(resetting) == [1, 2, 3, 4, 5], 15, "resetting endpoint catches up")
    assert numbers(healthy) == [1, 2, 3, 4, 5]


def test_a_slow_connector_job_does_not_delay_notifications(
    sub_app: Flask, sub_fhir: Fhir, running: Callable[[], None], troubled: Callable[[], Troubled]
) -> None:
    """Connector jobs (DMP, e-parcours, directory) run in their own lane of the worker."""
    jobs = sub_app.extensions["jobs"]
    slow_service = troubled()
    slow_service.mode = "hang"
    calls: list[float] = []

    def call_slow_service(_app: Flask, _payload: dict[str, Any]) -> None:
        calls.append(time.monotonic())
        with contextlib.suppress(requests.RequestException):
            requests.post(slow_service.url, json={}, timeout=(1, 20))

    jobs.handlers["test-slow-service"] = call_slow_service
    try:
        healthy = troubled()
        running()
        subscribe(sub_fhir, healthy.url)
        repo = sub_app.extensions["coordination"].repo

        with repo.writing() as conn:
            enqueue(conn, "test-slow-service", {})
        wait_for(lambda: slow_service.hanging == 1, BOUND, "the slow job started")
        for index in range(3):
            sub_fhir.create(encounter())
            wait_for(lambda n=index + 1: len(numbers(healthy)) == n, BOUND, f"event {index + 1}")
    finally:
        slow_service.release.set()
        jobs.handlers.pop("test-slow-service", None)
