#!/usr/bin/env python3
"""Hospital discharges, from the door to the subscriber's webhook (throughput, latency, worker crash).

    python bench/bench_discharge.py                    # PostgreSQL database `bench_discharge`
    python bench/bench_discharge.py --db sqlite --duration 30

One fresh database; `coordination serve --no-worker --no-mllp`, a separate `coordination mllp` and
`--delivery-workers` `coordination worker` processes on it; a webhook receiver in this process (a
threaded HTTP server on 127.0.0.1 recording when each event arrives) behind one Backport topic
subscription to encounter-discharge (rest-hook, full-resource), active before anything is measured.

(a) `POST /fhir/$process-message`, closed loop, `--concurrency` clients, each message a new visit;
(b) HL7 v2 ADT^A03 over MLLP, closed loop on `--mllp-connections` persistent connections;
    then the backlog of (a)+(b) is drained (the delivery rate of one subscription);
(c) open loop at `--rate` messages/s for `--duration` s through $process-message: latency from the
    scheduled send time to the webhook's arrival (the Encounter's visit identifier matches them),
    p50/p95/p99/max, lost (never arrived after `--drain-timeout`), duplicates;
(d) the same, the delivery worker(s) killed with SIGKILL at mid-run and restarted `--restart-delay`
    s later: delivered/expected, duplicates, p99.

Results: bench/results/discharge-<db>-<time>.json and a Markdown table. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from bench_core import (
    FHIR_JSON,
    HOST,
    REPO_ROOT,
    RESULTS_DIR,
    Database,
    Server,
    bin_path,
    db_upgrade,
    env_for,
    fresh_database,
    percentile,
    run_header,
    run_sql,
    system_token,
    workspace,
)

from connectors.hl7v2.mllp import END, START, read_frame
from tests.support.hl7v2 import adt
from tests.support.messages import discharge_message, patient

TOPIC = "https://coordination.cpts.fr/fhir/SubscriptionTopic/encounter-discharge"
GOAL_P99_S = 1.0


# --------------------------------------------------------------------------------------------------
# The webhook receiver
# --------------------------------------------------------------------------------------------------


@dataclass
class Arrival:
    t: float  # time.monotonic() when the request was read
    event: int
    visits: list[str]


class Receiver:
    """Records every event notification (event number, visit identifiers of its Encounter, time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrivals: list[Arrival] = []
        self.first: dict[str, float] = {}  # visit -> first arrival time
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as requests.Session in the worker uses it

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                now = time.monotonic()
                with contextlib.suppress(Exception):
                    owner.record(now, orjson.loads(raw))
                with contextlib.suppress(OSError):
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server.server_address[1]}/hook"

    def record(self, now: float, bundle: dict[str, Any]) -> None:
        params = bundle["entry"][0]["resource"]["parameter"]
        if not any(p["name"] == "type" and p.get("valueCode") == "event-notification" for p in params):
            return
        numbers = [
            int(q["valueString"])
            for p in params
            if p["name"] == "notification-event"
            for q in p["part"]
            if q["name"] == "event-number"
        ]
        visits = [
            ident["value"]
            for e in bundle["entry"][1:]
            if e.get("resource", {}).get("resourceType") == "Encounter"
            for ident in e["resource"].get("identifier", [])
            if "value" in ident
        ]
        with self.lock:
            for n in numbers:
                self.arrivals.append(Arrival(now, n, visits))
            for v in visits:
                self.first.setdefault(v, now)

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)

    def seen(self, visits: set[str]) -> int:
        with self.lock:
            return len(visits & self.first.keys())

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


# --------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------


def start_api(args: argparse.Namespace, db: Database, workdir: Path) -> Server:
    argv = [bin_path(args, "coordination"), "serve", "--host", HOST, "--port", "{port}", "--no-worker"]
    argv += ["--no-mllp", "--workers", str(args.workers), "--threads", str(args.threads)]
    server = Server("api", argv, env_for(args, db), workdir / "api.log", REPO_ROOT)
    server.wait_ready()
    server.auth = {"Authorization": f"Bearer {system_token(args, db, server)}"}
    return server


