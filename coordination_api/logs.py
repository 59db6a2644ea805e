"""JSON logs, one line per record on standard error, and one access line per HTTP request.

The access line carries the request id (``X-Request-ID``, see app.py), method, route template (the URL
rule, e.g. ``/fhir/<resource_type>/<res_id>``: never the raw path, which holds ids, nor the query
string, which may hold patient data), resource type, FHIR interaction, status, duration and the client
id of the token. Never a token, a query string or a resource body.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Flask, Response, g, has_request_context, request

from coordination_api import metrics
from coordination_api.config import Settings
from coordination_api.fhir.resources import supported_types

access_log = logging.getLogger("coordination_api.access")
# Our top-level packages; each gets the handler (records still propagate, e.g. to pytest's capture).
PACKAGES = ("coordination_api", "auth", "connectors")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, msg, request_id (in a request), the record's
    ``fields`` extra, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if has_request_context():  # every line logged while serving a request names it
            out["request_id"] = g.get("request_id")
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class StderrHandler(logging.Handler):
    """Writes to the current ``sys.stderr`` at each record (not the one present at creation)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging.Handler's own convention
            self.handleError(record)


def configure(level: str, fmt: str) -> None:
    """Install one handler on our package loggers (idempotent: create_app may run many times)."""
    formatter: logging.Formatter = (
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        handler = next((h for h in logger.handlers if isinstance(h, StderrHandler)), None)
        if handler is None:
            handler = StderrHandler()
            logger.addHandler(handler)
        handler.setFormatter(formatter)


def _client_id() -> str | None:
    principal = g.get("principal")
    client_id = getattr(principal, "client_id", None)
    return client_id if isinstance(client_id, str) else None


def init_app(app: Flask, settings: Settings) -> None:
    """Time every request; log its access line and observe its latency histogram."""
    configure(settings.log_level, settings.log_format)
    log_requests = settings.access_log
    known = frozenset(supported_types())

    @app.before_request
    def _start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _access(response: Response) -> Response:
        seconds = time.perf_counter() - g.get("request_started", time.perf_counter())
        rule = request.url_rule
        interaction = metrics.interaction(rule, request.method)
        type_name = metrics.resource_type(rule, request.view_args, known)
        metrics.observe_request(interaction, type_name, response.status_code, seconds)
        if request.endpoint == "auth.token" and response.status_code == 200:
            metrics.token_issued(request.form.get("grant_type"))
        if not log_requests:
            return response
        access_log.info(
            "request",
            extra={
                "fields": {
                    "request_id": g.get("request_id"),
                    "method": request.method,
                    "route": rule.rule if rule is not None else None,
                    "resource_type": type_name or None,
                    "interaction": interaction,
                    "status": response.status_code,
                    "duration_ms": round(seconds * 1000, 2),
                    "client_id": _client_id(),
                }
            },
        )
        return response
