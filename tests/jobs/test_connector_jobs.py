"""The connector-jobs outbox: dedup of pending keys, retries with backoff, dead-letter, leases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import delete, select, update

from connectors.errors import ConnectorError, Failure
from coordination_api import jobs
from coordination_api.cli import main
from coordination_api.jobs import JobError, enqueue
from coordination_api.storage.schema import connector_job as j


@pytest.fixture
def runner(app: Flask) -> Iterator[jobs.Jobs]:
    runner = jobs.of(app)
    saved = dict(runner.handlers)
    runner.handlers.clear()
    with runner.repo.writing() as conn:
        conn.execute(delete(j))
    yield runner
    runner.handlers.clear()
    runner.handlers.update(saved)
    with runner.repo.writing() as conn:
        conn.execute(delete(j))


def _rows(runner: jobs.Jobs) -> list[Any]:
    with runner.repo.engine.connect() as conn:
        return list(conn.execute(select(j).order_by(j.c.pk)).all())


def _due_now(runner: jobs.Jobs) -> None:
    with runner.repo.writing() as conn:
        conn.execute(update(j).values(next_attempt_us=0))


def test_a_pending_key_is_enqueued_once_and_again_after_it_ran(app: Flask, runner: jobs.Jobs) -> None:
    seen: list[dict[str, Any]] = []
    runner.register("t-echo", lambda _app, payload: seen.append(payload))
    with runner.repo.writing() as conn:
        assert enqueue(conn, "t-echo", {"n": 1}, key="k")
        assert not enqueue(conn, "t-echo", {"n": 2}, key="k")
        assert enqueue(conn, "t-echo", {"n": 3})
    assert jobs.run_due(app) == 2
    assert seen == [{"n": 1}, {"n": 3}]
    assert [r.status for r in _rows(runner)] == ["done", "done"]
    with runner.repo.writing() as conn:
        assert enqueue(conn, "t-echo", {"n": 4}, key="k")  # a finished job never blocks a new one


def test_a_retryable_failure_backs_off_then_succeeds(app: Flask, runner: jobs.Jobs) -> None:
    calls: list[int] = []

    def flaky(_app: Flask, _payload: dict[str, Any]) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectorError("test-service", Failure.UNAVAILABLE, "answered HTTP 503", status=503)

    runner.register("t-flaky", flaky)
    with runner.repo.writing() as conn:
        enqueue(conn, "t-flaky", {})
    assert jobs.run_due(app) == 1
    row = _rows(runner)[0]
    assert row.status == "pending" and row.attempts == 1 and "503" in row.last_error
    assert jobs.run_due(app) == 0  # not due yet: backoff
    _due_now(runner)
    jobs.run_due(app)
    _due_now(runner)
    jobs.run_due(app)
    row = _rows(runner)[0]
    assert (row.status, row.attempts, len(calls)) == ("done", 3, 3)


def test_refusals_and_exhausted_retries_end_in_the_dead_letter(app: Flask, runner: jobs.Jobs) -> None:
    def refused(_app: Flask, _payload: dict[str, Any]) -> None:
        raise ConnectorError("test-service", Failure.REFUSED, "answered HTTP 400", status=400)

    def timeout(_app: Flask, _payload: dict[str, Any]) -> None:
        raise ConnectorError("test-service", Failure.TIMEOUT, "POST timed out")

    def broken(_app: Flask, _payload: dict[str, Any]) -> None:
        raise JobError("the document has no content")

    for kind, handler in (("t-refused", refused), ("t-timeout", timeout), ("t-broken", broken)):
        runner.register(kind, handler)
        with runner.repo.writing() as conn:
            enqueue(conn, kind, {})
    for _ in range(runner.settings.max_attempts):
        jobs.run_due(app)
        _due_now(runner)
    rows = {r.kind: r for r in _rows(runner)}
    assert rows["t-refused"].status == "dead" and rows["t-refused"].attempts == 1
    assert rows["t-broken"].status == "dead" and "no content" in rows["t-broken"].last_error
    assert rows["t-timeout"].status == "dead"
    assert rows["t-timeout"].attempts == runner.settings.max_attempts

    result = app.test_cli_runner().invoke(main, args=["jobs", "list", "--status", "dead", "--json"])
    assert result.exit_code == 0, result.output
    assert {r["kind"] for r in __import__("json").loads(result.output)} == {
        "t-refused",
        "t-timeout",
        "t-broken",
    }
    result = app.test_cli_runner().invoke(main, args=["jobs", "retry"])
    assert "3 job(s) queued again" in result.output
    assert {r.status for r in _rows(runner)} == {"pending"}


def test_a_crashed_workers_claim_expires_and_unknown_kinds_wait(app: Flask, runner: jobs.Jobs) -> None:
    seen: list[int] = []
    runner.register("t-once", lambda _app, _payload: seen.append(1))
    with runner.repo.writing() as conn:
        enqueue(conn, "t-once", {})
        enqueue(conn, "t-other-process", {})  # no handler here: left for a process that knows it
    claimed = runner._claim()  # a worker claims, then dies before running it
    assert len(claimed) == 1
    assert jobs.run_due(app) == 0  # leased
    with runner.repo.writing() as conn:
        conn.execute(update(j).where(j.c.kind == "t-once").values(lease_until=1))
    assert jobs.run_due(app) == 1 and seen == [1]
    statuses = {r.kind: r.status for r in _rows(runner)}
    assert statuses == {"t-once": "done", "t-other-process": "pending"}
