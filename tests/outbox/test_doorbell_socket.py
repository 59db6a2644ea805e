"""The SQLite doorbell's socket is for the database's writers only (outbox/doorbell.py; review 22 F2):
it lives in a directory beside the database that only they can enter, so another local user can neither
ring it, nor flood it, nor take its name; whoever rings it, only the worker's three lanes are counted;
a worker that cannot listen says so at WARNING and polls."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from coordination_api.outbox import doorbell
from tests.conftest import PG_URL

NOBODY = 65534
KNOWN = {doorbell.NOTIFICATIONS, doorbell.JOBS, doorbell.EXPORTS}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'bell.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every local user may write to, as /tmp (sticky)."""
    directory = Path(tempfile.mkdtemp(prefix="doorbell-"))
    os.chmod(directory, 0o1777)  # noqa: S103 - the shared directory under test
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def _as_nobody(action: Callable[[], str]) -> str:
    """Run ``action`` in a child process that dropped to another local user (uid nobody); what it
    returns, or the error it raised."""
    if os.getuid() != 0:
        pytest.skip("needs root to act as another local user")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        answer = "?"
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            answer = action()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            answer = type(exc).__name__
        finally:
            os.write(w, answer.encode())
            os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    answer = os.read(r, 4096).decode()
    os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0
    return answer


def _bell(engine: Engine) -> doorbell._Socket:
    bell = doorbell.of(engine)
    assert isinstance(bell, doorbell._Socket)
    return bell


def test_another_local_user_cannot_wake_the_worker(engine: Engine) -> None:
    bell = _bell(engine)
    assert bell.listen()
    try:
        ticket = bell.ticket(doorbell.JOBS)

        def ring() -> str:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
                out.sendto(b"jobs exports", bell.address)
            return "sent"

        assert _as_nobody(ring) == "PermissionError"
        woken = bell.wait(doorbell.JOBS, ticket, 1.0)
        assert not woken, "a datagram from another uid woke the jobs lane (a pass that takes the write lock)"
    finally:
        bell.close()


def test_made_up_lane_names_do_not_grow_the_worker(engine: Engine) -> None:
    """The database's own writers may ring (they can write the database anyway): even from them, only
    the three lanes are counted."""
    bell = _bell(engine)
    assert bell.listen()
    try:
        ticket = bell.ticket(doorbell.JOBS)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
            for n in range(2_000):
                names = " ".join(f"x{n:07d}-{k}" for k in range(8)).encode()
                while True:
                    try:
                        out.sendto(names, bell.address)
                        break
                    except BlockingIOError:
                        time.sleep(0.001)
            out.sendto(b"jobs", bell.address)
        assert bell.wait(doorbell.JOBS, ticket, 5.0), "the ring after the flood was read"
        assert set(bell._rings) <= KNOWN, f"the worker keeps a counter for {len(bell._rings)} lane names"
    finally:
        bell.close()


def test_a_ring_after_commit_wakes_the_worker_at_once(engine: Engine) -> None:
    bell = _bell(engine)
    assert bell.listen()
    try:
        ticket = bell.ticket(doorbell.EXPORTS)
        started = time.monotonic()
        with engine.begin() as conn:
            doorbell.ring(conn, doorbell.EXPORTS)
        assert bell.wait(doorbell.EXPORTS, ticket, 2.0)
        assert time.monotonic() - started < 0.5
        directory = os.stat(bell.directory)
        assert stat.S_IMODE(directory.st_mode) == 0o700  # the database is its owner's to write (0644)
    finally:
        bell.close()
    assert not os.path.exists(bell.address), "a worker that stops removes its socket"


def test_a_lane_nobody_serves_is_refused_at_the_ring(engine: Engine) -> None:
    with engine.begin() as conn, pytest.raises(ValueError, match="unknown doorbell lane"):
        doorbell.ring(conn, "made-up")


def test_the_socket_a_crashed_worker_left_is_replaced(engine: Engine) -> None:
    bell = _bell(engine)
    assert bell.listen()
    bell.close()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead:  # bound, never removed
        dead.bind(bell.address)
    assert os.path.exists(bell.address)
    assert bell.listen()
    try:
        ticket = bell.ticket(doorbell.JOBS)
        with engine.begin() as conn:
            doorbell.ring(conn, doorbell.JOBS)
        assert bell.wait(doorbell.JOBS, ticket, 2.0)
    finally:
        bell.close()


