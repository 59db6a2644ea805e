"""What ``coordination serve`` publishes about its children reaches /readyz and /metrics (issue 17):
a child being restarted is named as degraded (200: the HTTP API still takes messages) and counted."""

from __future__ import annotations

import re
from pathlib import Path

from flask import Flask

from coordination_api.app import create_app
from coordination_api.config import Settings
from coordination_api.health import ChildState, read_child_state, write_child_state
from coordination_api.storage.schema import worker_heartbeat
from tests.conftest import close_app
from tests.support.connector_states import ALL_OFF


def _state(state: str, restarts: int, last_exit: str = "") -> ChildState:
    return ChildState(
        state=state, pid=None if state != "running" else 1234, restarts=restarts, last_exit=last_exit
    )


def test_readyz_and_metrics_report_the_children_serve_publishes(
    app: Flask, database_url: str, tmp_path: Path
) -> None:
    app.test_client()  # the session database, migrated
    served = create_app(
        Settings(database_url=database_url, metrics_multiproc_dir=str(tmp_path), ready_requires_worker=False)
    )
    try:
        client = served.test_client()
        # No state file: not under serve.
        assert client.get("/readyz").get_json() == {"status": "ready", "connectors": ALL_OFF}
        write_child_state(
            str(tmp_path),
            {
                "http": _state("running", 0),
                "mllp": _state("restarting", 1, "signal SIGKILL"),
                "worker": _state("restarting", 2, "exit 1"),
            },
        )
        answer = client.get("/readyz")
        assert answer.status_code == 200
        assert answer.get_json() == {
            "status": "degraded",
            "degraded": ["mllp", "worker"],
            "connectors": ALL_OFF,
        }
        scrape = client.get("/metrics").get_data(as_text=True)
        assert re.search(r'^coordination_child_restarts_total\{child="worker"\} 2\.0$', scrape, re.MULTILINE)
        assert re.search(r'^coordination_child_up\{child="mllp"\} 0\.0$', scrape, re.MULTILINE)
        assert re.search(r'^coordination_child_up\{child="http"\} 1\.0$', scrape, re.MULTILINE)
        write_child_state(str(tmp_path), {"worker": _state("running", 2), "mllp": _state("running", 1)})
        assert client.get("/readyz").get_json() == {"status": "ready", "connectors": ALL_OFF}
    finally:
        close_app(served)


def test_a_worker_without_heartbeat_is_503_naming_the_part_being_restarted(
    app: Flask, database_url: str, tmp_path: Path
) -> None:
    app.test_client()
    served = create_app(
        Settings(database_url=database_url, metrics_multiproc_dir=str(tmp_path), ready_requires_worker=True)
    )
    try:
        with served.extensions["coordination"].repo.engine.begin() as conn:
            conn.execute(worker_heartbeat.delete())
        write_child_state(str(tmp_path), {"worker": _state("restarting", 3, "signal SIGKILL")})
        answer = served.test_client().get("/readyz")
        assert answer.status_code == 503
        diagnostics = answer.get_json()["issue"][0]["diagnostics"]
        assert diagnostics.endswith("(being restarted: worker)")
    finally:
        close_app(served)


def test_an_unreadable_state_file_means_no_supervised_child(tmp_path: Path) -> None:
    (tmp_path / "supervisor.json").write_text("{half a file")
    assert read_child_state(str(tmp_path)) == {}
    assert read_child_state("") == {}
