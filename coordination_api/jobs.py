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
import secrets
from collections.abc import Callable
from typing import Any

import orjson
from flask import Flask
from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from connectors.errors import ConnectorError
from coordination_api import metrics
from coordination_api.config import JobSettings
from coordination_api.storage.engine import WRITE
from coordination_api.storage.repository import Repository, now_us
from coordination_api.storage.schema import connector_job

log = logging.getLogger(__name__)
US = 1_000_000
_RANDOM = secrets.SystemRandom()
_PENDING = connector_job.c.status == "pending"

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
        return True
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        insert(connector_job)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["kind", "job_key"], index_where=_PENDING)
        .returning(connector_job.c.pk)
    )
    return conn.execute(stmt).first() is not None


class Jobs:
    """The job kinds this process can run, and the runner the worker loop calls."""

    def __init__(self, repo: Repository, settings: JobSettings) -> None:
        self.repo = repo
        self.settings = settings
        self.handlers: dict[str, Handler] = {}

    def register(self, kind: str, handler: Handler) -> None:
        self.handlers[kind] = handler

    def _claim(self) -> list[tuple[int, str, str, int]]:
        now = now_us()
        lease = now + int(self.settings.lease * US)
        j = connector_job
        stmt = (
            select(j.c.pk, j.c.kind, j.c.payload, j.c.attempts)
            .where(
                _PENDING,
                j.c.next_attempt_us <= now,
                or_(j.c.lease_until.is_(None), j.c.lease_until < now),
                j.c.kind.in_(sorted(self.handlers)),
            )
            .order_by(j.c.next_attempt_us)
            .limit(self.settings.batch_size)
        )
        # SQLite: the WRITE option makes this BEGIN IMMEDIATE (one claimer at a time).
        with self.repo.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            rows = conn.execute(stmt).all()
            if rows:
                conn.execute(
                    update(j)
                    .where(j.c.pk.in_([r.pk for r in rows]))
                    .values(lease_until=lease, attempts=j.c.attempts + 1)
                )
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
        j = connector_job
        now = now_us()
        if lease <= now:
            return None
        fresh = now + int(self.settings.lease * US)
        with self.repo.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            stmt = update(j).where(j.c.pk == pk, j.c.lease_until == lease).values(lease_until=fresh)
            done = conn.execute(stmt).rowcount
        return fresh if done == 1 else None

    def _run(self, app: Flask, pk: int, kind: str, payload: dict[str, Any], lease: int) -> None:
        retry: bool
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
            self._finish(pk, lease, status="done", error=None)
            metrics.delivery(kind, "ok")
            return
        j = connector_job
        with self.repo.writing() as conn:
            attempts = conn.scalar(select(j.c.attempts).where(j.c.pk == pk)) or 0
        if not retry or attempts >= self.settings.max_attempts:
            self._finish(pk, lease, status="dead", error=error)
            log.warning("connector job %s (%s) is dead after %d attempt(s): %s", pk, kind, attempts, error)
            metrics.delivery(kind, "failed")
            return
        s = self.settings
        delay = s.retry_base * 2 ** min(max(attempts - 1, 0), 30)
        delay = min(s.retry_cap, delay * (1 + _RANDOM.uniform(-s.retry_jitter, s.retry_jitter)))
        with self.repo.writing() as conn:
            conn.execute(
                update(j)
                .where(j.c.pk == pk, j.c.lease_until == lease)
                .values(lease_until=None, next_attempt_us=now_us() + int(delay * US), last_error=error)
            )
        log.info("connector job %s (%s) will retry in %.0f s: %s", pk, kind, delay, error)
        metrics.delivery(kind, "retrying")

    def _finish(self, pk: int, lease: int, *, status: str, error: str | None) -> None:
        j = connector_job
        with self.repo.writing() as conn:
            conn.execute(
                update(j)
                .where(j.c.pk == pk, j.c.lease_until == lease)
                .values(status=status, lease_until=None, finished_us=now_us(), last_error=error)
            )

    def retry_dead(self, pk: int | None = None) -> int:
        """Put dead jobs (one, or all) back in the queue, as an operator does after fixing the cause."""
        j = connector_job
        where = [j.c.status == "dead"] + ([j.c.pk == pk] if pk is not None else [])
        with self.repo.writing() as conn:
            return int(
                conn.execute(
                    update(j)
                    .where(*where)
                    .values(status="pending", attempts=0, next_attempt_us=now_us(), finished_us=None)
                ).rowcount
            )


def of(app: Flask) -> Jobs:
    jobs: Jobs = app.extensions["jobs"]
    return jobs


def register(app: Flask, kind: str, handler: Handler) -> None:
    """Declare how to run jobs of ``kind`` (at app creation, so that every worker process knows it)."""
    of(app).register(kind, handler)


def run_due(app: Flask) -> int:
    jobs: Jobs | None = app.extensions.get("jobs")
    return jobs.run_due(app) if jobs is not None else 0
