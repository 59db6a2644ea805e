"""A delivery worker killed with SIGKILL in the middle of a POST: a new worker delivers every event.

Real processes: `coordination worker` runs as a subprocess on the test database, the webhook is a real
HTTP server on 127.0.0.1 that takes 50 ms per request, and the first worker is killed (SIGKILL, from
inside the receiver, while it waits for the answer) once a third of the discharges have arrived.
A second worker must then deliver every event number 1..N at least once (the interrupted one again
after its lease), the first arrival of each number in increasing order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import Fhir
from tests.subscriptions.conftest import Receiver
from tests.support.messages import as_sender, discharge_message
from tests.support.subscriptions import active, discharge_subscription

Pump = Callable[..., None]

N = 40
DELAY = 0.05  # seconds the receiver takes per request, so that the kill lands mid-delivery
LEASE = 2.0  # the killed worker's claim on its in-flight row expires after this

# Delivery settings of the worker subprocesses, through the environment (COORDINATION_SUBSCRIPTION_*).
WORKER_ENV = {
    "COORDINATION_SUBSCRIPTION_LEASE": str(LEASE),
    "COORDINATION_SUBSCRIPTION_POLL_INTERVAL": "0.05",
    "COORDINATION_SUBSCRIPTION_RETRY_BASE": "0.1",
    "COORDINATION_SUBSCRIPTION_RETRY_CAP": "0.5",
    "COORDINATION_SUBSCRIPTION_CONNECT_TIMEOUT": "1",
    "COORDINATION_SUBSCRIPTION_READ_TIMEOUT": "5",
}


def _worker_argv() -> list[str]:
    return [str(Path(sys.executable).parent / "coordination"), "worker"]


class SlowReceiver:
    """Records (event number, arrival time) of each event notification, then answers 200 after DELAY.

    ``on_arrival(count)`` runs in the request thread after each notification is recorded, before
    the answer: the test kills the worker from there, while that worker waits for this very answer.
    """

    def __init__(self, on_arrival: Callable[[int], None]) -> None:
        self.arrivals: list[tuple[int, float]] = []
        self.lock = threading.Lock()
        self.on_arrival = on_arrival
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                numbers = _event_numbers(orjson.loads(raw))
                if numbers:
                    with owner.lock:
                        owner.arrivals.extend((n, time.monotonic()) for n in numbers)
                        count = len(owner.arrivals)
                    owner.on_arrival(count)
                time.sleep(DELAY)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the worker died while we were answering

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def numbers(self) -> list[int]:
        with self.lock:
            return [n for n, _ in self.arrivals]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _event_numbers(bundle: dict[str, Any]) -> list[int]:
    """Event numbers of an event-notification (history Bundle, SubscriptionStatus Parameters first)."""
    params = bundle["entry"][0]["resource"]["parameter"]
    if not any(p["name"] == "type" and p.get("valueCode") == "event-notification" for p in params):
        return []
    return [
        int(q["valueString"])
        for p in params
        if p["name"] == "notification-event"
        for q in p["part"]
        if q["name"] == "event-number"
    ]


class Workers:
    """The worker subprocesses of one test; every one is reaped in ``close``."""

    def __init__(self, database_url: str, log: Path) -> None:
        self.env = {**os.environ, "COORDINATION_DATABASE_URL": database_url, **WORKER_ENV}
        self.env.pop("COORDINATION_PUBLIC_BASE_URL", None)
        self.log = log
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            proc = subprocess.Popen(_worker_argv(), env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def tail(self) -> str:
        return self.log.read_text("utf-8", errors="replace")[-3000:] if self.log.exists() else ""

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(database_url, tmp_path / "worker.log")
    try:
        yield group
    finally:
        group.close()


def test_sigkill_mid_delivery_loses_nothing(
    sub_fhir: Fhir, pump: Pump, workers: Workers, record_property: Callable[[str, object], None]
) -> None:
    killed = threading.Event()
    first: list[subprocess.Popen[bytes]] = []

    def kill_first(count: int) -> None:
        if count >= N // 3 and not killed.is_set():
            killed.set()
            first[0].send_signal(signal.SIGKILL)  # the worker is waiting for this request's answer

    receiver = SlowReceiver(kill_first)
    receiver.start()
    try:
        # Activated by an in-process pass (handshake), so the subprocesses only deliver events.
        body = discharge_subscription(Receiver())
        body["channel"]["endpoint"] = receiver.url
        active(sub_fhir, pump, Receiver(), body)

        first.append(workers.start())
        for k in range(N):
            response = as_sender(sub_fhir.client).post(
                "/fhir/$process-message",
                json=discharge_message(message_id=f"crash-{k}", visit=f"V-CRASH-{k:03d}"),
                headers={"Content-Type": "application/fhir+json"},
            )
            assert response.status_code == 200, response.get_json()

        assert killed.wait(20), f"a third of the events never arrived:\n{workers.tail()}"
        assert first[0].wait(timeout=10) == -signal.SIGKILL
        at_kill = len(receiver.numbers())
        assert at_kill < N, "every event arrived before the kill: nothing was tested"

        second = workers.start()
        deadline = time.monotonic() + 20 + LEASE
        while set(range(1, N + 1)) - set(receiver.numbers()):
            assert second.poll() is None, f"the second worker died:\n{workers.tail()}"
            assert time.monotonic() < deadline, (
                f"missing {sorted(set(range(1, N + 1)) - set(receiver.numbers()))}:\n{workers.tail()}"
            )
            time.sleep(0.05)
        time.sleep(3 * DELAY)  # anything still in flight
    finally:
        receiver.stop()

    numbers = receiver.numbers()
    assert set(numbers) == set(range(1, N + 1)), sorted(set(range(1, N + 1)) - set(numbers))
    assert not set(numbers) - set(range(1, N + 1)), numbers
    duplicates = sorted(n for n in set(numbers) if numbers.count(n) > 1)  # allowed: at least once
    firsts = list(dict.fromkeys(numbers))
    assert firsts == sorted(firsts), firsts
    record_property("arrived_before_kill", at_kill)
    record_property("duplicates", duplicates)
    print(f"{N} events; {at_kill} arrived before SIGKILL; duplicates (at least once): {duplicates}")
