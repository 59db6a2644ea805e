"""Chaos under load (issue 17): discharges flow into a real ``coordination serve`` at a steady rate,
three in four through ``$process-message`` and one in four as HL7 v2 ADT^A03 over MLLP, while ``kill -9``
hits the delivery worker, then the MLLP listener, then a gunicorn worker. Senders retry what was not
acknowledged with the same message id, as interface engines do. Afterwards every acknowledged message
(200 ``ok``, MSA AA) has exactly one stored Encounter, every matching notification reached the rest-hook
receiver at least once, in event-number order, and HTTP never refused a connection.

Short form in ``make test`` (on SQLite and PostgreSQL); ``make chaos-long`` runs the long form
(``CHAOS_MESSAGES``, ``CHAOS_RATE`` per second, a kill every ``CHAOS_KILL_EVERY`` seconds, cycling over
the three) and prints the figures: sent, acknowledged, delivered, duplicates, lost, time to recover."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, select

from connectors.hl7v2.mllp import END, START, read_frame
from coordination_api.config import SupervisionSettings
from coordination_api.storage.schema import worker_heartbeat
from tests.conftest import BACKENDS
from tests.subscriptions.conftest import Receiver
from tests.support.hl7v2 import adt
from tests.support.messages import VISIT_SYSTEM, discharge_message, patient
from tests.support.served import Served, children_of, database, listening, serve, wait_for
from tests.support.subscriptions import outbox_pending

pytestmark = pytest.mark.live
MESSAGES = int(os.environ.get("CHAOS_MESSAGES", "80"))
RATE = float(os.environ.get("CHAOS_RATE", "10"))
KILL_EVERY = float(os.environ.get("CHAOS_KILL_EVERY", "0"))  # 0: three kills, spread over the run
HTTP_WORKERS = 2
SENDERS = int(os.environ.get("CHAOS_SENDERS", "4"))
RETRY_FOR = 60.0  # a sender (interface engine) retries an unacknowledged message, same message id
MLLP_EVERY = 4  # every 4th discharge goes as HL7 v2 ADT^A03 over MLLP
NDA_TAIL = "^^^CHU-NANTES&1.2.250.1.999.1.2&ISO^AN"
MLLP_VISIT_SYSTEM = "urn:oid:1.2.250.1.999.1.2"


@dataclass
class Sender:
    """``SENDERS`` threads post discharge ``i`` at ``start + i / RATE`` (several, so that one slow answer
    does not slow the rate); each retries an unacknowledged message with the same message id."""

    served: Served
    tag: str
    acked: dict[str, float] = field(default_factory=dict)  # visit -> when acknowledged
    unacked: list[str] = field(default_factory=list)
    attempts: int = 0
    dropped: int = 0  # connection reset or closed mid-request (a killed gunicorn worker's)
    refused: list[float] = field(default_factory=list)
    other: dict[str, int] = field(default_factory=dict)
    by_mllp: set[str] = field(default_factory=set)
    mllp_refused: int = 0
    timeouts: int = 0  # no answer within 30 s
    cut_short: int = 0  # a response shorter than its Content-Length
    seconds: float = 0.0
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        start = time.monotonic()
        threads = [threading.Thread(target=self._loop, args=(start,), daemon=True) for _ in range(SENDERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.seconds = time.monotonic() - start

    def _loop(self, start: float) -> None:
        session = requests.Session()
        while True:
            with self._lock:
                i, self._next = self._next, self._next + 1
            if i >= MESSAGES:
                return
            time.sleep(max(start + i / RATE - time.monotonic(), 0))
            visit = f"{self.tag}-{i}"
            by_mllp = i % MLLP_EVERY == MLLP_EVERY - 1
            deadline = time.monotonic() + RETRY_FOR
            while time.monotonic() < deadline:
                if self._send_mllp(visit) if by_mllp else self._send(session, visit):
                    self.acked[visit] = time.monotonic()
                    if by_mllp:
                        self.by_mllp.add(visit)
                    break
                time.sleep(0.2)
            else:
                with self._lock:
                    self.unacked.append(visit)

    def _send_mllp(self, visit: str) -> bool:
        """One HL7 v2 ADT^A03 over a fresh MLLP connection; True on MSA AA."""
        raw = adt(
            "A03",
            control_id=visit,
            pid={
                3: f"IPP-{visit}^^^CHU-NANTES&1.2.250.1.999.1.1&ISO^PI",
                18: f"{visit}{NDA_TAIL}",
                32: "PROV",
            },
            pv1={19: f"{visit}{NDA_TAIL}", 36: "8^Domicile", 45: "20240720143000+0200"},
        )
        with self._lock:
            self.attempts += 1
        try:
            with socket.create_connection(("127.0.0.1", self.served.mllp_port), timeout=30) as conn:
                conn.sendall(START + raw + END)
                answer = read_frame(conn)
        except ConnectionRefusedError:
            with self._lock:
                self.mllp_refused += 1  # the listener is being restarted: the sender queues and retries
            return False
        except OSError:
            with self._lock:
                self.dropped += 1
            return False
        if b"MSA|AA|" not in (answer or b""):
            with self._lock:
                key = "MSA " + (answer or b"").split(b"MSA|", 1)[-1][:2].decode(errors="replace")
                self.other[key] = self.other.get(key, 0) + 1
            return False
        return True

    def _send(self, session: requests.Session, visit: str) -> bool:
        """One discharge through $process-message; True on 200 ``ok``."""
        # A provisional identity of its own per message: no two messages race on one Patient.
        message = discharge_message(
            message_id=visit, visit=visit, patient_resource=patient("PROV", ipp=f"IPP-{visit}")
        )
        with self._lock:
            self.attempts += 1
        try:
            answer = session.post(
                f"{self.served.base}/$process-message",
                json=message,
                headers=self.served.headers(),
                timeout=30,
            )
        except requests.ConnectionError as exc:
            with self._lock:
                if "refused" in str(exc).lower():
                    self.refused.append(time.monotonic())
                else:
                    self.dropped += 1
            return False
        except requests.Timeout:
            with self._lock:
                self.timeouts += 1
            return False
        except requests.RequestException:
            # The worker died between the status line and the body (gunicorn writes them apart): the
            # response is cut short of its Content-Length, the client sees a failure, never an ack.
            with self._lock:
                self.cut_short += 1
            return False
        if answer.status_code != 200:
            with self._lock:
                key = str(answer.status_code)
                self.other[key] = self.other.get(key, 0) + 1
            return False
        header = answer.json()["entry"][0]["resource"]
        return bool(header["response"]["code"] == "ok")


def _beating(url: str, pid: int) -> bool:
    """The delivery worker ``pid`` has written its heartbeat (it is running its loop)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ids = conn.scalars(select(worker_heartbeat.c.worker_id)).all()
    finally:
        engine.dispose()
    return any(worker_id.endswith(f":{pid}") for worker_id in ids)