def test_a_second_worker_on_the_same_file_polls_and_says_so(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = _bell(engine)
    assert first.listen()
    other = create_engine(f"sqlite:///{tmp_path / 'bell.db'}")
    try:
        with caplog.at_level(logging.WARNING, logger="coordination_api.outbox.doorbell"):
            assert not doorbell.of(other).listen()
        assert f"process {os.getpid()} already listens" in caplog.text
    finally:
        doorbell.of(other).close()
        other.dispose()
        first.close()


def test_another_local_user_cannot_take_the_doorbell_s_name(engine: Engine) -> None:
    """Where the database's directory is its owner's, another user reaches nothing beside it."""
    bell = _bell(engine)

    def squat() -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(bell.address)
        return "bound"

    assert _as_nobody(squat) in {"PermissionError", "FileNotFoundError"}
    assert bell.listen(), "the worker is left polling"
    bell.close()


def test_a_worker_run_as_root_is_rung_by_the_database_s_owner(shared_dir: Path) -> None:
    """Root's worker makes the directory and socket the database owner's: its writers still ring."""
    database = shared_dir / "bell.db"
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        if os.getuid() == 0:
            os.chown(database, NOBODY, NOBODY)
        bell = _bell(engine)
        assert bell.listen()
        try:
            ticket = bell.ticket(doorbell.JOBS)

            def ring() -> str:
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
                    out.sendto(b"jobs", bell.address)
                return "sent"

            assert _as_nobody(ring) == "sent"
            assert bell.wait(doorbell.JOBS, ticket, 2.0)
            for path in (bell.directory, bell.address):
                assert os.stat(path).st_uid == NOBODY
        finally:
            bell.close()
    finally:
        engine.dispose()


def test_a_directory_another_user_made_first_is_refused_loudly(
    shared_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In a directory every user may write to (a database in /tmp), another user can make the
    doorbell's directory first: the worker then polls and says why, and writers do not ring into it."""
    database = shared_dir / "bell.db"
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        os.chmod(database, 0o644)
        bell = _bell(engine)
        r, w = os.pipe()  # the child's answer
        go_r, go_w = os.pipe()  # the parent: the worker tried, a writer rang
        ready_r, ready_w = os.pipe()  # the child: the directory and socket are there

        def squat() -> str:
            os.mkdir(bell.directory, 0o777)
            os.chmod(bell.directory, 0o777)  # noqa: S103 - the squatter's, open to all
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.bind(bell.address)
                os.chmod(bell.address, 0o777)  # noqa: S103 - the squatter's, open to all
                os.write(ready_w, b"1")
                sock.settimeout(1.0)
                os.read(go_r, 1)
                try:
                    return sock.recv(256).decode() or "empty"
                except TimeoutError:
                    return "nothing"

        pid = os.fork() if os.getuid() == 0 else -1
        if pid == -1:
            pytest.skip("needs root to act as another local user")
        if pid == 0:  # pragma: no cover - the child
            answer = "?"
            try:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                answer = squat()
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                answer = type(exc).__name__
            finally:
                os.write(w, answer.encode())
                os._exit(0)
        assert os.read(ready_r, 1) == b"1"
        with caplog.at_level(logging.WARNING, logger="coordination_api.outbox.doorbell"):
            assert not bell.listen()
        assert bell.directory in caplog.text and "not a private directory" in caplog.text
        with engine.begin() as conn:
            doorbell.ring(conn, doorbell.JOBS)
        os.write(go_w, b"1")
        os.waitpid(pid, 0)
        heard = os.read(r, 4096).decode()
        for fd in (r, w, go_r, go_w, ready_r, ready_w):
            os.close(fd)
        assert heard == "nothing", f"the squatter heard the writers' rings: {heard!r}"
        bell.close()
    finally:
        engine.dispose()


def test_a_made_up_notify_payload_does_not_grow_the_worker() -> None:
    """PostgreSQL: any role that may NOTIFY the (predictable) channel names lanes too."""
    engine = create_engine(PG_URL)
    bell = doorbell.of(engine)
    try:
        try:
            with engine.connect() as conn:
                channel = doorbell.channel(conn)
        except Exception:  # noqa: BLE001 - the server is part of the test setup
            pytest.skip("PostgreSQL is not reachable")
        assert bell.listen()
        deadline = time.monotonic() + 10
        while not _listening(engine, channel) and time.monotonic() < deadline:
            time.sleep(0.05)
        ticket = bell.ticket(doorbell.JOBS)
        with engine.begin() as conn:
            for n in range(500):
                conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": f"made-up-{n}"})
            conn.execute(text("SELECT pg_notify(:c, 'jobs')"), {"c": channel})
        assert bell.wait(doorbell.JOBS, ticket, 5.0)
        assert set(bell._rings) <= KNOWN, f"the worker keeps a counter for {len(bell._rings)} lane names"
    finally:
        bell.close()
        engine.dispose()


def _listening(engine: Engine, channel: str) -> bool:
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT 1 FROM pg_stat_activity WHERE application_name = :c"), {"c": channel}
        ).first()
    return found is not None
