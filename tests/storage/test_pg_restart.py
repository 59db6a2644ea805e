"""PostgreSQL restarted under load (issue 17): during the outage every answer is a success or a quick
503 with Retry-After (never a 500, never a hang); a write succeeds again within 5 s of the database
coming back; every acknowledged write is there afterwards and no write is half-stored.

The cluster is our own (tests/pgcluster.py), never the shared one on port 5432."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import pytest
from sqlalchemy import func, select

from coordination_api import jobs
from coordination_api.app import create_app
from coordination_api.config import DatabaseTimeouts, Settings
from coordination_api.storage.migrate import upgrade
from coordination_api.storage.schema import resource, resource_history
from coordination_api.subscriptions.worker import start_in_thread
from tests.conftest import authed, close_app
from tests.pgcluster import pg_cluster

DOWN_SECONDS = 2.0
RECOVERY_SECONDS = 5.0  # issue 17: recovered within 5 s of the database coming back
CONNECT_TIMEOUT = 2.0


@dataclass
class Attempt:
    started: float
    elapsed: float
    status: int
    retry_after: str | None
    codes: list[str]
    family: str
    res_id: str | None


@pytest.mark.parametrize("mode", ["fast", "immediate"])  # a clean shutdown, and a crash (WAL recovery)
def test_postgresql_restart_under_load_loses_no_acknowledged_write(mode: str) -> None:
    with pg_cluster() as cluster:
        settings = Settings(
            database_url=cluster.url,
            audit_reads="sync",
            db_pool_size=4,
            db_timeouts=DatabaseTimeouts(connect=CONNECT_TIMEOUT),
        )
        app = create_app(settings)
        app.config["TESTING"] = True
        upgrade(app.extensions["coordination"].repo.engine)
        authorization = authed(app.test_client()).environ_base["HTTP_AUTHORIZATION"]
        attempts: list[Attempt] = []
        stop = threading.Event()

        def write(worker: int) -> None:
            client = app.test_client()
            client.environ_base["HTTP_AUTHORIZATION"] = authorization
            n = 0
            while not stop.is_set():
                family = f"Restart{worker}x{n}"
                body = {"resourceType": "Patient", "name": [{"family": family}]}
                started = time.monotonic()
                headers = {"Content-Type": "application/fhir+json"}
                response = client.post("/fhir/Patient", data=orjson.dumps(body), headers=headers)
                outcome = response.get_json() or {}
                attempts.append(
                    Attempt(
                        started,
                        time.monotonic() - started,
                        response.status_code,
                        response.headers.get("Retry-After"),
                        [issue.get("code") for issue in outcome.get("issue", [])],
                        family,
                        outcome.get("id") if response.status_code == 201 else None,
                    )
                )
                n += 1
                time.sleep(0.02)

        reads: list[Attempt] = []
        first = app.test_client()
        first.environ_base["HTTP_AUTHORIZATION"] = authorization
        known = first.post("/fhir/Patient", json={"resourceType": "Patient"})
        assert known.status_code == 201

        def keep_reading() -> None:
            # Reads take the raw-connection path (storage.engine.open_reader) and are audited.
            client = app.test_client()
            client.environ_base["HTTP_AUTHORIZATION"] = authorization
            urls = [f"/fhir/Patient/{known.get_json()['id']}", "/fhir/Patient?_count=5"]
            n = 0
            while not stop.is_set():
                started = time.monotonic()
                response = client.get(urls[n % 2])
                outcome = response.get_json() or {}
                codes = [issue.get("code") for issue in outcome.get("issue", [])]
                retry_after = response.headers.get("Retry-After")
                elapsed = time.monotonic() - started
                reads.append(Attempt(started, elapsed, response.status_code, retry_after, codes, "", None))
                n += 1
                time.sleep(0.02)

        writers = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(2)]
        writers.append(threading.Thread(target=keep_reading, daemon=True))
        try:
            for thread in writers:
                thread.start()
            time.sleep(1.5)
            cluster.stop(mode)
            time.sleep(DOWN_SECONDS)
            cluster.start()
            up = time.monotonic()
            time.sleep(RECOVERY_SECONDS + 1)
        finally:
            stop.set()
            for thread in writers:
                thread.join(30)
        assert not any(thread.is_alive() for thread in writers), "a request hung"

        print(  # shown with -s: what the run saw
            f"{mode}: {len(attempts)} writes, {sum(a.status == 201 for a in attempts)} acknowledged, "
            f"{sum(a.status == 503 for a in attempts)} refused (503), slowest "
            f"{max(a.elapsed for a in attempts):.2f} s; {len(reads)} reads, "
            f"{sum(a.status == 503 for a in reads)} refused"
        )
        try:
            # Every answer: 201, or a quick 503 transient with Retry-After; never a 500.
            assert {a.status for a in attempts} <= {201, 503}, sorted({a.status for a in attempts})
            refused = [a for a in attempts if a.status == 503]
            assert refused, "the outage was not seen: no request was refused"
            for a in refused:
                assert a.retry_after is not None and int(a.retry_after) >= 1
                assert a.codes == ["transient"], a.codes
                assert a.elapsed < CONNECT_TIMEOUT + 3, f"a refusal took {a.elapsed:.1f} s"

            # Reads too: 200, or a quick 503 transient with Retry-After.
            assert {a.status for a in reads} <= {200, 503}, sorted({a.status for a in reads})
            assert any(a.status == 503 for a in reads)
            for a in reads:
                if a.status == 503:
                    assert a.retry_after is not None and a.codes == ["transient"], a
                    assert a.elapsed < CONNECT_TIMEOUT + 3, f"a refused read took {a.elapsed:.1f} s"
            assert [a.status for a in reads if a.started >= up + RECOVERY_SECONDS] == [
                200 for a in reads if a.started >= up + RECOVERY_SECONDS
            ]

            # Recovered: a write started after the restart succeeded within 5 s of it.
            after = [a for a in attempts if a.started >= up and a.status == 201]
            assert after, "no write succeeded after the restart"
            assert after[0].started + after[0].elapsed - up <= RECOVERY_SECONDS
            assert [a.status for a in attempts if a.started >= up + RECOVERY_SECONDS] == [
                201 for a in attempts if a.started >= up + RECOVERY_SECONDS
            ]

            # Every acknowledged write is readable, as written.
            reader = app.test_client()
            reader.environ_base["HTTP_AUTHORIZATION"] = authorization
            acknowledged = [a for a in attempts if a.status == 201]
            for a in acknowledged:
                read = reader.get(f"/fhir/Patient/{a.res_id}")
                assert read.status_code == 200, (a, read.get_json())
                assert read.get_json()["name"][0]["family"] == a.family

            # Nothing half-stored: every stored Patient has its one history row and is found by search
            # (search reads the index rows); a refused write may have committed, but only whole.
            engine = app.extensions["coordination"].repo.engine
            with engine.connect() as conn:
                stored = set(conn.scalars(select(resource.c.res_id).where(resource.c.res_type == "Patient")))
                histories = dict(
                    conn.execute(
                        select(resource.c.res_id, func.count())
                        .join(resource_history, resource_history.c.res_pk == resource.c.pk)
                        .where(resource.c.res_type == "Patient")
                        .group_by(resource.c.res_id)
                    ).all()
                )
            assert {a.res_id for a in acknowledged} <= stored
            assert histories == dict.fromkeys(stored, 1)
            found = reader.get("/fhir/Patient?_count=1000&_elements=id").get_json()
            assert {e["resource"]["id"] for e in found.get("entry", [])} == stored
        finally:
            close_app(app)


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_the_worker_loop_survives_a_database_restart_and_runs_the_jobs_due_meanwhile() -> None:
    """The delivery worker's loop (subscriptions, dispatch timers, connector jobs, exports) logs a
    failed pass, waits and goes on; it never exits because the database went away."""
    with pg_cluster() as cluster:
        settings = Settings(database_url=cluster.url, db_timeouts=DatabaseTimeouts(connect=CONNECT_TIMEOUT))
        app = create_app(settings)
        engine = app.extensions["coordination"].repo.engine
        upgrade(engine)
        ran: list[str] = []
        jobs.register(app, "test-outage", lambda _app, payload: ran.append(payload["name"]))

        def enqueue(name: str, delay_s: float = 0.0) -> None:
            with engine.begin() as conn:
                jobs.enqueue(conn, "test-outage", {"name": name}, delay_s=delay_s)

        thread, stop = start_in_thread(app)
        try:
            enqueue("before")
            assert _wait_for(lambda: "before" in ran, 10), "the worker did not run a job"
            enqueue("due-during-the-outage", delay_s=1.0)
            cluster.stop("fast")
            time.sleep(DOWN_SECONDS + 1)  # several failed passes
            assert thread.is_alive(), "the worker loop exited during the outage"
            cluster.start()
            assert _wait_for(lambda: "due-during-the-outage" in ran, RECOVERY_SECONDS + 5), ran
            enqueue("after")
            assert _wait_for(lambda: "after" in ran, 10), ran
            assert thread.is_alive()
            assert ran == ["before", "due-during-the-outage", "after"]
        finally:
            stop.set()
            thread.join(30)
            close_app(app)
