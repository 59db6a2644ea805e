"""The SQLite writer gate's lock file (``<db>-writer.lock``) follows the database file, as SQLite's
-wal/-shm do (storage/sidecar.py; review 22 F3): an operator command run as root must not stop the
service user, who owns the database, from writing; a lock file that cannot be opened is a 503 naming
it, never a 500."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from coordination_api.app import create_app
from coordination_api.config import Settings
from coordination_api.storage.engine import WRITE, make_engine
from coordination_api.storage.migrate import upgrade
from tests.conftest import close_app

NOBODY = 65534


def _write(database: Path) -> None:
    engine = make_engine(f"sqlite:///{database}")
    try:
        with engine.connect().execution_options(**WRITE) as conn, conn.begin():
            conn.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        engine.dispose()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the service user (nobody) can reach (pytest's tmp_path is root's, 0700)."""
    if os.getuid() != 0:
        pytest.skip("needs root to act as the operator and as the service user")
    directory = Path(tempfile.mkdtemp(prefix="writer-gate-"))
    os.chmod(directory, 0o755)  # noqa: S103 - the service user must reach it
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def _as_service_user(database: Path) -> str:
    """Write to ``database`` from a child process running as uid nobody: "ok" or the error."""
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
    return reported


def test_the_service_user_writes_after_a_root_command(shared_dir: Path) -> None:
    database = shared_dir / "coordination.db"
    _write(database)  # the operator's command, as root, makes the database
    for path in [shared_dir, *shared_dir.iterdir()]:
        if not path.name.endswith("-writer.lock"):  # the operator hands over what he knows of
            os.chown(path, NOBODY, NOBODY)
    reported = _as_service_user(database)
    assert reported == "ok", f"the database's owner cannot write: {reported}"


def test_root_s_lock_file_takes_the_database_s_owner_and_mode(shared_dir: Path) -> None:
    database = shared_dir / "coordination.db"
    os.chown(shared_dir, NOBODY, NOBODY)
    assert _as_service_user(database) == "ok"  # the service user makes the database
    (shared_dir / "coordination.db-writer.lock").unlink()
    os.chmod(database, 0o640)
    _write(database)  # then an operator command, as root, is the first to need the lock file
    lock = os.stat(shared_dir / "coordination.db-writer.lock")
    assert (lock.st_uid, lock.st_gid) == (NOBODY, NOBODY)
    assert stat.S_IMODE(lock.st_mode) == 0o640
    assert _as_service_user(database) == "ok"


def test_a_lock_file_that_cannot_be_opened_is_a_503_naming_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gate.db'}"
    first = create_app(Settings(database_url=url, audit_reads="sync"))
    upgrade(first.extensions["coordination"].repo.engine)
    client_id, secret = first.extensions["auth"].store.create_client(
        "tests", "system/*.cruds", "client_secret_basic", [], None, None
    )
    close_app(first)
    lock = tmp_path / "gate.db-writer.lock"
    lock.unlink(missing_ok=True)
    lock.mkdir()  # nothing can open it as a file (as a root-owned 0600 one for the service user)
    # async: the refused request's own audit waits for the file too, and would answer instead (sync)
    app = create_app(Settings(database_url=url, audit_reads="async"))
    try:
        client = app.test_client()
        token = client.post(
            "/auth/token",
            data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
            auth=(client_id, secret),
        )
        assert token.status_code == 200, token.get_json()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token.get_json()['access_token']}"

        def post() -> Any:
            return client.post(
                "/fhir/Patient",
                data=orjson.dumps({"resourceType": "Patient"}),
                headers={"Content-Type": "application/fhir+json"},
            )

        response = post()
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.headers["Retry-After"]
        issue = response.get_json()["issue"][0]
        assert issue["code"] == "transient"
        assert "gate.db-writer.lock" in issue["diagnostics"]
        assert str(tmp_path) not in issue["diagnostics"]  # the file's name, not the server's layout
        lock.rmdir()
        assert post().status_code == 201  # the file back: writes go through, without a restart
    finally:
        if lock.is_dir():
            lock.rmdir()
        close_app(app)
