"""Review of issue 17 (database faults): paths that answer a fault a retry cures with something other
than 503 + Retry-After. See /tmp/review/findings17.md."""

from __future__ import annotations

import socket

import pytest

from coordination_api.app import create_app
from coordination_api.config import DatabaseTimeouts, Settings
from tests.conftest import authed
from tests.support.db_faults import timeouts_app, write_lock_held
from tests.support.hl7v2 import adt
from tests.support.messages import as_sender


@pytest.mark.parametrize(
    ("method", "path", "data"),
    [
        ("POST", "/auth/token", {"grant_type": "client_credentials", "scope": "system/*.rs"}),
        ("POST", "/auth/login", {"username": "dr", "password": "x"}),
    ],
)
def test_auth_endpoints_of_a_fresh_process_answer_503_while_the_database_is_down(
    backend: str, method: str, path: str, data: dict[str, str]
) -> None:
    """Without COORDINATION_SECRET_KEY (the default) the session key is loaded from the database in
    Flask's open_session, before any view and outside the error translator's reach: a worker started
    (or restarted by serve) while PostgreSQL is away answers every /auth/ request 500, no Retry-After,
    and backend clients cannot even get a token. TESTING off: the production error path."""
    if backend == "sqlite":
        pytest.skip("SQLite is a file: there is no server to lose")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"postgresql+psycopg://postgres@127.0.0.1:{silent.getsockname()[1]}/test"
        application = create_app(Settings(database_url=url, db_timeouts=DatabaseTimeouts(connect=2)))
        try:
            response = application.test_client().open(
                path, method=method, data=data, auth=("client", "secret")
            )
        finally:
            application.extensions["coordination"].repo.engine.dispose()
    assert response.status_code == 503, response.get_data(as_text=True)[:200]
    assert int(response.headers["Retry-After"]) >= 1


def test_hl7v2_over_http_answers_a_database_fault_as_transient(database_url: str, backend: str) -> None:
    """POST /hl7v2 while a write lock is held beyond the lock timeout: the message was not stored, a
    retry would cure it, yet the answer is 422 with MSA|AE 207 (connectors.hl7v2.handle turns every
    exception into AE). Expected 503 + Retry-After (as $process-message), or at least MSA|AR (HL7 v2.5
    2.9.2.2: system down). On SQLite the audit write fails too and masks it as 503."""
    with timeouts_app(database_url, DatabaseTimeouts(lock=0.3)) as app:
        client = as_sender(authed(app.test_client()))
        with write_lock_held(database_url, backend):
            response = client.post(
                "/hl7v2",
                data=adt("A01", control_id="LOCK1"),
                headers={"Content-Type": "x-application/hl7-v2+er7"},
            )
    ack = response.get_data(as_text=True)
    assert response.status_code == 503 or "MSA|AR" in ack, (response.status_code, ack.replace("\r", " | "))
