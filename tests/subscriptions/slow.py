"""Slow, hanging and failing listeners for the sending-pool tests (issue 17, review 20), and their
fixtures."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask import Flask

from coordination_api.subscriptions import worker_loop
from tests.conftest import Fhir
from tests.subscriptions.conftest import FAST, Received, Receiver
from tests.support.subscriptions import classic

SLOW = replace(FAST, read_timeout=60.0, lease=90.0, concurrency=8, per_origin=2)
BOUND = 3.0  # seconds: far below one read timeout of a hanging endpoint


class Troubled(Receiver):
    """A receiver whose behaviour can be switched: ``ok``, ``hang`` (until released), ``fail`` (500),
    ``reset`` (the connection is reset before any answer), ``slow`` (recorded on arrival, answered 200
    after ``delay`` seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.mode = "ok"
        self.release = threading.Event()
        self.hanging = 0
        self.delay = 4.0

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                mode = owner.mode
                if mode == "hang":
                    owner.hanging += 1
                    owner.release.wait(120)
                    return  # no answer: the client times out or the connection is dropped
                if mode == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if mode == "fail":
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                owner.received.append(Received(self.path, dict(self.headers.items()), raw))
                if mode == "slow":
                    time.sleep(owner.delay)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def handle(self) -> None:
                with contextlib.suppress(OSError):
                    super().handle()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self.server = server
        self.thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        super().stop()


@pytest.fixture
def troubled() -> Iterator[Callable[[], Troubled]]:
    made: list[Troubled] = []

    def make() -> Troubled:
        r = Troubled()
        r.start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


@pytest.fixture
def running(sub_app: Flask, sub_fhir: Fhir) -> Iterator[Callable[[], None]]:
    """Start the real worker loop (its lanes and sending pool) with SLOW settings."""
    sub_app.extensions["subscriptions"].config = SLOW
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start() -> None:
        thread = threading.Thread(target=worker_loop, args=(sub_app, stop), daemon=True)
        thread.start()
        threads.append(thread)

    yield start
    stop.set()
    for thread in threads:
        thread.join(30)
    sub_app.extensions["subscriptions"].config = FAST


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - start


def subscribe(fhir: Fhir, url: str) -> str:
    sub = fhir.create(classic(url))
    wait_for(
        lambda: fhir.request("GET", f"/fhir/Subscription/{sub['id']}").get_json()["status"] == "active",
        BOUND,
        "handshake",
    )
    sub_id: str = sub["id"]
    return sub_id


def numbers(receiver: Receiver) -> list[int]:
    return [
        int(event["event-number"])
        for note in receiver.of_kind("event-notification")
        for event in note.status["notification-event"]
    ]
