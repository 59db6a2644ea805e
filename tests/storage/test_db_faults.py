"""Database faults a retry cures are 503 with Retry-After, never 500 (issue 17; docs/operations.md,
database faults): a write lock held beyond the lock timeout (SQLite busy_timeout, PostgreSQL
lock_timeout), a statement cancelled by statement_timeout. Every connection carries the configured bounds."""

from __future__ import annotations

import socket
import time
from typing import Any

import orjson
import pytest
from flask.testing import FlaskClient

from coordination_api.app import create_app
from coordination_api.config import DatabaseTimeouts, Settings
from coordination_api.storage.migrate import upgrade
from tests.conftest import authed, close_app
from tests.support.db_faults import timeouts_app, write_lock_held
from tests.support.messages import as_sender, discharge_message


def _post_patient(client: FlaskClient, family: str) -> Any:
    body = {"resourceType": "Patient", "name": [{"family": family}]}
    headers = {"Content-Type": "application/fhir+json"}
    return client.post("/fhir/Patient", data=orjson.dumps(body), headers=headers)


def _assert_transient(response: Any) -> None:
    assert response.status_code == 503, response.get_json()
    assert int(response.headers["Retry-After"]) >= 1
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [issue["code"] for issue in outcome["issue"]] == ["transient"]
    assert "retry later" in outcome["issue"][0]["diagnostics"]


def test_write_lock_held_beyond_the_lock_timeout_is_503_transient(database_url: str, backend: str) -> None:
    with timeouts_app(database_url, DatabaseTimeouts(lock=0.3)) as app:
        client = authed(app.test_client())  # the token is issued before the lock is taken
        created = _post_patient(client, "BeforeLock")
        assert created.status_code == 201
        with write_lock_held(database_url, backend):
            started = time.monotonic()
            _assert_transient(_post_patient(client, "DuringLock"))
            assert time.monotonic() - started < 5  # the lock timeout, not 60 s
            read = client.get(f"/fhir/Patient/{created.get_json()['id']}")
            if backend == "postgresql":  # EXCLUSIVE lets readers through, and the audit table is free
                assert read.status_code == 200
            else:  # a read is audited before it is answered, and the audit write needs the lock
                _assert_transient(read)
        after = _post_patient(client, "AfterLock")
        assert after.status_code == 201
        # The refused write left nothing behind.
        names = client.get("/fhir/Patient?family=DuringLock").get_json()
        assert names.get("total", len(names.get("entry", []))) == 0


def test_statement_cancelled_by_the_statement_timeout_is_503(database_url: str, backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has no statement timeout (docs/operations.md, database faults)")
    # No lock timeout: the write waits on the lock until statement_timeout cancels it (SQLSTATE 57014).
    with timeouts_app(database_url, DatabaseTimeouts(statement=0.5, lock=0)) as app:
        client = authed(app.test_client())
        with write_lock_held(database_url, backend):
            _assert_transient(_post_patient(client, "Slow"))
        assert _post_patient(client, "Fast").status_code == 201


def test_every_connection_carries_the_configured_timeouts(database_url: str, backend: str) -> None:
    timeouts = DatabaseTimeouts(statement=12, lock=3, connect=4, idle_in_transaction=45)
    with timeouts_app(database_url, timeouts) as app:
        engine = app.extensions["coordination"].repo.engine
        with engine.connect() as conn:
            if backend == "sqlite":
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 3000
                return
            shown = {
                name: conn.exec_driver_sql(f"SHOW {name}").scalar()
                for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
            }
        assert shown == {
            "statement_timeout": "12s",
            "lock_timeout": "3s",
            "idle_in_transaction_session_timeout": "45s",
        }


def test_database_timeouts_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "COORDINATION_DB_STATEMENT_TIMEOUT": "20",
            "COORDINATION_DB_LOCK_TIMEOUT": "2.5",
            "COORDINATION_DB_CONNECT_TIMEOUT": "3",
            "COORDINATION_DB_IDLE_IN_TRANSACTION_TIMEOUT": "0",
            "COORDINATION_DB_POOL_TIMEOUT": "4",
        }
    )
    assert settings.db_timeouts == DatabaseTimeouts(
        statement=20, lock=2.5, connect=3, idle_in_transaction=0, pool=4
    )
    assert Settings.from_env({}).db_timeouts == DatabaseTimeouts(
        statement=30, lock=10, connect=5, idle_in_transaction=60, pool=10
    )


