"""Real processes on a SQLite file: SIGTERM stops each of them cleanly (exit 0, a last log line), and
``serve`` aggregates the metrics of its gunicorn workers."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, func, select

from coordination_api.storage.migrate import upgrade
from coordination_api.storage.schema import worker_heartbeat
from tests.support.net import free_port

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('ops') / 'ops.db'}"
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url


def _env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    return {**env, "COORDINATION_DATABASE_URL": url, **extra}


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _heartbeats(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(worker_heartbeat)) or 0)
    finally:
        engine.dispose()


def _wait(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.1)


def test_worker_stops_on_sigterm_and_removes_its_heartbeat(sqlite_url: str) -> None:
    metrics_port = free_port()
    process = subprocess.Popen(
        [str(BIN / "coordination"), "worker", "--metrics-port", str(metrics_port)],
        env=_env(sqlite_url),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait(lambda: _heartbeats(sqlite_url) == 1)
        own = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert "# TYPE coordination_subscription_deliveries_total counter" in own
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert '"msg":"subscription delivery worker stopped"' in stderr
    assert _heartbeats(sqlite_url) == 0


def test_mllp_listener_stops_on_sigterm(sqlite_url: str) -> None:
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "coordination"), "mllp", "--port", str(port)],
        env=_env(sqlite_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith(f"MLLP listening on 127.0.0.1:{port}")
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "MLLP listener stopped" in stdout


def test_serve_aggregates_metrics_and_stops_cleanly_on_sigterm(sqlite_url: str) -> None:
    port, mllp_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            *(str(BIN / "coordination"), "serve", "--port", str(port), "--mllp-port", str(mllp_port)),
            *("--workers", "2", "--threads", "2"),
        ],
        env=_env(sqlite_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return requests.get(f"{base}/readyz", timeout=10).status_code == 200
        except requests.RequestException:
            return False

    try:
        _wait(ready)  # gunicorn answers and the worker child has beaten (serve expects a worker)
        _wait(lambda: _listening(mllp_port))
        for _ in range(20):  # new connections: both gunicorn workers get some
            assert requests.get(f"{base}/fhir/metadata", timeout=10).status_code == 200
        scrape = requests.get(f"{base}/metrics", timeout=10).text
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    count = re.search(
        r'^coordination_http_request_duration_seconds_count\{interaction="capabilities",'
        r'resource_type="",status_class="2xx"\} (\S+)$',
        scrape,
        re.MULTILINE,
    )
    assert count is not None and float(count.group(1)) == 20.0, scrape
    assert process.returncode == 0, stderr
    assert '"msg":"serve: stopped (clean)"' in stderr
    assert _heartbeats(sqlite_url) == 0
