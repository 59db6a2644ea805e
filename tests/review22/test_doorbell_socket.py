"""Review 22: the SQLite doorbell is a Linux abstract UNIX socket. Abstract names have no file
permissions: any local user (any uid in the network namespace) can ring it, bind it first, and name any
lane; the receiving thread keeps a counter per lane name it ever received (Doorbell._rings), so a flood
of made-up lane names grows the worker's memory without bound."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from coordination_api.outbox import doorbell

NOBODY = 65534


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'bell.db'}")
    yield engine
    engine.dispose()


def _as_nobody(action) -> None:  # type: ignore[no-untyped-def]
    """Run ``action`` in a child process that dropped to another local user (uid nobody)."""
    if os.getuid() != 0:
        pytest.skip("needs root to act as another local user")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            action()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_another_local_user_cannot_wake_the_worker(engine: Engine) -> None:
    bell = doorbell.of(engine)
    assert bell.listen()
    try:
        ticket = bell.ticket(doorbell.JOBS)

        def ring() -> None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
                out.sendto(b"jobs exports", bell.address)  # type: ignore[attr-defined]

        _as_nobody(ring)
        woken = bell.wait(doorbell.JOBS, ticket, 2.0)
        assert not woken, "a datagram from another uid woke the jobs lane (a pass that takes the write lock)"
    finally:
        bell.close()


def test_made_up_lane_names_do_not_grow_the_worker(engine: Engine) -> None:
    bell = doorbell.of(engine)
    assert bell.listen()
    try:

        def flood() -> None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
                for n in range(20_000):
                    name = f"x{n:07d}-" + "y" * 20
                    while True:
                        try:
                            out.sendto(" ".join(f"{name}{k}" for k in range(8)).encode(), bell.address)  # type: ignore[attr-defined]
                            break
                        except BlockingIOError:
                            time.sleep(0.001)

        _as_nobody(flood)
        time.sleep(1.0)
        known = {doorbell.NOTIFICATIONS, doorbell.JOBS, doorbell.EXPORTS}
        names = len(bell._rings)
        assert names <= len(known), (
            f"the worker now keeps a counter for {names} lane names sent by another user"
        )
    finally:
        bell.close()


def test_another_local_user_cannot_take_the_doorbell_s_name(engine: Engine) -> None:
    """A squatter binds the (predictable) name first: the worker then only polls, silently (log.info),
    and the squatter receives every ring."""
    bell = doorbell.of(engine)
    address = bell.address  # type: ignore[attr-defined]
    r, w = os.pipe()

    def squat() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(address)
            os.write(w, b"1")
            time.sleep(3)

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: a squatter of another uid
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            squat()
        finally:
            os._exit(0)
    try:
        assert os.read(r, 1) == b"1"
        listening = bell.listen()
        try:
            assert listening, "another local user holds the doorbell's name: the worker is left polling"
        finally:
            bell.close()
    finally:
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)