def _kill(served: Served, url: str, target: str) -> float:
    """kill -9 one process of ``target``; seconds until it is replaced and working again (gunicorn: a
    new worker; MLLP: listening; delivery worker: its first heartbeat)."""
    if target == "http-worker":
        master = served.pid("http")
        assert master is not None
        before = children_of(master)
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(
            lambda: victim not in children_of(master) and len(children_of(master)) == HTTP_WORKERS,
            30,
            "gunicorn worker replaced",
        )
        return time.monotonic() - killed
    old = served.pid(target)
    assert old is not None
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: served.running_again(target, old), 30, f"{target} restarted")
    if target == "mllp":
        wait_for(lambda: listening(served.mllp_port), 30, "MLLP listening again")
    else:
        wait_for(lambda: _beating(url, served.pid(target) or 0), 30, "worker beating again", step=0.1)
    return time.monotonic() - killed


def _stored_encounters(served: Served, run: str, system: str) -> dict[str, list[str]]:
    """Visit number -> ids of the stored Encounters of this run."""
    out: dict[str, list[str]] = {}
    url: str | None = f"{served.base}/Encounter?identifier={system}|&_count=200"
    while url:
        page = requests.get(url, headers=served.headers(), timeout=60)
        assert page.status_code == 200, page.text
        body = page.json()
        for entry in body.get("entry", []):
            resource = entry["resource"]
            for identifier in resource.get("identifier", []):
                if identifier.get("system") == system and identifier["value"].startswith(run):
                    out.setdefault(identifier["value"], []).append(resource["id"])
        url = next((link["url"] for link in body.get("link", []) if link["relation"] == "next"), None)
    return out


def _delivered(receiver: Receiver) -> tuple[list[int], set[str]]:
    """Event numbers in the order received (duplicates kept) and the Encounter ids notified."""
    numbers: list[int] = []
    focus: set[str] = set()
    for item in list(receiver.of_kind("event-notification")):
        numbers.extend(int(e["event-number"]) for e in item.status["notification-event"])
        for entry in item.body["entry"][1:]:
            focus.add(entry["fullUrl"].split("/_history")[0].rsplit("/", 1)[-1])
    return numbers, focus


