"""What several commands share: the app's settings and auth service, the metrics options."""

from __future__ import annotations

import click
from flask import current_app

from auth.service import AuthService
from coordination_api.config import Settings
from coordination_api.metrics import serve_metrics


def settings() -> Settings:
    found: Settings = current_app.config["SETTINGS"]
    return found


def auth() -> AuthService:
    service: AuthService = current_app.extensions["auth"]
    return service


METRICS_PORT = click.option(
    "--metrics-port", type=click.IntRange(1, 65535), help="serve this process's /metrics on this port"
)
METRICS_HOST = click.option("--metrics-host", default="127.0.0.1", show_default=True)


def metrics_endpoint(port: int | None, host: str) -> None:
    """A process of its own (a container without ``serve``) can expose its counters itself."""
    if port is not None:
        serve_metrics(host, port)
