"""``coordination worker``: subscription notifications, dispatch timers and connector jobs."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from coordination_api.cli.common import METRICS_HOST, METRICS_PORT, metrics_endpoint, settings
from coordination_api.integrations.status import log_states
from coordination_api.subscriptions import run_worker


@click.command("worker")
@METRICS_PORT
@METRICS_HOST
@click.option("--no-connector-lines", is_flag=True, hidden=True, help="serve has logged them already")
@with_appcontext
def worker(metrics_port: int | None, metrics_host: str, no_connector_lines: bool) -> None:
    """Subscription delivery worker: handshakes, notifications in event order, heartbeats, retries
    (any number of processes; stops on SIGTERM)."""
    if not no_connector_lines:
        log_states(settings())
    metrics_endpoint(metrics_port, metrics_host)
    run_worker(current_app._get_current_object())  # type: ignore[attr-defined]
