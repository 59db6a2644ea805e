"""``coordination db``: migrations, then the shipped conformance artefacts and protocol library."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from coordination_api.conformance_load import load_conformance
from coordination_api.coordination.protocol_library import load_definitions
from coordination_api.storage.migrate import upgrade


@click.group("db")
def db() -> None:
    """Database management."""


@db.command("upgrade")
@with_appcontext
def db_upgrade() -> None:
    """Apply all migrations."""
    repo = current_app.extensions["coordination"].repo
    upgrade(repo.engine)
    loaded = load_conformance(repo)
    click.echo(
        f"database is up to date; conformance artefacts: {loaded.created} created, "
        f"{loaded.updated} updated, {loaded.unchanged} unchanged"
    )
    protocols = load_definitions(current_app.extensions["coordination"], mode="missing")
    click.echo(f"protocol library (created only when missing): {protocols.summary()}")
