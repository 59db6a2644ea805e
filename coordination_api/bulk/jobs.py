"""The export job table: creation (with the per-client limit), claims under a lease, checkpoints,
cancellation and expiry.

Claims are the outbox's (coordination_api/outbox): SELECT … FOR UPDATE SKIP LOCKED on PostgreSQL, a
BEGIN IMMEDIATE transaction on SQLite, and a lease; every write of a claimed job is conditional on the
lease it holds, so a worker whose lease ran out (stalled, crashed) can no longer change the job another
worker took over.
"""

from __future__ import annotations

import secrets
import zlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, text, update
from sqlalchemy.engine import Connection, Engine, Row

from coordination_api.config import ExportSettings
from coordination_api.errors import Category, FhirError
from coordination_api.outbox import Queue, claiming, doorbell, lease_end
from coordination_api.storage.engine import WRITE, is_postgres
from coordination_api.storage.repository import now_us
from coordination_api.storage.schema import bulk_export_job as job
from coordination_api.storage.schema import bulk_export_patient

US = 1_000_000
# A job whose worker died this many times (lease expired, or an error in the producer) fails: the
# same cause (a full disk, a bug) would stop every further attempt too.
MAX_RESTARTS = 3
QUEUE = Queue(job)
_PENDING = (job.c.status == "pending",)


@dataclass(frozen=True)
class Claim:
    pk: int
    job_id: str
    lease: int
    take_over: bool  # the previous holder's lease expired (it may still be writing)
    restarts: int


def _ended(now: int, settings: ExportSettings) -> dict[str, Any]:
    """The columns of a job that has ended (completed or failed): its files expire after the TTL."""
    return {"finished_us": now, "expires_us": now + int(settings.ttl * US)}


def _writing(engine: Engine) -> Any:
    # SQLite: the WRITE option makes this BEGIN IMMEDIATE (one claimer at a time).
    return engine.connect().execution_options(**WRITE)


def create(
    engine: Engine,
    settings: ExportSettings,
    *,
    owner: str | None,
    level: str,
    request_url: str,
    params: str,
    transaction_us: int,
    patients: list[str] | None,
) -> str:
    """A new pending job; 429 when the client already has its maximum of unfinished jobs."""
    job_id = secrets.token_urlsafe(24)
    with _writing(engine) as conn, conn.begin():
        if is_postgres(conn) and owner is not None:
            # Serialises one client's kick-offs, so that two at once cannot both pass the count.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(owner.encode())})
        if owner is not None:
            running = conn.scalar(
                select(func.count()).where(job.c.owner_client == owner, job.c.status == "pending")
            )
            if (running or 0) >= settings.max_jobs_per_client:
                raise FhirError(
                    Category.TOO_MANY_REQUESTS,
                    f"This client already has {running} export(s) in progress (at most "
                    f"{settings.max_jobs_per_client}); wait for one to finish or cancel it (DELETE its "
                    "status URL)",
                    headers={"Retry-After": str(max(1, int(settings.poll_interval) * 5))},
                )
        pk = conn.execute(
            insert(job)
            .values(
                job_id=job_id,
                owner_client=owner,
                status="pending",
                level=level,
                request_url=request_url,
                params=params,
                transaction_us=transaction_us,
                max_pk=0,  # set by the first claim
                created_us=now_us(),
                restarts=0,
            )
            .returning(job.c.pk)
        ).scalar_one()
        if patients:
            for start in range(0, len(patients), 1000):
                conn.execute(
                    insert(bulk_export_patient),
                    [{"job_pk": pk, "patient_id": p} for p in patients[start : start + 1000]],
                )
        doorbell.ring(conn, doorbell.EXPORTS)  # the worker's export lane starts it when this commits
    return job_id


def find(conn: Connection, job_id: str) -> Row[Any] | None:
    return conn.execute(select(job).where(job.c.job_id == job_id)).first()


