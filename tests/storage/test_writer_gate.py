"""SQLite writers queue at a gate before SQLite's write lock (storage/engine.WriterGate, issue 21):
threads on a lock, processes on an flock beside the database. Behaviour only (no timings): the gate
is bounded by the lock timeout (503 through the one translator), and it opens again after a commit,
a rollback, a failed BEGIN and a thrown-away connection."""

from __future__ import annotations

import fcntl
import gc
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from coordination_api.app import create_app
from coordination_api.config import DatabaseTimeouts, Settings
from coordination_api.storage.engine import WRITE, WriterGate, make_engine
from coordination_api.storage.migrate import upgrade
from tests.conftest import authed

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""


@contextmanager
def _held_by_another_process(lock_file: str) -> Iterator[None]:
    """Another process holds the gate's flock until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, lock_file], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.communicate("\n", timeout=10)


def _write(engine, value: int) -> None:  # type: ignore[no-untyped-def]
    with engine.connect().execution_options(**WRITE) as conn, conn.begin():
        conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": value})


@pytest.fixture
def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path}/gate.db", timeouts=DatabaseTimeouts(lock=0.5))
    with engine.connect().execution_options(**WRITE) as conn, conn.begin():
        conn.execute(text("CREATE TABLE t (v INTEGER)"))
    yield engine
    engine.dispose()


def test_the_gate_opens_after_commit_rollback_and_a_discarded_connection(engine) -> None:  # type: ignore[no-untyped-def]
    _write(engine, 1)
    with pytest.raises(ZeroDivisionError), engine.connect().execution_options(**WRITE) as conn, conn.begin():
        conn.execute(text("INSERT INTO t VALUES (2)"))
        _ = 1 / 0  # rolled back
    with engine.connect().execution_options(**WRITE) as conn:
        conn.begin()
        conn.execute(text("INSERT INTO t VALUES (3)"))
        conn.invalidate()  # thrown away mid-transaction (a dropped connection)
    done = threading.Event()
    threading.Thread(target=lambda: (_write(engine, 4), done.set()), daemon=True).start()
    assert done.wait(5), "the gate stayed shut"
    with engine.connect() as conn:
        assert sorted(conn.execute(text("SELECT v FROM t")).scalars()) == [1, 4]


def test_a_writer_held_by_another_process_is_refused_after_the_lock_timeout(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with (
        _held_by_another_process(f"{tmp_path}/gate.db-writer.lock"),
        pytest.raises(Exception, match="database is locked"),
    ):
        _write(engine, 1)
    _write(engine, 2)  # the gate is usable again once the other process let go
    with engine.connect() as conn:
        assert list(conn.execute(text("SELECT v FROM t")).scalars()) == [2]


def test_a_forked_child_queues_on_its_own_open_of_the_lock_file(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _write(engine, 1)  # the parent has opened the lock file
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: while it holds the gate, the parent's flock must fail
        try:
            with engine.connect().execution_options(**WRITE) as conn, conn.begin():
                conn.execute(text("INSERT INTO t VALUES (2)"))
                fd = os.open(f"{tmp_path}/gate.db-writer.lock", os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.write(write, b"free")
                except BlockingIOError:
                    os.write(write, b"held")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 4) == b"held"


def test_over_http_a_create_waiting_too_long_for_the_gate_is_a_503_outcome(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/api.db"
    app = create_app(Settings(database_url=url, db_timeouts=DatabaseTimeouts(lock=0.5)))
    upgrade(app.extensions["coordination"].repo.engine)
    client = authed(app.test_client())
    with _held_by_another_process(f"{tmp_path}/api.db-writer.lock"):
        answer = client.post("/fhir/Patient", json={"resourceType": "Patient"})
    assert answer.status_code == 503 and answer.headers.get("Retry-After")
    assert answer.get_json()["resourceType"] == "OperationOutcome"
    assert client.post("/fhir/Patient", json={"resourceType": "Patient"}).status_code == 201
    app.extensions["coordination"].repo.engine.dispose()


def test_a_child_forked_while_a_thread_holds_the_gate_is_not_stuck(tmp_path: Path) -> None:
    """The gate alone (an SQLite connection must not cross a fork anyway): the child of a process one
    of whose threads holds the gate waits for the parent's flock, not for a thread it does not have."""
    gate = WriterGate(f"{tmp_path}/fork.lock", timeout=5.0)
    holding, release = threading.Event(), threading.Event()
    parent_owner = object()

    def hold() -> None:
        gate.acquire(parent_owner)
        holding.set()
        release.wait(10)
        gate.release(parent_owner)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            owner = object()
            gate.acquire(owner)  # once the parent lets go of the flock below
            gate.release(owner)
            code = 0
        finally:
            os._exit(code)
    time.sleep(0.2)
    release.set()
    holder.join(10)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_gate_file_closes_with_its_engine(tmp_path: Path) -> None:
    """One lock file open per engine and process, closed when the engine goes (tests and tools make
    many engines: none may leak a descriptor)."""
    before = len(os.listdir("/proc/self/fd"))
    for i in range(20):
        engine = make_engine(f"sqlite:///{tmp_path}/many{i}.db")
        with engine.connect().execution_options(**WRITE) as conn, conn.begin():
            conn.execute(text("SELECT 1"))
        engine.dispose()
        del engine
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) - before < 5
