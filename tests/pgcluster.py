"""A throwaway PostgreSQL cluster for fault tests: initdb in a temporary folder, a free port, stopped
and deleted afterwards. The shared cluster (port 5432) is never touched: restarting it would break
every other test running against it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.net import free_port

BIN_DIRS = [Path("/usr/lib/postgresql/15/bin")]


def _bin_dir() -> Path | None:
    for candidate in BIN_DIRS:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


class PgCluster:
    """One PostgreSQL server of our own; ``restart``/``stop``/``start`` as an operator would."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        # initdb refuses to run as root: then the cluster belongs to the postgres account.
        self.run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [*self.run_as, str(self.bin_dir / args[0]), *args[1:]]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr or result.stdout}")

    def init(self) -> None:
        if self.run_as:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        # fsync off: the faults we make kill processes, never the machine, so the page cache holds.
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off -c max_connections=60"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def log(self) -> str:
        path = self.root / "log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


@contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """A started cluster, stopped (immediately) and deleted on exit; skips if PostgreSQL 15's initdb
    is not installed."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("initdb/pg_ctl not found (PostgreSQL 15 server binaries are not installed)")
    root = Path(tempfile.mkdtemp(prefix="coordination-pg-"))
    cluster = PgCluster(bin_dir, root)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            cluster.stop("immediate")  # unless already stopped (or never started)
        shutil.rmtree(root, ignore_errors=True)
