"""Search latency on existing databases of different sizes, side by side in one run.

    python bench/bench_search_at_scale.py URL_SMALL URL_BIG [--seconds 10] [--concurrency 16]

For each database URL (e.g. the ones ``bench_core.py --keep-db --scale`` leaves), starts
``coordination serve`` on loopback, samples real identifiers / family+birthDate pairs from the
stored Patients, and runs a bounded closed loop of identifier and name+birthdate searches,
printing p50/p95 per database and the big/small p95 ratio (goal for identifier search <= 1.5).
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import orjson
import requests
from sqlalchemy import create_engine, text

BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample_queries(url: str, n: int = 400) -> dict[str, list[str]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT content FROM resource WHERE res_type = 'Patient' AND NOT deleted "
                "ORDER BY pk DESC LIMIT :n"
            ),
            {"n": n},
        ).all()
    engine.dispose()
    identifier, name_birthdate = [], []
    for (content,) in rows:
        patient = orjson.loads(content)
        for ident in patient.get("identifier", [])[:1]:
            identifier.append(
                "/fhir/Patient?" + urlencode({"identifier": f"{ident['system']}|{ident['value']}"})
            )
        name = (patient.get("name") or [{}])[0]
        if name.get("family") and patient.get("birthDate"):
            query = urlencode({"family": name["family"], "birthdate": patient["birthDate"]})
            name_birthdate.append("/fhir/Patient?" + query)
    return {"search-identifier": identifier, "search-name-birthdate": name_birthdate}


def run(base: str, paths: list[str], seconds: float, concurrency: int) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        local = []
        while time.monotonic() < deadline:
            started = time.perf_counter()
            response = session.get(base + rng.choice(paths), timeout=30)
            local.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text[:200]
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(latencies)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))]


def measure(url: str, seconds: float, concurrency: int) -> dict[str, tuple[float, float, int]]:
    port = _port()
    env = {**os.environ, "COORDINATION_DATABASE_URL": url}
    server = subprocess.Popen(
        [str(BIN / "coordination"), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        queries = sample_queries(url)
        out = {}
        for scenario, paths in queries.items():
            run(base, paths, 2, concurrency)  # warm-up
            latencies = run(base, paths, seconds, concurrency)
            out[scenario] = (pct(latencies, 0.5), pct(latencies, 0.95), len(latencies))
        return out
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("small")
    parser.add_argument("big")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    small = measure(args.small, args.seconds, args.concurrency)
    big = measure(args.big, args.seconds, args.concurrency)
    print("| scenario | small p50 / p95 ms | big p50 / p95 ms | p95 ratio big/small |")
    print("| --- | --- | --- | --- |")
    for scenario in small:
        s, b = small[scenario], big[scenario]
        print(f"| {scenario} | {s[0]:.1f} / {s[1]:.1f} | {b[0]:.1f} / {b[1]:.1f} | {b[1] / s[1]:.2f} |")


if __name__ == "__main__":
    main()
