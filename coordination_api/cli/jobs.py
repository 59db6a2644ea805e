"""``coordination jobs``: the connector-jobs outbox (waiting, retrying, dead)."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from coordination_api.jobs import of
from coordination_api.storage.schema import connector_job as j


@click.group("jobs")
def jobs_group() -> None:
    """Connector jobs: calls to outside services waiting, retrying, or dead (the dead-letter)."""


@jobs_group.command("list")
@click.option("--status", type=click.Choice(["pending", "done", "dead"]), default=None)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def jobs_list(status: str | None, limit: int, as_json: bool) -> None:
    """The newest jobs (payloads are not shown: they may name patients)."""
    stmt = select(j.c.pk, j.c.kind, j.c.status, j.c.attempts, j.c.last_error).order_by(j.c.pk.desc())
    if status:
        stmt = stmt.where(j.c.status == status)
    with of(current_app).repo.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt.limit(limit))]
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("no jobs" + (f" with status {status}" if status else ""))
    for r in rows:
        click.echo(f"{r['pk']}\t{r['kind']}\t{r['status']}\t{r['attempts']}\t{r['last_error'] or ''}")


@jobs_group.command("retry")
@click.argument("pk", type=int, required=False)
@with_appcontext
def jobs_retry(pk: int | None) -> None:
    """Queue dead jobs again (one by number, or all), once their cause is fixed."""
    click.echo(f"{of(current_app).retry_dead(pk)} job(s) queued again")
