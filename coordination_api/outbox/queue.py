"""Rows claimed under a lease (ARCHITECTURE.md "delivery worker").

A claimer reads the due rows nobody holds and writes a lease (``lease_until``, epoch microseconds)
on them in one transaction: on PostgreSQL the read is SELECT … FOR UPDATE SKIP LOCKED, so concurrent
claimers each get other rows; on SQLite the transaction is BEGIN IMMEDIATE (``claiming``), so claimers
take turns. A row is the claimer's until its lease ends: every later write of it (renew, release,
settle) is conditional on the lease it holds, so a claimer that stalled past its lease can no longer
change what another one took over. A crashed claimer's rows are claimable again once the lease is over
(at least once: the work must be idempotent).

Which rows are due, and in what order, is the caller's query (its tables, joins and exclusions); this
module adds the lock, the lease and the conditional writes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, ColumnElement, FromClause, Select, Table, or_, update
from sqlalchemy.engine import Connection, Engine, Row

from coordination_api.storage.engine import WRITE, is_postgres

US = 1_000_000
log = logging.getLogger(__name__)


def lease_end(now: int, seconds: float) -> int:
    """The end of a lease of ``seconds`` taken at ``now`` (epoch microseconds)."""
    return now + int(seconds * US)


@contextmanager
def claiming(engine: Engine) -> Iterator[Connection]:
    """A write transaction to claim in (SQLite: the WRITE option makes it BEGIN IMMEDIATE, one
    claimer at a time)."""
    with engine.connect().execution_options(**WRITE) as conn, conn.begin():
        yield conn


@dataclass(frozen=True)
class Queue:
    """A table whose rows are claimed under a lease.

    ``key`` names the column that identifies a row, ``attempts`` the counter a claim may increase
    (None: the table has none), ``due`` the time of the next attempt a retry sets, ``status`` the
    state a settle writes.
    """

    table: Table
    key: str = "pk"
    attempts: str | None = None
    due: str | None = None
    status: str = "status"
    lease: str = "lease_until"

    def _col(self, name: str) -> Column[Any]:
        column: Column[Any] = self.table.c[name]
        return column

    def free(self, now: int) -> ColumnElement[bool]:
        """SQL: nobody holds the row at ``now`` (never claimed, released, or its lease is over)."""
        lease = self._col(self.lease)
        return or_(lease.is_(None), lease < now)

    def lock(self, conn: Connection, stmt: Select[Any], *, of: FromClause | None = None) -> Select[Any]:
        """``stmt`` (the due rows) locking what it reads and skipping rows another claimer has locked
        (PostgreSQL; ``of``: lock only that table of a join). On SQLite the claiming transaction
        already excludes other claimers."""
        if is_postgres(conn):
            return stmt.with_for_update(skip_locked=True, of=of)
        return stmt

    def take(
        self,
        conn: Connection,
        keys: Sequence[Any],
        lease: int,
        *,
        attempt: bool = False,
        where: Iterable[ColumnElement[bool]] = (),
        **values: Any,
    ) -> int:
        """Write ``lease`` on the rows ``keys`` (with ``attempt``, one more attempt; ``where``, only
        rows that still meet it), with ``values``; how many rows were taken."""
        if not keys:
            return 0
        values[self.lease] = lease
        if attempt:
            counter = self._col(self._attempts())
            values[counter.name] = counter + 1
        stmt = update(self.table).where(self._col(self.key).in_(keys), *where).values(**values)
        return int(conn.execute(stmt).rowcount)

    def claim(
        self,
        conn: Connection,
        stmt: Select[Any],
        lease: int,
        *,
        attempt: bool = False,
        of: FromClause | None = None,
    ) -> list[Row[Any]]:
        """Run the due-rows query ``stmt`` (it selects this table's key column) under the lock and
        take every row it returned under ``lease``; inside the caller's claiming transaction."""
        rows = list(conn.execute(self.lock(conn, stmt, of=of)))
        key = self._col(self.key)
        self.take(conn, [row._mapping[key] for row in rows], lease, attempt=attempt)
        return rows

    def renew(
        self,
        conn: Connection,
        keys: Sequence[Any],
        lease: int | None,
        new_lease: int | None,
        *,
        where: Iterable[ColumnElement[bool]] = (),
        **values: Any,
    ) -> int:
        """Move the lease of the rows still held under ``lease`` to ``new_lease``; how many were
        still held (fewer: another claimer took them after the lease ran out)."""
        if not keys:
            return 0
        values[self.lease] = new_lease
        held = (self._col(self.key).in_(keys), self._col(self.lease) == lease)
        stmt = update(self.table).where(*held, *where).values(**values)
        return int(conn.execute(stmt).rowcount)

    def release(
        self,
        conn: Connection,
        keys: Sequence[Any],
        lease: int | None,
        *,
        undo_attempt: bool = False,
        **values: Any,
    ) -> int:
        """Give back the rows still held under ``lease`` (claimable again at once; with
        ``undo_attempt``, the claim's attempt does not count), setting ``values``."""
        if undo_attempt:
            counter = self._col(self._attempts())
            values[counter.name] = counter - 1
        return self.renew(conn, keys, lease, None, **values)

    def retry(self, conn: Connection, keys: Sequence[Any], lease: int, at: int, **values: Any) -> int:
        """Release the rows held under ``lease`` for another attempt at ``at`` (epoch microseconds)."""
        if self.due is None:
            raise ValueError(f"{self.table.name} has no next-attempt column")
        values[self.due] = at
        return self.release(conn, keys, lease, **values)

    def settle(
        self,
        conn: Connection,
        keys: Sequence[Any],
        lease: int | None,
        status: str,
        *,
        where: Iterable[ColumnElement[bool]] = (),
        **values: Any,
    ) -> int:
        """End the rows held under ``lease`` in ``status`` (done, delivered, dead, failed…) with
        ``values``; how many were still held."""
        values[self.status] = status
        return self.renew(conn, keys, lease, None, where=where, **values)

    @contextmanager
    def kept(self, engine: Engine, keys: Sequence[Any], lease: int, seconds: float) -> Iterator[Held]:
        """Keep the rows ``keys`` held under ``lease`` while the block runs: a thread renews the lease
        (by ``seconds`` from now) every third of it, so work that outlives one lease (a subscriber's
        long timeout, a slow connector, an SMTP relay) is never claimed and run a second time meanwhile.
        The lease is renewed once on entry: ``held.lost`` is then already True when the rows are no longer
        ours (do not start the work), and becomes True when a later renewal finds them gone. After the
        block, ``held.lease`` is the lease the rows are held under (the one later writes must name)."""
        held = Held(self, engine, list(keys), lease, seconds)
        held.start()
        try:
            yield held
        finally:
            held.stop()

    def _attempts(self) -> str:
        if self.attempts is None:
            raise ValueError(f"{self.table.name} counts no attempts")
        return self.attempts


class Held:
    """Rows kept under a lease by a renewal thread (``Queue.kept``)."""

    def __init__(self, queue: Queue, engine: Engine, keys: list[Any], lease: int, seconds: float) -> None:
        self.queue = queue
        self.engine = engine
        self.keys = keys
        self.lease = lease
        self.seconds = seconds
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="lease-keeper", daemon=True)

    def start(self) -> None:
        if self.keys and self._renew():
            self._thread.start()

    def stop(self) -> None:
        """Stop renewing; a renewal under way commits (or fails) first, so ``lease`` is then final."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _keep(self) -> None:
        period = max(0.05, self.seconds / 3)
        while not self._stop.wait(period) and self._renew():
            pass

    def _renew(self) -> bool:
        """Move the lease on; False once the rows are lost."""
        fresh = lease_end(int(time.time() * US), self.seconds)
        try:
            with claiming(self.engine) as conn:
                kept = self.queue.renew(conn, self.keys, self.lease, fresh)
        except Exception:  # the database is away: try again; the lease may lapse (at least once)
            log.warning("lease renewal of %s failed", self.queue.table.name, exc_info=True)
            return True
        if kept == 0:
            self.lost = True
            return False
        self.lease = fresh
        return True
