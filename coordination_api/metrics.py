"""Prometheus metrics: what the processes count, and ``GET /metrics`` (no token, CONTRACT).

The metric objects live here, created once at import (so any number of ``create_app`` calls in one
process never registers a name twice); the code that counts calls one small function of this module.

Multi-process: ``coordination serve`` runs gunicorn workers, the delivery worker and the MLLP listener
as separate processes. It gives them a fresh directory in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's
multiprocess mode, which must be set before the first import of prometheus_client in a process: that is
why serve starts gunicorn as a child process too), and ``/metrics`` aggregates the files of every
process. Without that variable (tests, a lone process) the default in-process registry is served.
Gauges computed at scrape time (outbox depth and age) are read from the database by the scraping process.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, event, func, select, text
from werkzeug.routing import Rule

from coordination_api.config import Settings
from coordination_api.health import read_child_state
from coordination_api.storage.engine import is_postgres
from coordination_api.storage.repository import now_us
from coordination_api.storage.schema import subscription_outbox

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)

REQUEST_SECONDS = Histogram(
    "coordination_http_request_duration_seconds",
    "HTTP request latency by FHIR interaction, resource type and status class.",
    ["interaction", "resource_type", "status_class"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
DB_POOL_CHECKED_OUT = Gauge(
    "coordination_db_pool_checked_out",
    "Database connections checked out of the SQLAlchemy pools (all live processes).",
    multiprocess_mode="livesum",
)
DELIVERIES = Counter(
    "coordination_subscription_deliveries_total",
    "Subscription notification deliveries by channel and outcome (ok, retrying, failed).",
    ["channel", "outcome"],
)
HL7V2_MESSAGES = Counter(
    "coordination_hl7v2_messages_total",
    "HL7 v2 messages answered, by transport (mllp, http) and MSA acknowledgment code.",
    ["transport", "ack_code"],
)
TOKENS_ISSUED = Counter(
    "coordination_tokens_issued_total",
    "Access tokens issued by the token endpoint, by grant type.",
    ["grant_type"],
)

GRANT_TYPES = frozenset({"authorization_code", "client_credentials", "refresh_token"})
ACK_CODES = frozenset({"AA", "AE", "AR"})
DELIVERY_OUTCOMES = frozenset({"ok", "retrying", "failed"})
_OPERATION = re.compile(r"\$([A-Za-z][\w-]*)")
_LITERAL_TYPE = re.compile(r"^/fhir/([A-Z][A-Za-z]+)(?:/|$)")
# Endpoint (blueprint.view) -> interaction, by HTTP method (R4 http.html#summary names).
_INTERACTIONS: dict[str, dict[str, str]] = {
    "fhir.metadata": {"GET": "capabilities"},
    "fhir.system": {"GET": "search-system", "POST": "transaction"},
    "fhir.system_history": {"GET": "history-system"},
    "fhir.type_level": {"GET": "search-type", "POST": "create", "PUT": "update", "DELETE": "delete"},
    "fhir.search_post": {"POST": "search-type"},
    "fhir.type_history": {"GET": "history-type"},
    "fhir.instance": {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"},
    "fhir.instance_history": {"GET": "history-instance"},
    "fhir.vread": {"GET": "vread"},
}


# -- what the code calls ----------------------------------------------------------------------------


def delivery(channel: str, outcome: str) -> None:
    """One notification attempt of the delivery worker ended: ``ok``, ``retrying`` or ``failed``."""
    DELIVERIES.labels(channel, outcome if outcome in DELIVERY_OUTCOMES else "failed").inc()


def hl7v2_message(transport: str, ack_code: str) -> None:
    """One HL7 v2 message answered with ``ack_code`` (MSA-1)."""
    HL7V2_MESSAGES.labels(transport, ack_code if ack_code in ACK_CODES else "other").inc()


def token_issued(grant_type: str | None) -> None:
    TOKENS_ISSUED.labels(grant_type if grant_type in GRANT_TYPES else "other").inc()


def interaction(rule: Rule | None, method: str) -> str:
    """The FHIR interaction (or operation ``$name``) a URL rule serves; the endpoint name elsewhere.
    Bounded: never built from the raw path."""
    if rule is None:
        return "unmatched"
    method = "GET" if method == "HEAD" else method
    by_method = _INTERACTIONS.get(rule.endpoint or "")
    if by_method is not None:
        return by_method.get(method, "other")
    operation = _OPERATION.search(rule.rule)
    if operation:
        return "$" + operation.group(1)
    return rule.endpoint or "other"


def resource_type(rule: Rule | None, view_args: dict[str, Any] | None, known: Iterable[str]) -> str:
    """The resource type of the request (from the URL rule), or "" when there is none or it is unknown."""
    if rule is None:
        return ""
    given = (view_args or {}).get("resource_type")
    if isinstance(given, str):
        return given if given in known else "unknown"
    literal = _LITERAL_TYPE.match(rule.rule)
    return literal.group(1) if literal else ""


def observe_request(interaction_name: str, type_name: str, status: int, seconds: float) -> None:
    REQUEST_SECONDS.labels(interaction_name, type_name, f"{status // 100}xx").observe(seconds)


def instrument_engine(engine: Engine) -> None:
    """Count the connections checked out of this engine's pool (every process sums into one gauge)."""

    def _checkout(*_args: Any) -> None:
        DB_POOL_CHECKED_OUT.inc()

    def _checkin(*_args: Any) -> None:
        DB_POOL_CHECKED_OUT.dec()

    event.listen(engine, "checkout", _checkout)
    event.listen(engine, "checkin", _checkin)


