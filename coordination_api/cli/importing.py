"""``coordination import``: Bundles and NDJSON files in chunked transactions."""

from __future__ import annotations

import sys
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from coordination_api.importer import import_files


@click.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--chunk-size", default=500, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 64), help="worker processes")
@with_appcontext
def import_command(files: tuple[str, ...], chunk_size: int, jobs: int) -> None:
    """Import Bundles (transaction, batch, collection) and NDJSON files."""
    svc = current_app.extensions["coordination"]
    summary = import_files(svc, list(files), chunk_size, _progress, jobs=jobs)
    click.echo(summary.render())
    if summary.failed:
        sys.exit(1)


def _progress(label: str, length: int) -> Any:
    return click.progressbar(length=length, label=label, file=sys.stderr)
