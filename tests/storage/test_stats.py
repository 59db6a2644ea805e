"""Planner statistics (storage/stats.py, issue 21): the tables that writes grow are analyzed after
large imports and transactions, not after small writes; autovacuum off is warned about at start."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine

from coordination_api.app import create_app
from coordination_api.cli import main
from coordination_api.config import DatabaseTimeouts, Settings
from coordination_api.storage.engine import WRITE, is_postgres, make_engine
from coordination_api.storage.migrate import upgrade
from coordination_api.storage.stats import FAILED_RECHECK_SECONDS, TableStats, check_at_start
from tests.conftest import authed, close_app

# The tables every write of a resource grows.
GROWN = {"resource", "resource_history", "idx_token", "idx_reference"}


def _app(engine: Engine, **settings: Any) -> Flask:
    url = engine.url.render_as_string(hide_password=False)
    app = create_app(Settings(database_url=url, audit_reads="sync", **settings))
    upgrade(app.extensions["coordination"].repo.engine)
    return app


@pytest.fixture
def small_threshold_app(empty_engine: Engine) -> Iterator[Flask]:
    """An app on a database of its own that analyzes a table after 50 rows written."""
    app = _app(empty_engine, analyze_threshold=50)
    yield app
    close_app(app)


def _stats(app: Flask) -> TableStats:
    stats = app.extensions["coordination"].stats
    assert stats is not None
    return stats


def analyzed(engine: Engine) -> set[str]:
    """The tables that have statistics: ANALYZEd on PostgreSQL, in sqlite_stat1 on SQLite."""
    with engine.connect() as conn:
        if is_postgres(conn):
            rows = conn.exec_driver_sql(
                "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema() "
                "AND last_analyze IS NOT NULL"
            )
            return {name for (name,) in rows}
        if not conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first():
            return set()
        return {name for (name,) in conn.exec_driver_sql("SELECT DISTINCT tbl FROM sqlite_stat1")}


def transaction(patients: int) -> dict[str, Any]:
    entries = []
    for i in range(patients):
        entries.append(
            {
                "fullUrl": f"urn:uuid:00000000-0000-0000-0000-{i:012d}",
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.7", "value": f"S-{i}"}],
                    "name": [{"family": f"Stat{i}"}],
                },
                "request": {"method": "POST", "url": "Patient"},
            }
        )
        entries.append(
            {
                "resource": {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                    "subject": {"reference": f"urn:uuid:00000000-0000-0000-0000-{i:012d}"},
                },
                "request": {"method": "POST", "url": "Encounter"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _post(client: FlaskClient, bundle: dict[str, Any]) -> None:
    response = client.post(
        "/fhir", data=orjson.dumps(bundle), headers={"Content-Type": "application/fhir+json"}
    )
    assert response.status_code == 200, response.get_json()


def test_a_large_transaction_analyzes_the_tables_it_grew(small_threshold_app: Flask) -> None:
    client = authed(small_threshold_app.test_client())
    _post(client, transaction(40))  # 80 resources: past 50 rows in each table it grew
    assert _stats(small_threshold_app).wait()  # the refresh runs after the request, in the background
    engine = small_threshold_app.extensions["coordination"].repo.engine
    assert analyzed(engine) >= GROWN


def test_a_table_just_analyzed_is_not_analyzed_again_whatever_its_estimates(
    small_threshold_app: Flask,
) -> None:
    """SQLite's sampled ANALYZE (analysis_limit) leaves row estimates far from the real size; judged
    by them, the tables were analyzed again at every check, forever, after a bulk load."""
    client = authed(small_threshold_app.test_client())
    _post(client, transaction(40))
    stats = _stats(small_threshold_app)
    assert stats.wait()
    engine = small_threshold_app.extensions["coordination"].repo.engine
    assert analyzed(engine) >= GROWN
    if not is_postgres(engine):
        with engine.begin() as conn:  # estimates far below the real sizes, as sampling leaves them
            conn.exec_driver_sql("UPDATE sqlite_stat1 SET stat = '1 1'")
    assert not set(stats.grown()) & GROWN


def test_a_small_transaction_analyzes_nothing(small_threshold_app: Flask) -> None:
    client = authed(small_threshold_app.test_client())
    _post(client, transaction(3))  # 6 resources
    assert _stats(small_threshold_app).wait()
    engine = small_threshold_app.extensions["coordination"].repo.engine
    assert not analyzed(engine) & GROWN


def test_small_writes_add_up_to_an_analyze(small_threshold_app: Flask) -> None:
    client = authed(small_threshold_app.test_client())
    engine = small_threshold_app.extensions["coordination"].repo.engine
    for _ in range(4):
        _post(client, transaction(5))  # 10 resources each: 40 in all
    assert _stats(small_threshold_app).wait()
    assert not analyzed(engine) & GROWN
    for _ in range(2):
        _post(client, transaction(5))  # 60 in all
    assert _stats(small_threshold_app).wait()
    assert analyzed(engine) >= GROWN


def test_import_analyzes_the_tables_it_grew(small_threshold_app: Flask, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_bytes(orjson.dumps(transaction(40)))
    result = small_threshold_app.test_cli_runner().invoke(main, args=["import", str(path)])
    assert result.exit_code == 0, result.output
    engine = small_threshold_app.extensions["coordination"].repo.engine
    assert analyzed(engine) >= GROWN  # before the command returned


def test_import_of_a_few_resources_analyzes_nothing(small_threshold_app: Flask, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_bytes(orjson.dumps(transaction(3)))
    result = small_threshold_app.test_cli_runner().invoke(main, args=["import", str(path)])
    assert result.exit_code == 0, result.output
    engine = small_threshold_app.extensions["coordination"].repo.engine
    assert not analyzed(engine) & GROWN


def test_no_analyze_when_turned_off(empty_engine: Engine) -> None:
    app = _app(empty_engine, analyze_threshold=50, analyze_after_writes=False)
    try:
        _post(authed(app.test_client()), transaction(40))
        assert _stats(app).wait()
        assert not analyzed(empty_engine) & GROWN
    finally:
        close_app(app)


def test_start_up_analyzes_tables_left_without_statistics(empty_engine: Engine) -> None:
    """A bulk load by another writer (here: an app with the refresh off) left big tables unanalyzed."""
    loader = _app(empty_engine, analyze_after_writes=False)
    try:
        _post(authed(loader.test_client()), transaction(40))
    finally:
        close_app(loader)
    check_at_start(TableStats(empty_engine, minimum=50))
    assert analyzed(empty_engine) >= GROWN


def test_start_up_warns_when_autovacuum_is_off(
    empty_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    if not is_postgres(empty_engine):
        pytest.skip("PostgreSQL's autovacuum")
    with empty_engine.connect() as conn:
        autovacuum = conn.exec_driver_sql("SHOW autovacuum").scalar()
    with caplog.at_level(logging.WARNING, logger="coordination_api.storage.stats"):
        assert check_at_start(TableStats(empty_engine)) is (autovacuum == "on")
    warned = [r for r in caplog.records if "autovacuum is off" in r.getMessage()]
    assert len(warned) == (0 if autovacuum == "on" else 1)


def test_a_writer_gate_timeout_during_analyze_is_logged_and_waits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite: the ANALYZE waits for the writer gate like any writer; a gate timeout (a raw
    sqlite3 error, raised before SQLAlchemy wraps anything) is logged and the next check waits
    FAILED_RECHECK_SECONDS, not the next write (review 22)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'gate.db'}", timeouts=DatabaseTimeouts(lock=0.2))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            conn.exec_driver_sql(
                "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 20) "
                "INSERT INTO t SELECT x FROM n"
            )
        stats = TableStats(engine, minimum=10)
        stats.add(20)
        with (
            engine.connect().execution_options(**WRITE) as holder,
            holder.begin(),  # the gate is taken
            caplog.at_level(logging.WARNING, logger="coordination_api.storage.stats"),
        ):
            assert stats.refresh(wait=True) == []
        assert "refreshing table statistics failed: OperationalError" in caplog.text
        assert not stats.due(), "a failed check is retried after FAILED_RECHECK_SECONDS, not at once"
        assert stats._next_check - time.monotonic() > FAILED_RECHECK_SECONDS / 2
        assert stats.refresh(wait=True, force=True) == ["t"]  # the gate free again
    finally:
        engine.dispose()