def claim(engine: Engine, settings: ExportSettings) -> Claim | None:
    """The oldest pending job nobody holds, under a new lease; jobs past their restarts fail here."""
    while True:
        now = now_us()
        lease = lease_end(now, settings.lease)
        free = (*_PENDING, QUEUE.free(now), job.c.transaction_us <= now - int(settings.settle * US))
        with engine.connect() as conn:
            # Most passes find nothing: a plain read first, the write lock (SQLite) only if needed.
            if conn.scalar(select(job.c.pk).where(*free).limit(1)) is None:
                return None
        with claiming(engine) as conn:
            stmt = (
                select(job.c.pk, job.c.job_id, job.c.lease_until, job.c.restarts, job.c.progress)
                .where(*free)
                .order_by(job.c.created_us, job.c.pk)
                .limit(1)
            )
            row = conn.execute(QUEUE.lock(conn, stmt)).first()
            if row is None:
                return None
            take_over = row.lease_until is not None
            restarts = row.restarts + (1 if take_over else 0)
            if restarts > MAX_RESTARTS:  # the dead-letter: the status says why
                error = f"the export was interrupted {MAX_RESTARTS} times; see the server log"
                QUEUE.settle(conn, [row.pk], row.lease_until, "failed", error=error, **_ended(now, settings))
                continue
            values: dict[str, Any] = {"restarts": restarts}
            if row.progress is None:
                # The scan's end: every resource a version of which is current at transactionTime has
                # committed by now (settle), so its pk is at most this; later rows are created after.
                values["max_pk"] = conn.scalar(text("SELECT COALESCE(MAX(pk), 0) FROM resource")) or 0
            QUEUE.take(conn, [row.pk], lease, **values)
        return Claim(row.pk, row.job_id, lease, take_over, restarts)


def checkpoint(engine: Engine, claim: Claim, progress: str, new_lease: int | None) -> bool:
    """Record the progress and renew (or, with None, release) the lease; False: the job is no longer
    ours (cancelled, or taken over after our lease ran out)."""
    with claiming(engine) as conn:
        done = QUEUE.renew(conn, [claim.pk], claim.lease, new_lease, where=_PENDING, progress=progress)
    return bool(done)


def complete(engine: Engine, claim: Claim, progress: str, settings: ExportSettings) -> bool:
    ended = _ended(now_us(), settings)
    with claiming(engine) as conn:
        done = QUEUE.settle(
            conn, [claim.pk], claim.lease, "completed", where=_PENDING, progress=progress, **ended
        )
    return bool(done)


def fail(engine: Engine, claim: Claim, error: str, settings: ExportSettings) -> None:
    """A failure no retry can mend: the status answers it (export.html "Error Status")."""
    ended = _ended(now_us(), settings)
    with claiming(engine) as conn:
        QUEUE.settle(conn, [claim.pk], claim.lease, "failed", error=error, **ended)


def give_up(engine: Engine, claim: Claim) -> None:
    """The producer failed: the lease ends now, the next claim counts a restart and resumes."""
    with claiming(engine) as conn:
        QUEUE.renew(conn, [claim.pk], claim.lease, 0)  # 0, not NULL: the next claim sees a take-over


def cancel(engine: Engine, job_pk: int) -> bool:
    """DELETE of the status URL (export.html#bulk-data-delete-request). True: the row is gone and the
    files may be removed now; False: a worker holds the job, it removes them at its next checkpoint."""
    now = now_us()
    with _writing(engine) as conn, conn.begin():
        stmt = select(job.c.status, job.c.lease_until).where(job.c.pk == job_pk)
        if is_postgres(conn):
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).first()
        if row is None:
            return True
        held = row.status == "pending" and row.lease_until is not None and row.lease_until >= now
        if held:
            conn.execute(update(job).where(job.c.pk == job_pk).values(status="cancelled", expires_us=now))
            return False
        conn.execute(delete(job).where(job.c.pk == job_pk))
        return True


def drop_if_cancelled(engine: Engine, job_pk: int) -> bool:
    """After a lost lease: a cancelled (or deleted) job's files are ours to remove."""
    with _writing(engine) as conn, conn.begin():
        status = conn.scalar(select(job.c.status).where(job.c.pk == job_pk))
        if status == "cancelled":
            conn.execute(delete(job).where(job.c.pk == job_pk))
    return status in {None, "cancelled"}


def expired(engine: Engine) -> list[tuple[int, str]]:
    """Finished jobs past their expiry, and cancelled ones nobody holds any more."""
    now = now_us()
    with engine.connect() as conn:
        rows = conn.execute(
            select(job.c.pk, job.c.job_id).where(
                or_(
                    (job.c.status.in_(["completed", "failed"])) & (job.c.expires_us < now),
                    (job.c.status == "cancelled") & or_(job.c.lease_until.is_(None), job.c.lease_until < now),
                )
            )
        ).all()
    return [(r.pk, r.job_id) for r in rows]


def forget(engine: Engine, job_pk: int) -> None:
    with _writing(engine) as conn, conn.begin():
        conn.execute(delete(job).where(job.c.pk == job_pk, job.c.status != "pending"))


def load(engine: Engine, job_pk: int) -> Row[Any] | None:
    with engine.connect() as conn:
        return conn.execute(select(job).where(job.c.pk == job_pk)).first()