# -- scrape-time gauges ------------------------------------------------------------------------------


class OutboxCollector(Collector):
    """Pending subscription notifications and the age of the oldest, read when scraped. A slow or
    unreachable database makes the scrape report ``coordination_outbox_scrape_ok 0`` rather than hang
    (PostgreSQL: a statement timeout; SQLite readers are never blocked in WAL mode)."""

    def __init__(self, engine: Engine, timeout_ms: int = 1000) -> None:
        self.engine = engine
        self.timeout_ms = timeout_ms

    def collect(self) -> Iterator[Metric]:
        o = subscription_outbox
        ok = GaugeMetricFamily(
            "coordination_outbox_scrape_ok", "1 when the outbox gauges could be read at this scrape."
        )
        try:
            with self.engine.connect() as conn, conn.begin():
                if is_postgres(self.engine):
                    conn.execute(text(f"SET LOCAL statement_timeout = {int(self.timeout_ms)}"))
                depth, oldest = conn.execute(
                    select(func.count(), func.min(o.c.created_us)).where(o.c.status == "pending")
                ).one()
        except Exception as exc:  # noqa: BLE001 - a scrape reports the failure, it never raises
            log.warning("metrics: outbox gauges unavailable (%s)", type(exc).__name__)
            ok.add_metric([], 0)
            yield ok
            return
        ok.add_metric([], 1)
        yield ok
        yield GaugeMetricFamily(
            "coordination_outbox_pending", "Subscription notifications waiting for delivery.", value=depth
        )
        age = 0.0 if oldest is None else max(now_us() - int(oldest), 0) / 1_000_000
        yield GaugeMetricFamily(
            "coordination_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending subscription notification (0 when none is pending).",
            value=age,
        )


class ChildCollector(Collector):
    """``coordination serve``'s supervised children, from the state file it publishes (health.py):
    restarts since serve started, and whether each is up now."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        children = read_child_state(self.directory)
        if not children:
            return
        restarts = CounterMetricFamily(
            "coordination_child_restarts",
            "Restarts of a child process of `coordination serve` after it exited unexpectedly.",
            labels=["child"],
        )
        up = GaugeMetricFamily(
            "coordination_child_up",
            "1 while a child process of `coordination serve` runs, 0 while it waits to be restarted.",
            labels=["child"],
        )
        for name, child in sorted(children.items()):
            restarts.add_metric([name], float(child.get("restarts", 0)))
            up.add_metric([name], 1.0 if child.get("state") == "running" else 0.0)
        yield restarts
        yield up


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition of every process's metrics and the scrape-time gauges."""
    settings: Settings = current_app.config["SETTINGS"]
    scraped = CollectorRegistry()
    scraped.register(OutboxCollector(current_app.extensions["coordination"].repo.engine))
    scraped.register(ChildCollector(settings.metrics_multiproc_dir))
    if settings.metrics_multiproc_dir:
        shared = CollectorRegistry()
        multiprocess.MultiProcessCollector(shared, path=settings.metrics_multiproc_dir)  # type: ignore[no-untyped-call]
        body = generate_latest(shared)
    else:
        body = generate_latest(REGISTRY)
    response = Response(body + generate_latest(scraped), mimetype=None)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def serve_metrics(host: str, port: int) -> None:
    """``/metrics`` of this process alone on ``host:port`` (a daemon thread), for a delivery worker or
    MLLP listener that runs in a container of its own: compose's containers do not share a
    multiprocess directory (each has its own PID namespace, and the files are named by PID)."""
    start_http_server(port, addr=host)


def init_app(app: Flask) -> None:
    """Serve ``/metrics`` and count this app's database pool."""
    instrument_engine(app.extensions["coordination"].repo.engine)
    app.register_blueprint(bp)
