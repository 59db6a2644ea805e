"""Alembic environment: runs our migrations on the engine the settings name."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from coordination_api.storage.engine import make_engine

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        # For autogenerate only: the tables of every owner (storage's and auth's), which the caller
        # passes in config.attributes["target_metadata"] (storage imports nothing of auth); the same
        # comparison runs in tests/storage/test_schema_migrations.py. Without it autogenerate refuses.
        target_metadata=config.attributes.get("target_metadata"),
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


run_migrations_online()
