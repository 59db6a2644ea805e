"""``coordination keys``: token-signing keys."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from coordination_api.cli.common import auth


@click.group("keys")
def keys() -> None:
    """Token-signing keys."""


@keys.command("rotate")
@with_appcontext
def keys_rotate() -> None:
    """New signing key; the old ones stay published until their tokens have expired."""
    kid = auth().keys.rotate()
    click.echo(f"new signing key {kid}")
