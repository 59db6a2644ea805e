"""The ``coordination`` console script (click, through Flask's CLI)."""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext

from coordination_api.config import Settings


def _create_app() -> Flask:
    from coordination_api.app import create_app

    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False, add_version_option=False)
def main() -> None:
    """CPTS care-coordination FHIR backend."""


def _settings() -> Settings:
    settings: Settings = current_app.config["SETTINGS"]
    return settings


def is_loopback(host: str) -> bool:
    if host in {"localhost", ""}:
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, type=int, show_default=True, envvar="PORT")
@click.option("--workers", default=1, type=click.IntRange(1, 64), show_default=True)
@click.option("--threads", default=8, type=click.IntRange(1, 256), show_default=True)
@with_appcontext
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the API with gunicorn (migrations must be applied: ``coordination db upgrade``)."""
    settings = _settings()
    if not is_loopback(host) and not settings.allow_non_loopback:
        raise click.ClickException(
            f"Refusing to bind {host}: the API has no authentication yet, so it only listens on loopback."
        )
    from coordination_api.server import run_gunicorn

    run_gunicorn(host, port, workers, threads)


@click.group("db")
def db() -> None:
    """Database management."""


@db.command("upgrade")
@with_appcontext
def db_upgrade() -> None:
    """Apply all migrations."""
    from coordination_api.conformance_load import load_conformance
    from coordination_api.storage.migrate import upgrade

    repo = current_app.extensions["coordination"].repo
    upgrade(repo.engine)
    loaded = load_conformance(repo)
    click.echo(
        f"database is up to date; conformance artefacts: {loaded.created} created, "
        f"{loaded.updated} updated, {loaded.unchanged} unchanged"
    )


@click.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--chunk-size", default=500, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 64), help="worker processes")
@with_appcontext
def import_command(files: tuple[str, ...], chunk_size: int, jobs: int) -> None:
    """Import Bundles (transaction, batch, collection) and NDJSON files."""
    from coordination_api.importer import import_files

    svc = current_app.extensions["coordination"]
    summary = import_files(svc, list(files), chunk_size, _progress, jobs=jobs)
    click.echo(summary.render())
    if summary.failed:
        sys.exit(1)


def _progress(label: str, length: int) -> Any:
    return click.progressbar(length=length, label=label, file=sys.stderr)


def register_commands(app: Flask) -> None:
    for command in (serve, db, import_command):
        if command.name not in app.cli.commands:
            app.cli.add_command(command)
