"""``coordination serve``: gunicorn, the MLLP listener and the delivery worker as supervised children."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from coordination_api.cli.common import settings as app_settings
from coordination_api.config import process_environment
from coordination_api.integrations.hl7v2 import plain_host_allowed
from coordination_api.integrations.status import log_states
from coordination_api.net import is_loopback
from coordination_api.server import Child, supervise
from coordination_api.storage.stats import check_at_start


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, show_default="PORT, else 8080")
@click.option("--workers", default=1, type=click.IntRange(1, 64), show_default=True)
@click.option("--threads", default=8, type=click.IntRange(1, 256), show_default=True)
@click.option("--mllp-port", type=int, show_default="MLLP_PORT, else 2575")
@click.option("--no-mllp", is_flag=True, help="Do not start the HL7 v2 MLLP listener.")
@click.option("--no-worker", is_flag=True, help="Do not start the subscription delivery worker.")
@with_appcontext
def serve(
    host: str,
    port: int | None,
    workers: int,
    threads: int,
    mllp_port: int | None,
    no_mllp: bool,
    no_worker: bool,
) -> None:
    """Serve the API with gunicorn, with the MLLP listener (on the same host) and the delivery
    worker as child processes (migrations must be applied: ``coordination db upgrade``)."""
    settings = app_settings()
    if not is_loopback(host) and settings.security_disabled:
        raise click.ClickException(
            f"Refusing to bind {host}: security is disabled (COORDINATION_SECURITY_DISABLED), "
            "so the API only listens on loopback."
        )
    if not no_mllp and not plain_host_allowed(host, settings.hl7v2):
        raise click.ClickException(
            f"Refusing to start plain MLLP on {host}: use --no-mllp, MLLP over TLS "
            "(COORDINATION_MLLP_TLS_*) or COORDINATION_MLLP_ALLOW_REMOTE_PLAIN."
        )
    port = settings.port if port is None else port
    mllp_port = settings.hl7v2.port if mllp_port is None else mllp_port
    log_states(settings)  # one line per connector: active, off or misconfigured (issue 19)
    stats = current_app.extensions["coordination"].stats
    if stats is not None:
        # Once, before the workers: autovacuum off is warned about; tables a bulk load left without
        # statistics are analyzed before the first request plans against them (issue 21).
        check_at_start(stats)
    # Child processes, not threads: gunicorn forks its workers, and a forked copy of open database
    # connections must never be shared. gunicorn runs in a child of its own too, so that every child
    # starts with the metrics directory in its environment (metrics.py).
    metrics_dir = settings.metrics_multiproc_dir or tempfile.mkdtemp(prefix="coordination-metrics-")
    for stale in Path(metrics_dir).glob("*.db"):  # counters of an earlier run are not ours
        stale.unlink()
    # /readyz waits for a delivery worker's heartbeat when serve starts one (unless configured).
    requires_worker = settings.ready_requires_worker
    if requires_worker is None:
        requires_worker = not no_worker
    env = process_environment(
        PROMETHEUS_MULTIPROC_DIR=metrics_dir,
        COORDINATION_READY_REQUIRES_WORKER="1" if requires_worker else "0",
    )
    http = [sys.executable, "-m", "coordination_api.server", "--host", host, "--port", str(port)]
    children = {"http": Child("http", [*http, "--workers", str(workers), "--threads", str(threads)], env)}
    if not no_mllp:
        children["mllp"] = Child("mllp", _script("mllp", "--host", host, "--port", str(mllp_port)), env)
    if not no_worker:
        children["worker"] = Child("worker", _script("worker", "--no-connector-lines"), env)
    try:
        code = supervise(children, metrics_dir, settings.supervision)
    finally:
        if not settings.metrics_multiproc_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    if code:
        sys.exit(code)


def _script(*args: str) -> list[str]:
    """The argv of ``coordination <args>``."""
    script = Path(sys.executable).parent / "coordination"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "coordination_api.cli"]
    return [*argv, *args]