def test_a_database_that_accepts_but_never_answers_is_a_quick_503(database_url: str, backend: str) -> None:
    """A server that takes the TCP connection and says nothing (hung host, half-open network): the
    connect timeout bounds the wait, the answer is 503 with Retry-After, not a hang."""
    if backend == "sqlite":
        pytest.skip("SQLite is a file: there is no server to wait for")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the backlog; nothing ever answers them
        port = silent.getsockname()[1]
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"
        application = create_app(Settings(database_url=url, db_timeouts=DatabaseTimeouts(connect=2)))
        application.config["TESTING"] = True
        try:
            client = application.test_client()
            started = time.monotonic()
            response = client.get("/fhir/Patient/anything", headers={"Authorization": "Bearer not-a-token"})
            elapsed = time.monotonic() - started
        finally:
            application.extensions["coordination"].repo.engine.dispose()
    _assert_transient(response)
    assert elapsed < 2 + 3, f"the request waited {elapsed:.1f} s"


def test_every_pooled_connection_busy_beyond_the_pool_timeout_is_503(database_url: str, backend: str) -> None:
    """Other requests hold every pooled connection (here: the test holds them through the app's own
    engine): the next request waits the pool timeout, then is refused with 503, not queued for ever."""
    if backend == "sqlite":
        pytest.skip("the SQLite pool (20 + 20) is the same code path; PostgreSQL's is sized by setting")
    settings = Settings(
        database_url=database_url, audit_reads="sync", db_pool_size=1, db_timeouts=DatabaseTimeouts(pool=0.5)
    )
    application = create_app(settings)
    application.config["TESTING"] = True
    engine = application.extensions["coordination"].repo.engine
    upgrade(engine)
    try:
        client = authed(application.test_client())
        held = [engine.connect() for _ in range(2)]  # pool_size 1 + max_overflow 1
        try:
            started = time.monotonic()
            response = _post_patient(client, "NoConnection")
            elapsed = time.monotonic() - started
        finally:
            for conn in held:
                conn.close()
        _assert_transient(response)
        assert elapsed < 3
        assert _post_patient(client, "Connected").status_code == 201
    finally:
        close_app(application)


def test_a_discharge_message_refused_for_a_held_lock_is_503_and_stored_once_on_retry(
    database_url: str, backend: str
) -> None:
    """$process-message (the intake door of issue 17): a 503 transient with Retry-After while the lock
    is held, nothing stored; the sender's retry of the same message is processed once."""
    with timeouts_app(database_url, DatabaseTimeouts(lock=0.3)) as app:
        client = as_sender(authed(app.test_client()))
        message = discharge_message(message_id=f"db-fault-{backend}")
        headers = {"Content-Type": "application/fhir+json"}
        with write_lock_held(database_url, backend):
            refused = client.post("/fhir/$process-message", json=message, headers=headers)
        assert refused.status_code == 503, refused.get_json()
        assert int(refused.headers["Retry-After"]) >= 1
        assert client.get("/fhir/Encounter").get_json().get("entry", []) == []
        accepted = client.post("/fhir/$process-message", json=message, headers=headers)
        assert accepted.status_code == 200, accepted.get_json()
        again = client.post("/fhir/$process-message", json=message, headers=headers)
        assert again.status_code == 200
        assert len(client.get("/fhir/Encounter").get_json().get("entry", [])) == 1
