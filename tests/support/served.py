"""``coordination serve`` as a real process tree for the supervision and chaos tests (issue 17): a fresh
SQLite file or PostgreSQL schema, a client registered as a message sender, free ports, the children's
state file (the metrics directory) and the service's log in files the test reads."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.conftest import PG_URL
from tests.support.messages import HL7_SENDER, SENDER
from tests.support.net import free_port

BIN = Path(sys.executable).parent
CLI = str(BIN / "coordination")
FHIR_JSON = "application/fhir+json"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> float:
    """Seconds until ``predicate()`` holds; fails the test after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(step)
    return time.monotonic() - start


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc: gunicorn's workers under its master)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


TOKEN_RENEW = 60.0  # seconds: a long chaos run outlives an access token


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    mllp_port: int
    state_dir: Path
    log_path: Path
    client: dict[str, str]
    _token: str = ""
    _token_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def token(self) -> str:
        """A client_credentials access token, renewed every ``TOKEN_RENEW`` seconds."""
        with self._lock:
            if not self._token or time.monotonic() - self._token_at > TOKEN_RENEW:
                answer = requests.post(
                    f"{self.root}/auth/token",
                    data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
                    auth=(self.client["client_id"], self.client["client_secret"]),
                    timeout=30,
                )
                answer.raise_for_status()
                self._token, self._token_at = answer.json()["access_token"], time.monotonic()
            return self._token

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"{self.root}/fhir"

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": FHIR_JSON, **extra}

    def children(self) -> dict[str, Any]:
        """serve's published state of its children (health.CHILD_STATE_FILE)."""
        try:
            data = json.loads((self.state_dir / "supervisor.json").read_text())
        except (OSError, ValueError):
            return {}
        children: dict[str, Any] = data["children"]
        return children

    def pid(self, child: str) -> int | None:
        value = self.children().get(child, {}).get("pid")
        return int(value) if value else None

    def running_again(self, child: str, old_pid: int) -> bool:
        pid = self.pid(child)
        return pid is not None and pid != old_pid

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    lines.append(record)
        return lines

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.root}/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False


@contextlib.contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    """A fresh database URL: a SQLite file in ``tmp``, or a PostgreSQL schema dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'served.db'}"
        return
    schema = f"chaos_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def serve(
    url: str, tmp: Path, *args: str, mllp_port: int | None = None, wait_ready: bool = True
) -> Iterator[Served]:
    """``coordination serve *args`` on free ports over ``url``; SIGTERM (then kill) at the end."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    port, mllp = free_port(), mllp_port or free_port()
    state_dir = tmp / f"metrics-{port}"
    state_dir.mkdir()
    env.update(
        COORDINATION_DATABASE_URL=url,
        COORDINATION_ACCESS_LOG="false",
        COORDINATION_SUBSCRIPTION_POLL_INTERVAL="0.05",
        COORDINATION_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}/fhir",
        PROMETHEUS_MULTIPROC_DIR=str(state_dir),
        COORDINATION_MLLP_SENDERS=HL7_SENDER,
    )
    subprocess.run([CLI, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=300)
    created = subprocess.run(
        [
            CLI,
            "clients",
            "create",
            "--name",
            "chaos",
            "--scope",
            "system/*.cruds",
            "--json",
            *("--sender", SENDER),
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    client = json.loads(created.stdout)
    log_path = tmp / f"serve-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [CLI, "serve", "--port", str(port), "--mllp-port", str(mllp), *args],
            env=env,
            stdout=log,
            stderr=log,
        )
    served = Served(process, port, mllp, state_dir, log_path, client)
    try:
        if wait_ready:
            wait_for(served.ready, 90, "serve ready", step=0.1)
            assert served.token
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
