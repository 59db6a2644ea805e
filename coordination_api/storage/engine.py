"""Database engine creation, with the per-dialect settings both databases need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

WRITE = {"coordination_write": True}


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    """Create the engine; SQLite gets WAL and write transactions that take the lock up front."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database, echo)
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        echo=echo,
    )


def _sqlite_engine(url: str, database: str | None, echo: bool) -> Engine:
    connect_args = {"timeout": 60, "check_same_thread": False}
    if not database or database == ":memory:":
        # One shared connection, or each pooled connection would see its own empty database.
        engine = create_engine(url, echo=echo, connect_args=connect_args, poolclass=StaticPool)
    else:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args=connect_args, pool_size=20, max_overflow=20)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's "begin" event own BEGIN (pysqlite's implicit one is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
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
    if engine.dialect.name == "postgresql":
        connection.driver_connection.autocommit = True  # type: ignore[union-attr]
    return connection


def close_reader(connection: Any) -> None:
    driver = connection.driver_connection
    if getattr(driver, "autocommit", False) is True and not driver.closed:
        driver.autocommit = False  # as the pool lends it to SQLAlchemy
    connection.close()
