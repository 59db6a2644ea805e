"""Connector jobs: the outbox of calls to outside services (ARCHITECTURE.md "one write").

A write that promises an outside call (push a document to the DMP, enrich a Practitioner from the
directory…) enqueues a job in its own transaction; the delivery worker runs it later, retries with
exponential backoff when the service is down or slow (``ConnectorError.retryable``), and ends it
``dead`` with its reason when it cannot succeed (the dead-letter, listed by `coordination jobs list`).
Nothing promised is lost: a crashed worker's claim expires after the lease and another one runs it
(at least once: handlers are idempotent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from connectors.errors import ConnectorError
from coordination_api import metrics
from coordination_api.config import JobSettings
from coordination_api.outbox import US, Queue, RetryPolicy, claiming, doorbell, lease_end
from coordination_api.storage.repository import Repository, now_us
from coordination_api.storage.schema import connector_job

log = logging.getLogger(__name__)
_PENDING = connector_job.c.status == "pending"
QUEUE = Queue(connector_job, attempts="attempts", due="next_attempt_us")

Handler = Callable[[Flask, dict[str, Any]], None]


class JobError(Exception):
    """A handler's own failure: ``retry`` says whether running it again may succeed."""

    def __init__(self, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


def enqueue(
    conn: Connection, kind: str, payload: dict[str, Any], *, key: str | None = None, delay_s: float = 0.0
) -> bool:
    """Add a job inside the caller's transaction; with ``key``, not if the same one is already pending.

    Returns whether a job was added.
    """
    now = now_us()
    values = {
        "kind": kind,
        "job_key": key,
        "payload": orjson.dumps(payload).decode(),
        "status": "pending",
        "attempts": 0,
        "created_us": now,
        "next_attempt_us": now + int(delay_s * US),
    }
    dialect = conn.dialect.name
    if key is None or dialect not in {"postgresql", "sqlite"}:
        conn.execute(connector_job.insert().values(**values))
        added = True
    else:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = (
            insert(connector_job)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["kind", "job_key"], index_where=_PENDING)
            .returning(connector_job.c.pk)
        )
        added = conn.execute(stmt).first() is not None
    if added and delay_s <= 0:
        # Due now: wake the worker once this commits (a delayed job is found by a poll).
        doorbell.ring(conn, doorbell.JOBS)
    return added


class Jobs:
    """The job kinds this process can run, and the runner the worker loop calls."""

    def __init__(self, repo: Repository, settings: JobSettings) -> None:
        self.repo = repo
        self.settings = settings
        self.handlers: dict[str, Handler] = {}
        s = settings
        self.retry = RetryPolicy(s.retry_base, s.retry_cap, s.retry_jitter, max_attempts=s.max_attempts)

    def register(self, kind: str, handler: Handler) -> None:
        self.handlers[kind] = handler

    def _claim(self) -> list[tuple[int, str, str, int]]:
        now = now_us()
        lease = lease_end(now, self.settings.lease)
        j = connector_job
        stmt = (
            select(j.c.pk, j.c.kind, j.c.payload, j.c.attempts)
            .where(
                _PENDING,
                j.c.next_attempt_us <= now,
                QUEUE.free(now),
                j.c.kind.in_(sorted(self.handlers)),
            )
            .order_by(j.c.next_attempt_us)
            .limit(self.settings.batch_size)
        )
        with claiming(self.repo.engine) as conn:
            rows = QUEUE.claim(conn, stmt, lease, attempt=True)
        return [(r.pk, r.kind, r.payload, lease) for r in rows]

    def run_due(self, app: Flask) -> int:
        """Run the due jobs once; how many were attempted."""
        if not self.handlers:
            return 0
        return self.run_claimed(app, self._claim())

    def run_claimed(self, app: Flask, claimed: list[tuple[int, str, str, int]]) -> int:
        """Run a claimed batch, each job under a lease renewed just before it runs."""
        for pk, kind, payload, lease in claimed:
            renewed = self._renew(pk, lease)
            if renewed is None:
                continue  # the batch's lease ran out before this job's turn: another worker has it
            self._run(app, pk, kind, orjson.loads(payload), renewed)
        return len(claimed)

    def _renew(self, pk: int, lease: int) -> int | None:
        """A fresh lease for one claimed job just before it runs, if it is still ours (a batch runs its
        jobs one after another: without this, a late job's lease could lapse while earlier ones ran,
        and a second worker would send it too)."""
        now = now_us()
        if lease <= now:
            return None
        fresh = lease_end(now, self.settings.lease)
        with claiming(self.repo.engine) as conn:
            done = QUEUE.renew(conn, [pk], lease, fresh)
        return fresh if done == 1 else None

    def _run(self, app: Flask, pk: int, kind: str, payload: dict[str, Any], lease: int) -> None:
        retry: bool
        error: str | None
        # The lease is renewed while the handler runs: a connector call slower than the lease (retries,
        # a slow DMP or SMTP relay) is never claimed and sent again by another worker meanwhile.
        with QUEUE.kept(self.repo.engine, [pk], lease, self.settings.lease) as held:
            try:
                with app.app_context():
                    self.handlers[kind](app, payload)
            except ConnectorError as exc:
                error, retry = str(exc), exc.retryable
            except JobError as exc:
                error, retry = str(exc), exc.retry
            except Exception as exc:  # a handler bug must not stop the worker; it is retried, then dead
                log.exception("connector job %s (%s) failed", pk, kind)
                error, retry = f"{type(exc).__name__} in the handler", True
            else:
                error = None
        lease = held.lease
        if error is None:
            self._finish(pk, lease, status="done", error=None)
            metrics.delivery(kind, "ok")
            return
        j = connector_job
        with self.repo.writing() as conn:
            attempts = conn.scalar(select(j.c.attempts).where(j.c.pk == pk)) or 0
        delay = self.retry.after(attempts, retryable=retry)
        if delay is None:
            self._finish(pk, lease, status="dead", error=error)
            log.warning("connector job %s (%s) is dead after %d attempt(s): %s", pk, kind, attempts, error)
            metrics.delivery(kind, "failed")
            return
        with self.repo.writing() as conn:
            QUEUE.retry(conn, [pk], lease, now_us() + int(delay * US), last_error=error)
        log.info("connector job %s (%s) will retry in %.0f s: %s", pk, kind, delay, error)
        metrics.delivery(kind, "retrying")

    def _finish(self, pk: int, lease: int, *, status: str, error: str | None) -> None:
        with self.repo.writing() as conn:
            QUEUE.settle(conn, [pk], lease, status, finished_us=now_us(), last_error=error)

    def retry_dead(self, pk: int | None = None) -> int:
        """Put dead jobs (one, or all) back in the queue, as an operator does after fixing the cause."""
        j = connector_job
        where = [j.c.status == "dead"] + ([j.c.pk == pk] if pk is not None else [])
        with self.repo.writing() as conn:
            count = int(
                conn.execute(
                    update(j)
                    .where(*where)
                    .values(status="pending", attempts=0, next_attempt_us=now_us(), finished_us=None)
                ).rowcount
            )
            if count:
                doorbell.ring(conn, doorbell.JOBS)
            return count


def of(app: Flask) -> Jobs:
    jobs: Jobs = app.extensions["jobs"]
    return jobs


def register(app: Flask, kind: str, handler: Handler) -> None:
    """Declare how to run jobs of ``kind`` (at app creation, so that every worker process knows it)."""
    of(app).register(kind, handler)


def run_due(app: Flask) -> int:
    jobs: Jobs | None = app.extensions.get("jobs")
    return jobs.run_due(app) if jobs is not None else 0
