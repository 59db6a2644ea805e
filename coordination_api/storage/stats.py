"""Planner statistics of the tables that writes grow (issue 21).

Without statistics PostgreSQL plans a million-row table as if it were empty: reads and searches
fall from milliseconds to seconds. autovacuum keeps them fresh, but some managed or bulk-load
setups run with it off. So the application refreshes them itself, the way autovacuum's analyze
threshold does (PostgreSQL 15 routine-vacuuming.html#VACUUM-FOR-STATISTICS): a table is analyzed
once the rows written since its last ANALYZE exceed ``minimum + fraction x its size then``.

The database keeps the count per table (PostgreSQL: ``pg_stat_user_tables.n_mod_since_analyze``,
maintained with autovacuum off too; SQLite: the row count against ``sqlite_stat1``'s); this
process only counts the versions it writes, so that the check runs now and then, not per request.
The ANALYZE runs outside any request's transaction, one at a time per process, and a failure is
logged, never raised: statistics are an optimisation, not a reason to fail a write.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from coordination_api.errors import DatabaseFileError
from coordination_api.storage.engine import WRITE, is_postgres

log = logging.getLogger(__name__)

# After a check that found nothing to analyze, the next one waits at least this long.
RECHECK_SECONDS = 1.0
# After a check that failed (the database away, or the SQLite writer gate not free within the lock
# timeout: writers are busy), the next one waits longer: not one more try after every write.
FAILED_RECHECK_SECONDS = 30.0
# What a check may fail with: SQLAlchemy's errors, and the writer gate's raw ones (engine.WriterGate
# raises in SQLAlchemy's "begin" event, which does not wrap them).
_FAILURES = (SQLAlchemyError, sqlite3.Error, DatabaseFileError)

# Tables of this schema, their rows written since the last ANALYZE and their size then (reltuples:
# -1 when never analyzed nor vacuumed).
_PG_GROWN = text(
    "SELECT s.relname, s.n_mod_since_analyze, c.reltuples FROM pg_stat_user_tables s "
    "JOIN pg_class c ON c.oid = s.relid WHERE s.schemaname = current_schema()"
)
# Never analyzed (by us or by autovacuum) yet big, the state issue 21 measured: big by the row
# counts, or by its size on disk (the counts are lost in a crash; 64 pages: 512 kB).
_PG_NEVER = text(
    "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
    "WHERE s.schemaname = current_schema() AND s.last_analyze IS NULL AND s.last_autoanalyze IS NULL "
    "AND c.reltuples < 0 AND (s.n_live_tup >= :minimum OR pg_relation_size(s.relid) >= 64 * 8192)"
)


class TableStats:
    """Keeps the statistics of the tables this process grows up to date (see the module docstring)."""

    def __init__(self, engine: Engine, *, fraction: float = 0.1, minimum: int = 1000, enabled: bool = True):
        self.engine = engine
        self.fraction = fraction
        self.minimum = minimum
        self.enabled = enabled
        self._written = 0  # versions written by this process since tables were last analyzed
        self._rows = 0  # the resource table's size at the last check
        self._next_check = 0.0
        # SQLite: each table's size when this process last analyzed it. sqlite_stat1's row counts are
        # estimates under analysis_limit (idx_token: 0.5x to 2.4x its real size), so a table judged by
        # them alone was analyzed again every second, forever, after a bulk load.
        self._sqlite_sizes: dict[str, int] = {}
        self._sqlite_seen: dict[str, int] = {}
        self._flush_asked = False
        self._running = threading.Lock()
        self._counting = threading.Lock()

    def note(self, conn: Connection, stored: Sequence[object]) -> None:
        """Count the versions a write made (a repository ``on_written`` hook, inside the write's
        transaction). When that makes a check due, PostgreSQL is asked to publish this session's
        counts as it commits: they are otherwise published up to a second later, and the check that
        follows the commit would not see the rows that made it due."""
        self.add(len(stored))
        if self.due() and not self._flush_asked and _can_force_flush(conn):
            self._flush_asked = True
            conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")

    def add(self, rows: int) -> None:
        """Count ``rows`` versions written (by this process, or by workers it waited for)."""
        with self._counting:
            self._written += rows

    def due(self) -> bool:
        return (
            self.enabled
            and self._written >= max(self.minimum, self.fraction * self._rows)
            and time.monotonic() >= self._next_check
        )

    def refresh(self, *, wait: bool = False, force: bool = False, unanalyzed: bool = False) -> list[str]:
        """Analyze the tables grown past the threshold, if this process wrote enough to look.

        Called after a write has committed. ``wait``: here and now (a command that exits next),
        else in a background thread (a request is not kept waiting). ``force``: look whatever this
        process counted (other processes wrote, or start-up). ``unanalyzed``: also the big tables
        never analyzed (PostgreSQL; on SQLite they count as grown from nothing). Returns the tables
        analyzed (those of a background run are logged only)."""
        if not self.enabled or not (force or self.due()):
            return []
        if not self._running.acquire(blocking=False):
            return []  # one at a time: the running one sees these rows too
        if wait or isinstance(self.engine.pool, StaticPool):  # one shared connection: no second thread
            try:
                return self._analyze_grown(include_never=unanalyzed)
            finally:
                self._running.release()
        thread = threading.Thread(target=self._background, name="table-stats", daemon=True)
        thread.start()
        return []

    def wait(self, timeout: float = 60.0) -> bool:
        """Until a running refresh is over (False if it still runs after ``timeout`` seconds)."""
        if not self._running.acquire(timeout=timeout):
            return False
        self._running.release()
        return True

    def _background(self) -> None:
        try:
            self._analyze_grown(include_never=False)
        finally:
            self._running.release()

    def _analyze_grown(self, *, include_never: bool) -> list[str]:
        written = self._written
        failed = False
        try:
            tables = self.grown(include_never=include_never)
            for table in tables:
                self._analyze(table)
                if table in self._sqlite_seen:
                    self._sqlite_sizes[table] = self._sqlite_seen[table]
        except _FAILURES as exc:
            log.warning("refreshing table statistics failed: %s", exc.__class__.__name__, exc_info=True)
            tables, failed = [], True
        if tables:
            # Rows noted meanwhile stay counted.
            with self._counting:
                self._written -= written
            self._flush_asked = False
            log.info("table statistics refreshed: %s", ", ".join(tables))
        else:
            # Nothing past the threshold yet (or the database failed): keep counting, look again later.
            self._next_check = time.monotonic() + (FAILED_RECHECK_SECONDS if failed else RECHECK_SECONDS)
        return tables

    def grown(self, *, include_never: bool = False) -> list[str]:
        """The tables whose rows written since their last ANALYZE pass the threshold."""
        with self.engine.connect() as conn:
            if is_postgres(conn):
                return self._pg_grown(conn, include_never)
            return self._sqlite_grown(conn)

    def _past(self, written: float, size: float) -> bool:
        return written >= self.minimum + self.fraction * max(size, 0.0)

    def _pg_grown(self, conn: Connection, include_never: bool) -> list[str]:
        found: list[str] = []
        for name, written, size in conn.execute(_PG_GROWN):
            if name == "resource":
                self._rows = int(max(size, 0) + written)
            if self._past(written, size):
                found.append(name)
        if include_never:
            never = conn.execute(_PG_NEVER, {"minimum": self.minimum})
            found += [n for (n,) in never if n not in found]
        return sorted(found)

    def _sqlite_grown(self, conn: Connection) -> list[str]:
        analyzed: dict[str, int] = {}
        if conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first():
            for table, stat in conn.exec_driver_sql("SELECT tbl, stat FROM sqlite_stat1"):
                head = str(stat or "0").split(" ", 1)[0]
                analyzed[table] = max(analyzed.get(table, 0), int(head) if head.isdigit() else 0)
        names = conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).scalars()
        found: list[str] = []
        for name in list(names):
            rows = self._sqlite_seen[name] = _sqlite_rows(conn, name)
            if name == "resource":
                self._rows = rows
            before = self._sqlite_sizes.get(name, analyzed.get(name, 0))
            # Rows written are not counted by SQLite: the growth since the last ANALYZE stands for them.
            if self._past(rows - before, before):
                found.append(name)
        return sorted(found)

    def _analyze(self, table: str) -> None:
        quoted = self.engine.dialect.identifier_preparer.quote(table)
        if is_postgres(self.engine):
            with self.engine.connect() as conn, conn.begin():
                # A large table's sample may outlast the request bound; a lock is still waited for
                # no longer than lock_timeout.
                conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
                conn.exec_driver_sql(f"ANALYZE {quoted}")
            return
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            # A sample, as PostgreSQL's: the write lock is held for milliseconds, not a full scan.
            conn.exec_driver_sql("PRAGMA analysis_limit = 1000")
            conn.exec_driver_sql(f"ANALYZE {quoted}")


def _can_force_flush(conn: Connection) -> bool:
    """pg_stat_force_next_flush() exists from PostgreSQL 15 on."""
    version = conn.dialect.server_version_info or (0,)
    return is_postgres(conn) and version >= (15,)


def _sqlite_rows(conn: Connection, table: str) -> int:
    """A table's size, cheaply: its largest rowid (every table of ours has one), else a count."""
    quoted = conn.dialect.identifier_preparer.quote(table)
    try:
        value: Any = conn.exec_driver_sql(f"SELECT max(rowid) FROM {quoted}").scalar()
    except SQLAlchemyError:
        value = conn.exec_driver_sql(f"SELECT count(*) FROM {quoted}").scalar()
    return int(value or 0)