def _subscribe(served: Served, receiver: Receiver) -> str:
    subscription = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "chaos",
        "criteria": "Encounter?status=finished",
        "channel": {"type": "rest-hook", "endpoint": receiver.url, "payload": "application/fhir+json"},
    }
    created = requests.post(
        f"{served.base}/Subscription", json=subscription, headers=served.headers(), timeout=30
    )
    assert created.status_code == 201, created.text
    sub_id: str = created.json()["id"]

    def active() -> bool:
        answer = requests.get(f"{served.base}/Subscription/{sub_id}", headers=served.headers(), timeout=10)
        return bool(answer.json().get("status") == "active")

    wait_for(active, 30, "subscription active", step=0.1)
    return sub_id


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_of_each_child_loses_no_acknowledged_discharge(backend: str, tmp_path: Path) -> None:
    receiver = Receiver()
    receiver.start()
    run = f"K{uuid.uuid4().hex[:8]}"
    duration = MESSAGES / RATE
    targets = ["worker", "mllp", "http-worker"]
    if KILL_EVERY:
        # Each child is killed every 3 * KILL_EVERY s: more than crash_loop_exits - 1 kills of one child
        # in the crash-loop window would be a crash loop, and serve would rightly stop.
        per_child = 3 * KILL_EVERY
        policy = SupervisionSettings()
        assert int(policy.crash_loop_window // per_child) + 1 < policy.crash_loop_exits, (
            "CHAOS_KILL_EVERY too small"
        )
    try:
        with (
            database(backend, tmp_path) as url,
            serve(url, tmp_path, "--workers", str(HTTP_WORKERS), "--threads", "4") as served,
        ):
            _subscribe(served, receiver)
            sender = Sender(served, run)
            thread = threading.Thread(target=sender.run, daemon=True)
            started = time.monotonic()
            thread.start()
            recovered: list[tuple[str, float]] = []
            # Short form: three kills at a quarter, half and three quarters of the nominal duration.
            # Long form: a kill every KILL_EVERY seconds for as long as discharges are being sent.
            while thread.is_alive() if KILL_EVERY else len(recovered) < len(targets):
                k = len(recovered)
                at = KILL_EVERY * (k + 1) if KILL_EVERY else duration * (k + 1) / 4
                thread.join(timeout=max(started + at - time.monotonic(), 0))
                if KILL_EVERY and not thread.is_alive():
                    break
                target = targets[k % len(targets)]
                recovered.append((target, _kill(served, url, target)))
            thread.join(timeout=duration + 600)
            assert not thread.is_alive()
            stored = _stored_encounters(served, run, VISIT_SYSTEM) | _stored_encounters(
                served, run, MLLP_VISIT_SYSTEM
            )
            wanted = {ids[0] for visit, ids in stored.items() if visit in sender.acked}
            wait_for(
                lambda: wanted <= _delivered(receiver)[1],
                60 + MESSAGES / 20,
                "every event notified",
                step=0.5,
            )
            # Positive control instead of a pause: every outbox row settled, so nothing is sent twice.
            wait_for(lambda: outbox_pending(served.base) == 0, 60, "every notification row settled", step=0.5)
            numbers, focus = _delivered(receiver)
            assert served.process.poll() is None, "serve kept running"
            restarts = {name: child["restarts"] for name, child in served.children().items()}
    finally:
        receiver.stop()
    first_seen = list(dict.fromkeys(numbers))
    figures = {
        "backend": backend,
        "sent": MESSAGES,
        "seconds_sending": round(sender.seconds, 1),
        "rate_achieved": round(MESSAGES / sender.seconds, 1) if sender.seconds else None,
        "attempts": sender.attempts,
        "acknowledged": len(sender.acked),
        "acknowledged_mllp": len(sender.by_mllp),
        "mllp_refused": sender.mllp_refused,
        "unacknowledged": len(sender.unacked),
        "dropped_in_flight": sender.dropped,
        "refused": len(sender.refused),
        "timeouts": sender.timeouts,
        "cut_short": sender.cut_short,
        "other_statuses": sender.other,
        "stored_encounters": sum(len(ids) for ids in stored.values()),
        "delivered_events": len(first_seen),
        "duplicates": len(numbers) - len(first_seen),
        "lost": len(wanted - focus),
        "recover_seconds": [(target, round(seconds, 2)) for target, seconds in recovered],
        "serve_restarts": restarts,
    }
    print("\nchaos figures:", json.dumps(figures))
    assert sender.refused == [], "HTTP never refused a connection (no kill touches gunicorn's socket)"
    assert not sender.unacked, figures
    assert all(len(stored.get(visit, [])) == 1 for visit in sender.acked), "one Encounter per ack"
    assert all(len(ids) == 1 for ids in stored.values()), "never a second Encounter for one visit"
    assert wanted <= focus and figures["lost"] == 0
    assert first_seen == sorted(first_seen), "notifications in event-number order"
    assert first_seen == list(range(1, len(first_seen) + 1)), "no event number skipped"
    assert restarts["worker"] >= 1 and restarts["mllp"] >= 1 and restarts["http"] == 0
    gaps = sorted(sender.acked.values())
    # Every sender thread can be waiting on an MLLP message while the listener restarts, so the gap
    # follows the listener's restart time: 5.5 to 10.1 s on a quiet 2-core machine, 16.8 and 23.9 s
    # under a concurrent CI load (7 Dec 2026; not root-caused further). The bound is what a sending
    # interface engine tolerates: the senders here wait up to 60 s for an acknowledgment.
    assert max(b - a for a, b in itertools.pairwise(gaps)) < 30, "HTTP kept acknowledging"
