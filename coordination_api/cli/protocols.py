"""``coordination protocols``: the protocol library (PlanDefinition / ActivityDefinition)."""

from __future__ import annotations

from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from coordination_api.coordination.protocol_library import load_definitions
from coordination_api.errors import FhirError


@click.group("protocols")
def protocols_group() -> None:
    """Protocol library (PlanDefinition / ActivityDefinition)."""


@protocols_group.command("load")
@click.option("--dir", "directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@with_appcontext
def protocols_load(directory: Path | None) -> None:
    """Create or update definitions by url and version (default: the shipped French library)."""
    try:
        loaded = load_definitions(current_app.extensions["coordination"], directory)
    except FhirError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    click.echo(f"protocols: {loaded.summary()}")