def check_at_start(stats: TableStats) -> bool:
    """Warn when PostgreSQL's autovacuum is off, and analyze the tables never analyzed or grown
    (e.g. by a bulk load). Returns whether autovacuum is on (SQLite: True, it has none)."""
    autovacuum = True
    try:
        with stats.engine.connect() as conn:
            if is_postgres(conn):
                autovacuum = str(conn.exec_driver_sql("SHOW autovacuum").scalar()) == "on"
                track_counts = str(conn.exec_driver_sql("SHOW track_counts").scalar()) == "on"
                if not track_counts:
                    log.warning(
                        "PostgreSQL track_counts is off: neither autovacuum nor this server can tell "
                        "which tables grew; their statistics go stale (docs/operations.md, statistics)"
                    )
    except SQLAlchemyError as exc:
        log.warning("could not check the database's statistics settings: %s", exc.__class__.__name__)
        return autovacuum
    if not autovacuum:
        if stats.enabled:
            log.warning(
                "PostgreSQL autovacuum is off: this server analyzes the tables it grows itself (after "
                "imports and large transactions) but not what other writers load; dead rows are never "
                "vacuumed. Turn autovacuum on, or run VACUUM ANALYZE after bulk loads "
                "(docs/operations.md, statistics)"
            )
        else:
            log.warning(
                "PostgreSQL autovacuum is off and COORDINATION_ANALYZE_AFTER_WRITES is off: table "
                "statistics go stale as tables grow and queries slow down by orders of magnitude; "
                "turn one of them on (docs/operations.md, statistics)"
            )
    stats.refresh(wait=True, force=True, unanalyzed=True)
    return autovacuum
