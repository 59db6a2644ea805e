"""Liveness and readiness probes, and the delivery workers' heartbeat that readiness reads."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from functools import cache
from pathlib import Path
from typing import TypedDict

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import Engine, delete, func, select, text, update

from coordination_api.config import Settings
from coordination_api.errors import Category, FhirError
from coordination_api.integrations.status import MISCONFIGURED, describe
from coordination_api.storage.migrate import current_revisions, head_revisions
from coordination_api.storage.schema import worker_heartbeat

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)
US = 1_000_000
# Written by ``coordination serve`` in its metrics directory (PROMETHEUS_MULTIPROC_DIR, which every
# child shares): the state of each supervised child, read by /readyz and /metrics.
CHILD_STATE_FILE = "supervisor.json"


class ChildState(TypedDict):
    state: str  # "running" or "restarting"
    pid: int | None
    restarts: int
    last_exit: str  # "", "exit 1", "signal SIGKILL"


def write_child_state(directory: str, children: dict[str, ChildState]) -> None:
    """Replace the state file atomically (a reader never sees half of it)."""
    path = Path(directory) / CHILD_STATE_FILE
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"children": children}))
    os.replace(tmp, path)


def read_child_state(directory: str) -> dict[str, ChildState]:
    """The supervised children's state; empty outside ``serve`` (or before its first write)."""
    if not directory:
        return {}
    try:
        data = json.loads((Path(directory) / CHILD_STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    children = data.get("children") if isinstance(data, dict) else None
    return children if isinstance(children, dict) else {}


def degraded_parts(settings: Settings) -> list[str]:
    """The supervised children that are down (being restarted by ``serve``), by name."""
    children = read_child_state(settings.metrics_multiproc_dir)
    return sorted(name for name, child in children.items() if child.get("state") != "running")


@bp.get("/healthz")
def healthz() -> Response:
    """The process is alive."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """The database answers, its schema is at the newest migration and, when a delivery worker is
    expected (``COORDINATION_READY_REQUIRES_WORKER``), one has beaten recently.

    Under ``coordination serve``, a child being restarted (the delivery worker, the MLLP listener)
    leaves the instance ready, with ``"status": "degraded"`` and the parts down in ``degraded``:
    the HTTP API still takes and stores messages (notifications wait in the outbox), and a 503
    would make a load balancer refuse that intake too (docs/operations.md, "Readiness"). A misconfigured
    connector degrades the same way (``connector:<name>``); ``connectors`` gives each one's state."""
    engine = current_app.extensions["coordination"].repo.engine
    settings: Settings = current_app.config["SETTINGS"]
    max_age = settings.worker_heartbeat_max_age
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current = _migrations_current(engine)
        beating = current and (not settings.ready_requires_worker or worker_alive(engine, max_age))
    except Exception as exc:
        raise FhirError(Category.TRANSIENT, "Database is not reachable") from exc
    if not current:
        raise FhirError(Category.TRANSIENT, "Database schema is not current: run `coordination db upgrade`")
    if not beating:
        degraded = degraded_parts(settings)
        raise FhirError(
            Category.TRANSIENT,
            f"No delivery worker heartbeat in the last {max_age:g} s"
            + (f" (being restarted: {', '.join(degraded)})" if degraded else ""),
        )
    # Each connector's state (integrations/status.py); a misconfigured one degrades, never unreadies: the
    # API still takes and stores everything, only that outside service is not reached.
    connectors = {c.name: c.state for c in describe(settings)}
    degraded = degraded_parts(settings) + [
        f"connector:{n}" for n, s in connectors.items() if s == MISCONFIGURED
    ]
    if degraded:
        return jsonify(status="degraded", degraded=degraded, connectors=connectors)
    return jsonify(status="ready", connectors=connectors)


def _migrations_current(engine: Engine) -> bool:
    return current_revisions(engine) == _head_revisions()


@cache
def _head_revisions() -> frozenset[str]:
    """The newest migration(s) this code ships (read once: they do not change while it runs)."""
    return head_revisions()


def worker_alive(engine: Engine, max_age: float) -> bool:
    """A delivery worker has written its heartbeat within ``max_age`` seconds."""
    with engine.connect() as conn:
        newest = conn.scalar(select(func.max(worker_heartbeat.c.seen_us)))
    return newest is not None and newest >= int((time.time() - max_age) * US)


class WorkerHeartbeat:
    """The heartbeat row of one delivery worker process: upserted at most every ``interval`` seconds,
    deleted on a clean stop. Rows of workers gone for ``forget_after`` seconds are removed."""

    def __init__(self, engine: Engine, interval: float = 5.0, forget_after: float = 3600.0) -> None:
        self.engine = engine
        self.interval = interval
        self.forget_after = forget_after
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"[:140]
        self._next = 0.0

    def beat(self) -> None:
        if time.monotonic() < self._next:
            return
        hb = worker_heartbeat
        now = int(time.time() * US)
        with self.engine.begin() as conn:
            seen = conn.execute(update(hb).where(hb.c.worker_id == self.worker_id).values(seen_us=now))
            if not seen.rowcount:
                conn.execute(hb.insert().values(worker_id=self.worker_id, seen_us=now))
                conn.execute(delete(hb).where(hb.c.seen_us < now - int(self.forget_after * US)))
        self._next = time.monotonic() + self.interval

    def stop(self) -> None:
        """Remove this worker's row (a clean exit is not a dead worker still counted alive)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(worker_heartbeat).where(worker_heartbeat.c.worker_id == self.worker_id))
        except Exception as exc:  # noqa: BLE001 - the row then simply ages out
            log.warning("worker heartbeat row not removed (%s)", type(exc).__name__)
