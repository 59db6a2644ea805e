"""Database engine creation, with the per-dialect settings both databases need.

Every connection is bounded (docs/operations.md, database faults): PostgreSQL gets statement_timeout,
lock_timeout and idle_in_transaction_session_timeout at connect, and a connect timeout; SQLite gets
busy_timeout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from coordination_api.config import DatabaseTimeouts

WRITE = {"coordination_write": True}


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
        if conn.get_execution_options().get("coordination_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def is_postgres(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


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
