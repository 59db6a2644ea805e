"""The delivery worker counts its notifications (ok / retrying), the outbox gauges follow the backlog, and
a stopping worker finishes the notification it is sending."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from flask import Flask
from prometheus_client import REGISTRY
from sqlalchemy import select

from coordination_api.storage.schema import subscription_outbox
from coordination_api.subscriptions import worker_loop
from tests.conftest import Fhir
from tests.subscriptions.conftest import Receiver
from tests.support.subscriptions import active, classic, encounter

Pump = Callable[..., None]


def _deliveries(outcome: str) -> float:
    labels = {"channel": "rest-hook", "outcome": outcome}
    return REGISTRY.get_sample_value("coordination_subscription_deliveries_total", labels) or 0.0


def _gauge(fhir: Fhir, name: str) -> float:
    for line in fhir.client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exposed")


def test_deliveries_are_counted_by_outcome(sub_fhir: Fhir, receiver: Receiver, pump: Pump) -> None:
    active(sub_fhir, pump, receiver, classic(receiver.url))
    ok, retrying = _deliveries("ok"), _deliveries("retrying")
    receiver.answer = 500
    sub_fhir.create(encounter("finished"))
    assert _gauge(sub_fhir, "coordination_outbox_pending") == 1
    pump(lambda: _deliveries("retrying") >= retrying + 1)
    receiver.answer = 200
    pump(lambda: _deliveries("ok") == ok + 1)
    assert _gauge(sub_fhir, "coordination_outbox_pending") == 0
    assert _gauge(sub_fhir, "coordination_outbox_oldest_pending_age_seconds") == 0


class _SlowEndpoint:
    """Answers handshakes at once; holds each event notification until ``release`` is set."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.notifications = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if b'"event-notification"' in raw:
                    owner.notifications += 1
                    owner.entered.set()
                    owner.release.wait(10)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_stopping_worker_finishes_the_notification_being_sent(sub_app: Flask, sub_fhir: Fhir) -> None:
    endpoint = _SlowEndpoint()
    try:
        sub = sub_fhir.create(classic(endpoint.url))
        worker_loop(sub_app, threading.Event(), once=True)  # handshake: active
        assert sub_fhir.request("GET", f"/fhir/Subscription/{sub['id']}").get_json()["status"] == "active"
        sub_fhir.create(encounter("finished"))
        sub_fhir.create(encounter("finished"))
        stop = threading.Event()
        worker = threading.Thread(target=worker_loop, args=(sub_app, stop))
        worker.start()
        assert endpoint.entered.wait(10)
        stop.set()  # as SIGTERM does
        endpoint.release.set()
        worker.join(10)
        assert not worker.is_alive()
    finally:
        endpoint.close()
    engine = sub_app.extensions["coordination"].repo.engine
    with engine.connect() as conn:
        rows = conn.execute(
            select(subscription_outbox.c.event_number, subscription_outbox.c.status).order_by(
                subscription_outbox.c.event_number
            )
        ).all()
    assert [tuple(r) for r in rows] == [(1, "delivered"), (2, "pending")]
    assert endpoint.notifications == 1
