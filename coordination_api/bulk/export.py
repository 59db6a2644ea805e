"""The export producer, run by the delivery worker (Bulk Data Access IG 2.0.0 export.html).

One pass (``run_due``) removes expired and cancelled jobs' files, claims the oldest pending job and
works on it for ``ExportSettings.slice`` seconds, then records its progress and releases it (so that the
worker's other duties go on; the next pass, of this worker or another, resumes it).

Reading: keyset pages of the resource table in pk order (``pk > last``, ``LIMIT chunk_size``), each in
its own short transaction, so memory and locks stay constant whatever the size. Consistency: the
export is the database as of ``transactionTime`` (the kick-off): a resource changed since is read from
its history (the version current at that instant; none: created after, not exported; a deletion: not
exported); the scan stops at the highest pk at the job's first claim, which waits
``ExportSettings.settle`` after the kick-off for the writes in flight at that instant to commit.
Lines are the stored canonical JSON bytes.
``_typeFilter`` and the compartment of Patient/Group exports are evaluated on the current index rows.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

import orjson
from flask import Flask
from sqlalchemy import ColumnElement, Select, and_, false, literal, or_, select
from sqlalchemy.engine import Connection, Row

from coordination_api.bulk import jobs
from coordination_api.bulk.files import FilesLostError, Progress, Writer, job_dir, remove_job_files
from coordination_api.bulk.kickoff import ExportParams
from coordination_api.config import ExportSettings
from coordination_api.fhir import access
from coordination_api.fhir.context import Services
from coordination_api.storage.repository import now_us
from coordination_api.storage.schema import (
    bulk_export_patient,
    idx_compartment,
    resource,
    resource_history,
)

log = logging.getLogger(__name__)
US = 1_000_000
CHECKPOINT_EVERY = 1.0  # seconds between checkpoints (each renews the lease and fsyncs the files)
r = resource
cmp = idx_compartment


def run_due(app: Flask) -> int:
    """One pass of the delivery worker; how many jobs it touched (0: nothing to do)."""
    svc: Services = app.extensions["coordination"]
    settings: ExportSettings = svc.settings.export
    engine = svc.repo.engine
    worked = 0
    for pk, job_id in jobs.expired(engine):
        remove_job_files(settings, job_id)
        jobs.forget(engine, pk)
        worked += 1
    claim = jobs.claim(engine, settings)
    if claim is None:
        return worked
    try:
        Producer(svc, settings, claim).run()
    except FilesLostError as exc:
        log.error("bulk export %s failed: %s", claim.job_id, exc)
        jobs.fail(engine, claim, str(exc), settings)
    except Exception:  # a failed slice (database restart, full disk…) is resumed, then the job fails
        log.exception("bulk export %s: the pass failed; it will be resumed", claim.job_id)
        jobs.give_up(engine, claim)
    return worked + 1


class Producer:
    def __init__(self, svc: Services, settings: ExportSettings, claim: jobs.Claim) -> None:
        self.svc = svc
        self.settings = settings
        self.claim = claim
        self.engine = svc.repo.engine

    def run(self) -> None:
        row = jobs.load(self.engine, self.claim.pk)
        if row is None:
            return
        params = ExportParams.from_json(row.params)
        progress = Progress.from_json(row.progress)
        directory = job_dir(self.settings, row.job_id)
        writer = Writer(
            directory,
            progress,
            self.settings.resources_per_file,
            take_over=self.claim.take_over,
            generation=self.claim.restarts,
        )
        try:
            self._produce(row, params, progress, writer)
        finally:
            writer.stack.close()  # whatever happened, no file is left open

    def _produce(self, row: Row[Any], params: ExportParams, progress: Progress, writer: Writer) -> None:
        """Pages until the end (complete) or the slice's end (checkpoint, release)."""
        query = self._query(row, params)
        members = self._members(row, params)
        started = time.monotonic()
        next_checkpoint = started + CHECKPOINT_EVERY
        while True:
            with self.engine.connect() as conn:
                if members is None:
                    stmt = query.where(r.c.pk > progress.last_pk).order_by(r.c.pk)
                    rows = conn.execute(stmt.limit(self.settings.chunk_size)).all()
                    end = rows[-1].pk if rows else None
                else:
                    # Patient/Group level: the page's keys come from the compartment index in pk order
                    # (an index range scan), the rows by key. One statement with EXISTS had PostgreSQL
                    # hash every idx_compartment row for each page (8,000 resources/s at 1M).
                    keys = list(conn.scalars(members.where(cmp.c.res_pk > progress.last_pk)))
                    rows = conn.execute(query.where(r.c.pk.in_(keys)).order_by(r.c.pk)).all() if keys else []
                    end = keys[-1] if keys else None
                older = self._as_of(conn, [x.pk for x in rows if x.last_updated > row.transaction_us], row)
            if end is None:
                self._finish(writer, progress, params)
                return
            self._write(writer, progress, rows, older, row.transaction_us, params.since_us)
            progress.last_pk = end
            now = time.monotonic()
            if now - started >= self.settings.slice or now >= next_checkpoint:
                writer.sync()
                release = now - started >= self.settings.slice
                lease = None if release else now_us() + int(self.settings.lease * US)
                if not jobs.checkpoint(self.engine, self.claim, progress.to_json(), lease):
                    self._lost(writer)
                    return
                if lease is None:
                    writer.close(final=False)
                    return
                self.claim = dataclasses.replace(self.claim, lease=lease)
                next_checkpoint = now + CHECKPOINT_EVERY

    # -- reading --------------------------------------------------------------------------------

    def _query(self, job: Row[Any], params: ExportParams) -> Select[Any]:
        """The rows a page is taken from (without the keyset bound)."""
        compiler = self.svc.compiler
        plain = [t for t in params.types if t not in params.type_filters]
        # SQLite would pick the res_type index and sort every page; an unindexable term keeps it on
        # the rowid (pk) order, which is the scan we want.
        res_type = r.c.res_type + "" if self.engine.dialect.name == "sqlite" else r.c.res_type
        by_type: list[ColumnElement[bool]] = [res_type.in_(plain)] if plain else []
        for rtype, queries in params.type_filters.items():
            matches = []
            for text in queries:
                search = compiler.compile(
                    rtype, parse_qsl(text, keep_blank_values=True), base_url=params.base
                )
                matches.append(and_(*search.where) if search.where else literal(True))
            by_type.append(and_(r.c.res_type == rtype, or_(*matches)))
        where: list[ColumnElement[bool]] = [r.c.pk <= job.max_pk, or_(*by_type) if by_type else false()]
        if params.since_us is not None:
            where.append(r.c.last_updated > params.since_us)
        else:
            where.append(or_(r.c.deleted == false(), r.c.last_updated > job.transaction_us))
        if job.owner_client is not None and "Subscription" in params.types:
            where.append(
                or_(
                    r.c.res_type != "Subscription",
                    access.owned_subscription(r.c.pk, client_id=job.owner_client),
                )
            )
        return select(r.c.pk, r.c.res_type, r.c.res_id, r.c.last_updated, r.c.deleted, r.c.content).where(
            *where
        )

    def _members(self, job: Row[Any], params: ExportParams) -> Select[Any] | None:
        """Patient/Group level: the keys of a page, resources in the compartment of a patient of the
        export (all patients, or the job's bulk_export_patient rows); None at system level."""
        if job.level == "system":
            return None
        stmt = select(cmp.c.res_pk).where(cmp.c.res_pk <= job.max_pk)
        if params.limited:
            p = bulk_export_patient
            chosen = select(p.c.patient_id).where(p.c.job_pk == job.pk)
            stmt = stmt.where(cmp.c.patient_id.in_(chosen))
        return stmt.distinct().order_by(cmp.c.res_pk).limit(self.settings.chunk_size)

    @staticmethod
    def _as_of(conn: Connection, pks: list[int], job: Row[Any]) -> dict[int, Row[Any]]:
        """The version current at transactionTime of resources changed since (from their history)."""
        if not pks:
            return {}
        h = resource_history
        rows = conn.execute(
            select(h.c.res_pk, h.c.last_updated, h.c.deleted, h.c.content)
            .where(h.c.res_pk.in_(pks), h.c.last_updated <= job.transaction_us)
            .order_by(h.c.res_pk, h.c.version)
        )
        out: dict[int, Any] = {}
        for row in rows:
            out[row.res_pk] = row  # the last (highest) version wins
        return out

    # -- writing --------------------------------------------------------------------------------

    @staticmethod
    def _write(
        writer: Writer,
        progress: Progress,
        rows: Sequence[Row[Any]],
        older: dict[int, Row[Any]],
        transaction_us: int,
        since: int | None,
    ) -> None:
        deleted: list[dict[str, Any]] = []
        for row in rows:
            version: Any = row
            if row.last_updated > transaction_us:
                version = older.get(row.pk)
                if version is None or (since is not None and version.last_updated <= since):
                    continue  # created after the kick-off, or unchanged since _since
            if version.deleted or version.content is None:
                if since is not None:
                    deleted.append({"request": {"method": "DELETE", "url": f"{row.res_type}/{row.res_id}"}})
                continue
            writer.write("output", row.res_type, version.content.encode())
            progress.written += 1
        if deleted:
            # export.html "deleted": transaction Bundles whose entries are the DELETEs since _since.
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": deleted}
            writer.write("deleted", "Bundle", orjson.dumps(bundle))

    def _finish(self, writer: Writer, progress: Progress, params: ExportParams) -> None:
        for note in params.notes:
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "information", "code": "informational", "diagnostics": note}],
            }
            writer.write("error", "OperationOutcome", orjson.dumps(outcome))
        writer.close(final=True)
        if not jobs.complete(self.engine, self.claim, progress.to_json(), self.settings):
            self._lost(writer)
            return
        log.info("bulk export %s completed: %d resources", self.claim.job_id, progress.written)

    def _lost(self, writer: Writer) -> None:
        writer.abandon()
        if jobs.drop_if_cancelled(self.engine, self.claim.pk):
            remove_job_files(self.settings, self.claim.job_id)
            log.info("bulk export %s was cancelled: its files are removed", self.claim.job_id)
        else:
            log.warning("bulk export %s: lease lost; another worker goes on with it", self.claim.job_id)
