"""Apply Alembic migrations programmatically (``coordination db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from coordination_api.storage.engine import is_postgres

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        if is_postgres(conn):
            # A migration may rebuild an index of a large table: no per-statement limit (the
            # lock timeout stays, so it does not queue every request behind it for ever).
            conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def head_revisions() -> frozenset[str]:
    """The newest migration(s) of the code."""
    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def current_revisions(engine: Engine) -> frozenset[str]:
    """The migration(s) the database is at."""
    with engine.connect() as conn:
        return frozenset(MigrationContext.configure(conn).get_current_heads())


def is_current(engine: Engine) -> bool:
    """True when the database is at the newest migration."""
    return current_revisions(engine) == head_revisions()
