"""Database engine creation, with the per-dialect settings both databases need.

Every connection is bounded (docs/operations.md, database faults): PostgreSQL gets statement_timeout,
lock_timeout and idle_in_transaction_session_timeout at connect, and a connect timeout; SQLite gets
busy_timeout.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from coordination_api.config import DatabaseTimeouts
from coordination_api.errors import DatabaseFileError
from coordination_api.storage.sidecar import open_beside

WRITE = {"coordination_write": True}
log = logging.getLogger(__name__)


def make_engine(
    url: str, *, pool_size: int = 10, echo: bool = False, timeouts: DatabaseTimeouts | None = None
) -> Engine:
    """Create the engine; SQLite gets WAL and write transactions that take the lock up front."""
    timeouts = timeouts or DatabaseTimeouts()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database, echo, timeouts)
    connect_args: dict[str, Any] = {}
    if timeouts.connect > 0 and "connect_timeout" not in parsed.query:
        # libpq: whole seconds, and values below 2 are raised to 2.
        connect_args["connect_timeout"] = max(2, round(timeouts.connect))
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # A connection the server dropped (restart, failover) is found at checkout and replaced;
        # one that dies in use is invalidated by SQLAlchemy's disconnect detection.
        pool_pre_ping=True,
        pool_recycle=1800,
        pool_timeout=timeouts.pool,  # waiting for a free pooled connection, then 503 (errors.py)
        connect_args=connect_args,
        echo=echo,
        hide_parameters=True,  # error messages (logged) must not quote values: patient data
    )
    # SET on connect rather than libpq "options": the URL may carry its own options (search_path).
    settings = {
        "statement_timeout": timeouts.statement,
        "lock_timeout": timeouts.lock,
        "idle_in_transaction_session_timeout": timeouts.idle_in_transaction,
    }
    statements = "; ".join(f"SET {name} = {int(value * 1000)}" for name, value in settings.items())

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(statements)
        dbapi_connection.commit()  # session-level SETs outlive the transaction they ran in

    return engine


def _sqlite_engine(url: str, database: str | None, echo: bool, timeouts: DatabaseTimeouts) -> Engine:
    # busy_timeout: how long a writer waits for the write lock before "database is locked" (a 503).
    busy_ms = int(timeouts.lock * 1000)
    connect_args = {"timeout": timeouts.lock, "check_same_thread": False}
    if not database or database == ":memory:":
        # One shared connection, or each pooled connection would see its own empty database.
        engine = create_engine(
            url, echo=echo, connect_args=connect_args, poolclass=StaticPool, hide_parameters=True
        )
    else:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=echo,
            connect_args=connect_args,
            pool_size=20,
            max_overflow=20,
            pool_timeout=timeouts.pool,
            hide_parameters=True,
        )

    gate = (
        None
        if not database or database == ":memory:"
        else WriterGate(database + "-writer.lock", timeouts.lock, database=database)
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's "begin" event own BEGIN (pysqlite's implicit one is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that later writes can fail with SQLITE_BUSY without waiting;
        # writers take the write lock at BEGIN so concurrent writers queue on busy_timeout.
        if not conn.get_execution_options().get("coordination_write"):
            conn.exec_driver_sql("BEGIN")
            return
        if gate is None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        dbapi_connection = conn.connection.dbapi_connection
        gate.acquire(dbapi_connection)
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            gate.release(dbapi_connection)
            raise

    if gate is not None:
        _release_at_end(engine, gate)
    return engine


class WriterGate:
    """Writers of one SQLite file queue here, each woken as the writer before it ends, before they
    take SQLite's write lock: threads on a lock of this process, processes on an flock of a file beside the
    database. SQLite's own busy handler sleeps in growing steps (up to 100 ms) and lets a newcomer
    overtake the sleepers, so under 16 concurrent writers some requests waited seconds (issue 21);
    here a waiter is woken when the writer before it ends. Bounded by the lock timeout, then "database
    is locked" (503, errors.py), as busy_timeout was. The lock file takes the database file's owner and
    mode (storage/sidecar.py); one that cannot be opened is a DatabaseFileError (503 naming it)."""

    def __init__(self, path: str, timeout: float, *, database: str | None = None) -> None:
        self.path = path
        self.database = database if database is not None else path.removesuffix("-writer.lock")
        self.timeout = timeout
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._pid = 0
        self._owner: Any = None
        _GATES.add(self)

    def _forked(self) -> None:
        # A child forked while a thread of its parent held the gate would wait on it forever: the
        # holder does not exist in the child.
        self._threads = threading.Lock()
        self._owner = None

    def _file(self) -> int:
        if self._pid != os.getpid():  # a forked child must not share its parent's open file (flock)
            try:
                self._fd = open_beside(self.database, self.path, os.O_RDONLY)  # only flock()ed
            except OSError as exc:
                log.warning("SQLite writer gate: cannot open its lock file %s: %s", self.path, exc)
                raise DatabaseFileError(self.path, exc.strerror or str(exc)) from exc
            self._pid = os.getpid()
            weakref.finalize(self, _close_quietly, self._fd)  # with the engine that holds the gate
        assert self._fd is not None
        return self._fd

    def acquire(self, owner: Any) -> None:
        deadline = time.monotonic() + self.timeout
        if not self._threads.acquire(timeout=self.timeout):
            raise sqlite3.OperationalError("database is locked (waiting for the writers before)")
        try:
            fd = self._file()
            pause = 0.0002
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise sqlite3.OperationalError(
                            "database is locked (another process is writing)"
                        ) from None
                    time.sleep(pause)  # only another process holds it: one waiter per process
                    pause = min(pause * 2, 0.002)
        except BaseException:
            self._threads.release()
            raise
        self._owner = owner

    def release(self, owner: Any) -> None:
        # SQLAlchemy hands the dialect its pool's proxy of the connection, pool events the connection.
        owner = getattr(owner, "dbapi_connection", owner)
        if self._owner is None or self._owner is not owner:
            return
        self._owner = None
        try:
            fcntl.flock(self._file(), fcntl.LOCK_UN)
        finally:
            self._threads.release()


_GATES: weakref.WeakSet[WriterGate] = weakref.WeakSet()


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _after_fork_in_child() -> None:
    for gate in list(_GATES):
        gate._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _release_at_end(engine: Engine, gate: WriterGate) -> None:
    """The gate opens once the write transaction has ended on its connection: after the COMMIT or
    ROLLBACK itself (SQLAlchemy's commit/rollback events run before them), or when the connection is
    thrown away."""
    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:
        try:
            commit(dbapi_connection)
        finally:
            gate.release(dbapi_connection)

    def do_rollback(dbapi_connection: Any) -> None:
        try:
            rollback(dbapi_connection)
        finally:
            gate.release(dbapi_connection)

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]

    @event.listens_for(engine, "close")
    def _on_close(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        gate.release(dbapi_connection)

    @event.listens_for(engine, "invalidate")
    def _on_invalidate(
        dbapi_connection: Any, _record: ConnectionPoolEntry, _exc: BaseException | None
    ) -> None:
        gate.release(dbapi_connection)


def is_postgres(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


def placeholder(paramstyle: str) -> str:
    """The driver's positional parameter mark in driver SQL: sqlite3 ``?``, psycopg ``%s``."""
    return "?" if paramstyle == "qmark" else "%s"


def open_reader(engine: Engine) -> Any:
    """A pooled DBAPI connection for plain reads. PostgreSQL: in autocommit while we hold it, so a
    SELECT costs one round trip (no BEGIN before it, no ROLLBACK when it goes back to the pool)."""
    connection = engine.raw_connection()
    if is_postgres(engine):
        connection.driver_connection.autocommit = True  # type: ignore[union-attr]
    return connection


def close_reader(connection: Any) -> None:
    driver = connection.driver_connection
    if getattr(driver, "broken", False):
        # psycopg: the server went away while we held it (restart); the pool must not lend it again.
        connection.invalidate()
        connection.close()
        return
    if getattr(driver, "autocommit", False) is True and not driver.closed:
        driver.autocommit = False  # as the pool lends it to SQLAlchemy
    connection.close()