def start_mllp(args: argparse.Namespace, db: Database, workdir: Path) -> Server:
    argv = [bin_path(args, "coordination"), "mllp", "--host", HOST, "--port", "{port}"]
    env = env_for(args, db, COORDINATION_MLLP_SENDERS="SIH-PASTEL^CHU-NANTES")  # adt()'s MSH-3^MSH-4
    server = Server("mllp", argv, env, workdir / "mllp.log", REPO_ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise SystemExit(f"mllp exited early; see {server.log}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, server.port), timeout=1):
            return server
        time.sleep(0.2)
    server.stop()
    raise SystemExit(f"mllp not listening after 60 s; see {server.log}")


def worker_env(args: argparse.Namespace) -> dict[str, str]:
    extra = dict(item.split("=", 1) for item in args.worker_env)
    return extra


class Workers:
    """`--delivery-workers` `coordination worker` processes (each in its own process group)."""

    def __init__(self, args: argparse.Namespace, db: Database, workdir: Path) -> None:
        self.args, self.db, self.workdir = args, db, workdir
        self.procs: list[Server] = []
        self.generation = 0

    def start(self) -> None:
        self.generation += 1
        argv = [bin_path(self.args, "coordination"), "worker"]
        env = env_for(self.args, self.db, **worker_env(self.args))
        for k in range(self.args.delivery_workers):
            name = f"worker-{self.generation}-{k}"
            self.procs.append(Server(name, argv, env, self.workdir / f"{name}.log", REPO_ROOT))

    def kill(self) -> None:
        """SIGKILL, no warning: whatever a worker was doing stays half done."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.proc.pid, signal.SIGKILL)
            proc.proc.wait(timeout=30)
        self.procs = []

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
        self.procs = []


# --------------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------------


@dataclass
class Run:
    scenario: str
    messages: int = 0  # answered 200 / MSA|AA
    errors: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    expected: int | None = None
    delivered: int | None = None
    lost: int | None = None
    duplicates: int | None = None
    out_of_order: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def latencies(self, values: list[float]) -> None:
        self.p50_ms, self.p95_ms, self.p99_ms = (percentile(values, p) * 1000 for p in (50, 95, 99))
        self.max_ms = max(values, default=0.0) * 1000


class Poster:
    """$process-message over one keep-alive session per thread."""

    def __init__(self, server: Server, birth_date: str) -> None:
        self.url = server.base + "/fhir/$process-message"
        self.patient = {**patient(), "birthDate": birth_date}
        self.headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, **server.auth}
        self.local = threading.local()

    def post(self, visit: str) -> bool:
        session: requests.Session | None = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
        body = orjson.dumps(
            discharge_message(message_id=f"msg-{visit}", visit=visit, patient_resource=self.patient)
        )
        try:
            response = session.post(self.url, data=body, headers=self.headers, timeout=60)
        except requests.RequestException:
            return False
        return response.status_code == 200


def closed_loop_http(poster: Poster, prefix: str, concurrency: int, seconds: float) -> Run:
    run = Run(f"$process-message, {concurrency} clients")
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(c: int) -> None:
        i = 0
        while time.monotonic() < stop_at:
            t0 = time.monotonic()
            ok = poster.post(f"{prefix}-{c}-{i}")
            with lock:
                if ok:
                    run.messages += 1
                    latencies.append(time.monotonic() - t0)
                else:
                    run.errors += 1
            i += 1

    return _run_clients(run, concurrency, client, latencies)


def _run_clients(run: Run, count: int, client: Callable[[int], None], latencies: list[float]) -> Run:
    """Run ``count`` closed-loop clients to the end and fill in the run's rate and latencies."""
    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.seconds = time.monotonic() - start
    run.rate = run.messages / run.seconds
    run.latencies(latencies)
    return run


def a03(control_id: str, visit: str) -> bytes:
    return adt("A03", control_id=control_id, pv1={19: visit, 45: "20261120113000"})


def closed_loop_mllp(port: int, prefix: str, connections: int, seconds: float) -> Run:
    run = Run(f"MLLP ADT^A03, {connections} connections")
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(c: int) -> None:
        pending = bytearray()
        with socket.create_connection((HOST, port), timeout=60) as conn:
            i = 0
            while time.monotonic() < stop_at:
                t0 = time.monotonic()
                conn.sendall(START + a03(f"{prefix}-{c}-{i}", f"{prefix}-{c}-{i}") + END)
                ok = b"MSA|AA" in read_frame(conn, pending)
                with lock:
                    if ok:
                        run.messages += 1
                        latencies.append(time.monotonic() - t0)
                    else:
                        run.errors += 1
                i += 1

    return _run_clients(run, connections, client, latencies)


def pending_rows(db: Database) -> int:
    [rows] = run_sql(db, "SELECT count(*) FROM subscription_outbox WHERE status = 'pending'")
    return int(rows[0][0])


def drain(db: Database, receiver: Receiver, timeout: float) -> dict[str, Any]:
    """Wait until the outbox has nothing pending; the delivery rate meanwhile."""
    backlog = pending_rows(db)
    arrived0, t0 = receiver.count(), time.monotonic()
    while pending_rows(db) and time.monotonic() - t0 < timeout:
        time.sleep(0.5)
    seconds = time.monotonic() - t0
    left = pending_rows(db)
    delivered = receiver.count() - arrived0
    return {
        "backlog": backlog,
        "seconds": round(seconds, 1),
        "delivered": delivered,
        "events_per_s": round(delivered / seconds, 1) if seconds > 0 else None,
        "left_pending": left,
    }


def open_loop(
    poster: Poster,
    receiver: Receiver,
    name: str,
    prefix: str,
    rate: float,
    seconds: float,
    drain_timeout: float,
    crash: Workers | None = None,
    restart_delay: float = 2.0,
) -> Run:
    """``rate`` messages/s for ``seconds``; latency = webhook arrival - scheduled send time."""
    run = Run(name)
    count = int(rate * seconds)
    scheduled: dict[str, float] = {}
    ok_visits: set[str] = set()
    lock = threading.Lock()
    arrivals_before = receiver.count()

    answered: dict[str, float] = {}

    def send(visit: str) -> None:
        ok = poster.post(visit)
        with lock:
            if ok:
                ok_visits.add(visit)
                answered[visit] = time.monotonic()
            else:
                run.errors += 1

    crash_at = seconds / 2
    crashed: dict[str, float] = {}
    timer: threading.Timer | None = None
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=64) as pool:
        for i in range(count):
            due = start + i / rate
            if crash is not None and not crashed and due - start >= crash_at:
                crash.kill()
                crashed["killed_at_s"] = round(time.monotonic() - start, 2)
                # keep sending while the workers are down; restart them from a timer thread
                timer = threading.Timer(restart_delay, crash.start)
                timer.start()
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            visit = f"{prefix}-{i}"
            scheduled[visit] = due
            pool.submit(send, visit)
    run.seconds = time.monotonic() - start
    if timer is not None:
        timer.join()
    expected = set(ok_visits)
    t0 = time.monotonic()
    while receiver.seen(expected) < len(expected) and time.monotonic() - t0 < drain_timeout:
        time.sleep(0.2)
    time.sleep(1.0)  # anything still in flight (duplicates)
    with receiver.lock:
        first = {v: receiver.first[v] for v in expected if v in receiver.first}
        arrivals = receiver.arrivals[arrivals_before:]
    run.messages = len(expected)
    run.rate = len(expected) / run.seconds
    run.expected = len(expected)
    run.delivered = len(first)
    run.lost = len(expected) - len(first)
    numbers = [a.event for a in arrivals]
    run.duplicates = len(numbers) - len(set(numbers))
    firsts = list(dict.fromkeys(numbers))
    run.out_of_order = sum(1 for a, b in itertools.pairwise(firsts) if b < a)
    run.latencies([first[v] - scheduled[v] for v in first])
    # The subscription pipeline alone: webhook arrival - the door's 200 answer (outbox -> worker -> POST).
    lags = [first[v] - answered[v] for v in first]
    run.notes = {
        **crashed,
        "after_answer_p50_ms": round(percentile(lags, 50) * 1000, 1),
        "after_answer_p99_ms": round(percentile(lags, 99) * 1000, 1),
        "after_answer_max_ms": round(max(lags, default=0.0) * 1000, 1),
        "door_answered_per_s": round(len(expected) / run.seconds, 1),
        "waited_for_stragglers_s": round(time.monotonic() - t0, 1),
    }
    if crash is not None:
        run.notes["worker_env"] = list(crash.args.worker_env)
    return run


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


MAX_COUNT_URL = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-max-count"


def subscribe(server: Server, receiver: Receiver, max_count: int = 1) -> str:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": receiver.url, "payload": FHIR_JSON}
    if max_count > 1:
        # Backport "backport-max-count": the subscriber accepts several events per notification.
        channel["extension"] = [{"url": MAX_COUNT_URL, "valuePositiveInt": max_count}]
    body = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "bench: sorties d'hospitalisation",
        "criteria": TOPIC,
        "channel": channel,
    }
    headers = {"Content-Type": FHIR_JSON, **server.auth}
    response = requests.post(
        server.base + "/fhir/Subscription", data=orjson.dumps(body), headers=headers, timeout=60
    )
    response.raise_for_status()
    sub_id: str = response.json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = requests.get(f"{server.base}/fhir/Subscription/{sub_id}", headers=server.auth, timeout=10)
        if got.json().get("status") == "active":
            return sub_id
        time.sleep(0.2)
    raise SystemExit(f"subscription {sub_id} not active after 60 s (handshake)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers of the API")
    p.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker")
    p.add_argument("--delivery-workers", type=int, default=1, choices=[1, 2, 3, 4])
    p.add_argument("--concurrency", type=int, default=8, help="(a) closed-loop $process-message clients")
    p.add_argument("--mllp-connections", type=int, default=4, help="(b) persistent MLLP connections")
    p.add_argument("--throughput-seconds", type=float, default=10.0, help="(a) and (b) run time each")
    p.add_argument("--rate", type=float, default=50.0, help="(c)/(d) messages per second")
    p.add_argument(
        "--max-count",
        type=int,
        default=1,
        help="the subscription's backport-max-count (events per notification when a backlog forms)",
    )
    p.add_argument(
        "--birth-date",
        default="1980-05-12",
        help="the $process-message patient's birth date; 75 or older (e.g. 1938-05-12) also starts "
        "the shipped retour-a-domicile protocol on every discharge (issue 7 auto-start)",
    )
    p.add_argument("--duration", type=float, default=60.0, help="(c)/(d) seconds each")
    p.add_argument("--restart-delay", type=float, default=2.0, help="(d) seconds between kill and restart")
    p.add_argument(
        "--drain-timeout", type=float, default=180.0, help="seconds to wait for late notifications"
    )
    p.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the worker processes (e.g. COORDINATION_SUBSCRIPTION_LEASE=5)",
    )
    p.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--pg-database", default="bench_discharge", help="dropped and recreated (never 'test')")
    p.add_argument("--keep-db", action="store_true")
    p.add_argument("--bin-dir", default=str(Path(sys.executable).parent))
    p.add_argument("--source", help="a copy of the project to benchmark instead of the installed one")
    p.add_argument("--output", help="results JSON (default bench/results/discharge-<db>-<time>.json)")
    args = p.parse_args(argv)
    if any("=" not in item for item in args.worker_env):
        p.error("--worker-env takes NAME=VALUE")
    return args


