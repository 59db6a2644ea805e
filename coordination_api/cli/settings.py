"""``coordination settings``: every setting, its environment variable, default and meaning."""

from __future__ import annotations

import click

from coordination_api.config import settings_table


@click.command("settings")
def settings_command() -> None:
    """Print the settings table (Markdown; the README's "Configuration" table is this output)."""
    click.echo(settings_table(), nl=False)
