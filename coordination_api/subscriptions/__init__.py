"""Subscriptions: R4 classic criteria and Backport topic-based rest-hook subscriptions.

- write-time matching into an outbox, in the write transaction (service.py)
- the delivery worker: handshake, notifications, heartbeats, retries (worker.py)
- $status and $events (operations.py)
"""

from __future__ import annotations

import threading

from flask import Blueprint, Flask, Response

from coordination_api.config import Settings, SubscriptionSettings
from coordination_api.outbox import doorbell
from coordination_api.storage.repository import Repository
from coordination_api.subscriptions import operations, worker
from coordination_api.subscriptions.service import SubscriptionService
from coordination_api.subscriptions.topics import TOPICS

__all__ = [
    "TOPICS",
    "SubscriptionSettings",
    "init_app",
    "register_routes",
    "run_worker",
    "start_in_thread",
    "worker_loop",
]


def init_app(
    app: Flask, repo: Repository, settings: Settings, config: SubscriptionSettings | None = None
) -> None:
    """Attach the write hook (once per app); the service lives in ``app.extensions["subscriptions"]``."""
    if "subscriptions" in app.extensions:
        return
    service = SubscriptionService(
        repo, app.extensions["coordination"].compiler, config or settings.subscriptions
    )
    service.criteria_guard = app.extensions.get("subscriptions_criteria_guard")
    app.extensions["subscriptions"] = service
    repo.on_written.append(service.on_written)
    doorbell.of(repo.engine)  # before the first connection: its commit events must see every write


def register_routes(bp: Blueprint) -> None:
    """$status and $events on the FHIR blueprint; call once, before the blueprint is registered."""

    def status_all() -> Response:
        return operations.status()

    def status_one(res_id: str) -> Response:
        return operations.status(res_id)

    def events(res_id: str) -> Response:
        return operations.events(res_id)

    methods = ["GET", "POST"]
    bp.add_url_rule("/Subscription/$status", "subscription_status", status_all, methods=methods)
    bp.add_url_rule(
        "/Subscription/<res_id>/$status", "subscription_status_instance", status_one, methods=methods
    )
    bp.add_url_rule("/Subscription/<res_id>/$events", "subscription_events", events, methods=methods)


def worker_loop(app: Flask, stop_event: threading.Event, *, once: bool = False) -> None:
    """Deliver until ``stop_event`` is set (one pass when ``once``)."""
    worker.worker_loop(app, stop_event, once=once)


def run_worker(app: Flask) -> None:
    """`coordination worker`: deliver until SIGTERM / SIGINT (main thread only)."""
    worker.run_worker(app)


def start_in_thread(app: Flask) -> tuple[threading.Thread, threading.Event]:
    """The worker inside the server process (`make run`); set the returned event to stop it."""
    return worker.start_in_thread(app)
