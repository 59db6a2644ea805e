"""An app with chosen database timeouts, and another process's write lock held on the test database."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from sqlalchemy import create_engine, text

from coordination_api.app import create_app
from coordination_api.config import DatabaseTimeouts, Settings
from coordination_api.storage.migrate import upgrade
from tests.conftest import close_app


@contextmanager
def timeouts_app(database_url: str, timeouts: DatabaseTimeouts) -> Iterator[Flask]:
    """An app of its own over the test database, with the timeouts under test."""
    application = create_app(Settings(database_url=database_url, audit_reads="sync", db_timeouts=timeouts))
    application.config["TESTING"] = True
    upgrade(application.extensions["coordination"].repo.engine)
    try:
        yield application
    finally:
        close_app(application)


@contextmanager
def write_lock_held(database_url: str, backend: str) -> Iterator[None]:
    """Another process's open write transaction: SQLite BEGIN IMMEDIATE takes the database's write
    lock; PostgreSQL EXCLUSIVE on the resource table blocks its writers, not its readers."""
    if backend == "sqlite":
        holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text("LOCK TABLE resource IN EXCLUSIVE MODE"))
            yield
    finally:
        engine.dispose()
