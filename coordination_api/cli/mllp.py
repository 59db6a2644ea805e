"""``coordination mllp``: the HL7 v2 MLLP listener alone."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from coordination_api.cli.common import METRICS_HOST, METRICS_PORT, metrics_endpoint, settings
from coordination_api.integrations.hl7v2 import mllp_server
from coordination_api.server import SignalWaiter


@click.command("mllp")
@click.option("--host", default=None, help="default COORDINATION_MLLP_HOST (127.0.0.1)")
@click.option("--port", type=int, show_default="MLLP_PORT, else 2575")
@click.option("--max-message-bytes", default=1_048_576, type=click.IntRange(1024), show_default=True)
@click.option("--idle-timeout", default=None, type=click.FloatRange(1), help="default 60 s (settings)")
@METRICS_PORT
@METRICS_HOST
@with_appcontext
def mllp(
    host: str | None,
    port: int | None,
    max_message_bytes: int,
    idle_timeout: float | None,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """HL7 v2 MLLP listener: ADT messages stored as encounter events, ACKs with MSA AA/AE/AR.
    Plain MLLP binds loopback only unless COORDINATION_MLLP_ALLOW_REMOTE_PLAIN; it accepts the senders
    of COORDINATION_MLLP_SENDERS; with COORDINATION_MLLP_TLS_* it requires client certificates."""
    metrics_endpoint(metrics_port, metrics_host)
    config = settings().hl7v2
    host = host or config.host
    port = config.port if port is None else port
    try:
        server = mllp_server(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            host,
            port,
            max_message_bytes=max_message_bytes,
            idle_timeout=idle_timeout,
        )
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        server.start()
    except OSError as exc:
        raise click.ClickException(f"MLLP listener cannot bind {host}:{port}: {exc.strerror}") from None
    waiter = SignalWaiter()  # before saying we listen: a SIGTERM may follow at once
    click.echo(f"MLLP listening on {host}:{server.port}")
    while not waiter.stop_requested:
        waiter.wait(60.0)
    server.stop()  # no new connection or message; those being handled are answered
    click.echo("MLLP listener stopped")
