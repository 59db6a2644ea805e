"""Fixtures: an app with the subscriptions package wired in, and a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient

from coordination_api.app import create_app
from coordination_api.config import Settings, SubscriptionSettings
from coordination_api.storage.migrate import upgrade
from coordination_api.subscriptions.worker import Deliverer
from tests.conftest import Fhir, _truncate, authed, close_app

FAST = SubscriptionSettings(
    connect_timeout=1.0,
    read_timeout=2.0,
    retry_base=0.05,
    retry_cap=0.2,
    retry_jitter=0.1,
    lease=5.0,
    poll_interval=0.01,
)


@pytest.fixture(scope="session")
def sub_app(database_url: str) -> Iterator[Flask]:
    """The app as ``create_app`` wires it (hook, $status/$events routes), with short delays."""
    settings = Settings(database_url=database_url, audit_reads="sync")
    app = create_app(settings)
    app.config["TESTING"] = True
    upgrade(app.extensions["coordination"].repo.engine)
    app.extensions["subscriptions"].config = FAST
    yield app
    close_app(app)


@pytest.fixture
def sub_fhir(sub_app: Flask) -> Fhir:
    _truncate(sub_app)
    sub_app.extensions["subscriptions"].config = FAST
    client: FlaskClient = authed(sub_app.test_client())
    return Fhir(client)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(self.raw)
        return data

    @property
    def status(self) -> dict[str, Any]:
        """The SubscriptionStatus parameters, by name (notification-event as a list of part dicts)."""
        params = self.body["entry"][0]["resource"]["parameter"]
        out: dict[str, Any] = {"notification-event": []}
        for p in params:
            if p["name"] == "notification-event":
                out["notification-event"].append(
                    {q["name"]: next(v for k, v in q.items() if k != "name") for q in p["part"]}
                )
            else:
                out[p["name"]] = next(v for k, v in p.items() if k != "name")
        return out

    @property
    def kind(self) -> str:
        value: str = self.status["type"]
        return value


@dataclass
class Receiver:
    """A real HTTP endpoint: records what it gets; answers ``answer`` (200 by default)."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    answer: int = 200
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                owner.received.append(Received(self.path, dict(self.headers.items()), raw))
                self.send_response(owner.answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self.server = server
        self.thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            assert self.thread is not None
            self.thread.join()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def of_kind(self, kind: str) -> list[Received]:
        return [r for r in self.received if r.kind == kind]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


@pytest.fixture
def pump(sub_app: Flask) -> Iterator[Callable[..., None]]:
    """Run worker passes until ``until()`` holds (or fail after ``timeout`` seconds)."""
    deliverer = Deliverer(sub_app)

    def run(until: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            deliverer.run_once()
            if until():
                return
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            time.sleep(0.02)

    yield run
    deliverer.close()


# The sending-pool tests' listeners and worker (tests/subscriptions/slow.py), shared as fixtures.
from tests.subscriptions.slow import running, troubled  # noqa: E402, F401
