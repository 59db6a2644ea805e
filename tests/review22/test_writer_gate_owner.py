"""Review 22: the SQLite writer gate's lock file (``<db>-writer.lock``, mode 0600) is created by whoever
writes first. An operator command run as root (``coordination import``, ``clients create``…) leaves it
root's: the service user, who owns the database, then gets PermissionError on every write (a 500:
errors.py maps only "database is locked" to 503). SQLite itself hands its -wal/-shm files to the
database's owner when it runs as root; the gate does not."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import text

from coordination_api.storage.engine import WRITE, make_engine

NOBODY = 65534


def _write(database: Path) -> None:
    engine = make_engine(f"sqlite:///{database}")
    try:
        with engine.connect().execution_options(**WRITE) as conn, conn.begin():
            conn.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        engine.dispose()


def test_the_service_user_writes_after_a_root_command() -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to act as the operator and as the service user")
    directory = Path(tempfile.mkdtemp(prefix="review22-"))  # (pytest's tmp_path is root's, 0700)
    try:
        _root_then_service_user(directory)
    finally:
        shutil.rmtree(directory)


def _root_then_service_user(directory: Path) -> None:
    database = directory / "coordination.db"
    _write(database)  # the operator's command, as root
    for path in [directory, *directory.iterdir()]:
        if not path.name.endswith("-writer.lock"):  # the operator hands over what he knows of
            os.chown(path, NOBODY, NOBODY)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: the service user
        answer = b"ok"
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            _write(database)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            answer = f"{type(exc).__name__}: {exc}".encode()
        finally:
            os.write(w, answer)
            os._exit(0)
    os.waitpid(pid, 0)
    reported = os.read(r, 4096).decode()
    os.close(r)
    os.close(w)
    assert reported == "ok", f"the database's owner cannot write: {reported}"