def markdown(db: str, runs: list[Run], drained: dict[str, Any]) -> str:
    lines = [
        f"| {db} | messages | msg/s | p50 ms | p95 ms | p99 ms | max ms | errors | delivered | dup |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        delivered = f"{r.delivered}/{r.expected}" if r.expected is not None else ""
        dup = "" if r.duplicates is None else str(r.duplicates)
        lines.append(
            f"| {r.scenario} | {r.messages:,} | {r.rate:,.1f} | {r.p50_ms:.0f} | {r.p95_ms:.0f} "
            f"| {r.p99_ms:.0f} | {r.max_ms:.0f} | {r.errors} | {delivered} | {dup} |"
        )
    lines.append("")
    lines.append(
        f"backlog of (a)+(b): {drained['backlog']:,} events delivered in {drained['seconds']} s "
        f"({drained['events_per_s']} events/s, one subscription); left pending {drained['left_pending']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    runs: list[Run] = []
    with workspace(args.keep_db) as workdir:
        print(f"bench_discharge: db={args.db} workdir {workdir}", flush=True)
        db = fresh_database(args, workdir)
        db_upgrade(args, db, workdir / "upgrade.log")
        receiver = Receiver()
        api = mllp = None
        workers = Workers(args, db, workdir)
        try:
            api = start_api(args, db, workdir)
            mllp = start_mllp(args, db, workdir)
            workers.start()
            subscribe(api, receiver, args.max_count)
            poster = Poster(api, args.birth_date)
            # Not timed: the first requests of each process build the models (seconds).
            for k in range(4 * args.workers):
                if not poster.post(f"WARM-{k}"):
                    raise SystemExit(f"$process-message failed; see {api.log}")
            for k in range(3):
                with socket.create_connection((HOST, mllp.port), timeout=60) as conn:
                    conn.sendall(START + a03(f"WARM-MLLP-{k}", f"WARM-MLLP-{k}") + END)
                    ack = read_frame(conn)
                if b"MSA|AA" not in ack:
                    raise SystemExit(f"MLLP discharge refused: {ack!r}")
            drain(db, receiver, args.drain_timeout)
            print("(a) $process-message throughput", flush=True)
            runs.append(closed_loop_http(poster, "TPUT", args.concurrency, args.throughput_seconds))
            print("(b) MLLP throughput", flush=True)
            runs.append(closed_loop_mllp(mllp.port, "MLLP", args.mllp_connections, args.throughput_seconds))
            print("draining the backlog", flush=True)
            drained = drain(db, receiver, args.drain_timeout)
            print(f"(c) open loop {args.rate:g}/s for {args.duration:g} s", flush=True)
            runs.append(
                open_loop(
                    poster,
                    receiver,
                    f"end to end at {args.rate:g}/s",
                    "E2E",
                    args.rate,
                    args.duration,
                    args.drain_timeout,
                )
            )
            print("(d) the same, worker SIGKILLed at mid-run", flush=True)
            runs.append(
                open_loop(
                    poster,
                    receiver,
                    f"end to end at {args.rate:g}/s, worker SIGKILL",
                    "CRASH",
                    args.rate,
                    args.duration,
                    args.drain_timeout,
                    crash=workers,
                    restart_delay=args.restart_delay,
                )
            )
        finally:
            workers.stop()
            for server in (mllp, api):
                if server is not None:
                    server.stop()
            receiver.stop()
            if not args.keep_db:
                db.drop()

    results: dict[str, Any] = {
        **run_header(started, args.source),
        "db": args.db,
        "args": {k: v for k, v in vars(args).items() if k not in {"pg_url", "bin_dir"}},
        "runs": [asdict(r) for r in runs],
        "drain_after_throughput": drained,
        "goal": {"p99_s": GOAL_P99_S, "lost": 0},
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = (
        Path(args.output)
        if args.output
        else RESULTS_DIR / f"discharge-{args.db}-{started:%Y%m%dT%H%M%SZ}.json"
    )
    out.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    print()
    print(markdown(args.db, runs, drained))
    for r in runs:
        if r.notes:
            print(f"{r.scenario}: {json.dumps(r.notes)}")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
