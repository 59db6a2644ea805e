"""JSON access logs, request ids, Prometheus metrics and the readiness probe (Flask test client)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from flask import Flask, g
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import insert
from werkzeug.routing import Rule

from coordination_api import metrics
from coordination_api.app import create_app
from coordination_api.config import Settings
from coordination_api.health import WorkerHeartbeat
from coordination_api.logs import JsonFormatter
from coordination_api.storage.schema import worker_heartbeat
from tests.conftest import close_app, system_token
from tests.support.connector_states import ALL_OFF


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [
        json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "coordination_api.access"
    ]


def test_access_line_has_route_template_and_no_ids_query_or_token(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    token = client.environ_base["HTTP_AUTHORIZATION"].split()[1]
    caplog.set_level(logging.INFO, "coordination_api.access")
    response = client.get("/fhir/Patient/p-secret-id?name=Dupont", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 404
    [line] = _access_lines(caplog)
    assert line["request_id"] == "req-42"
    assert line["method"] == "GET"
    assert line["route"] == "/fhir/<resource_type>/<res_id>"
    assert line["resource_type"] == "Patient"
    assert line["interaction"] == "read"
    assert line["status"] == 404
    assert line["client_id"] and isinstance(line["duration_ms"], float)
    text = json.dumps(line)
    assert "p-secret-id" not in text and "Dupont" not in text and token not in text


def test_request_id_is_generated_when_invalid(client: FlaskClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "bad\x01id"})
    assert response.headers["X-Request-ID"] != "bad\x01id"
    assert len(response.headers["X-Request-ID"]) == 36


def test_metrics_needs_no_token_and_counts_interactions(anonymous_client: FlaskClient) -> None:
    labels = {"interaction": "capabilities", "resource_type": "", "status_class": "2xx"}
    before = _sample("coordination_http_request_duration_seconds_count", **labels)
    anonymous_client.get("/fhir/metadata")
    response = anonymous_client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    body = response.get_data(as_text=True)
    assert "coordination_outbox_pending 0.0" in body
    assert "coordination_outbox_scrape_ok 1.0" in body
    assert "coordination_db_pool_checked_out" in body
    assert _sample("coordination_http_request_duration_seconds_count", **labels) == before + 1


def test_token_issuance_is_counted_by_grant_type(app: Flask) -> None:

    before = _sample("coordination_tokens_issued_total", grant_type="client_credentials")
    system_token(app.test_client())
    assert _sample("coordination_tokens_issued_total", grant_type="client_credentials") == before + 1


@pytest.mark.parametrize(
    ("endpoint", "rule", "method", "expected"),
    [
        ("fhir.instance", "/fhir/<resource_type>/<res_id>", "GET", "read"),
        ("fhir.instance", "/fhir/<resource_type>/<res_id>", "HEAD", "read"),
        ("fhir.instance", "/fhir/<resource_type>/<res_id>", "PATCH", "patch"),
        ("fhir.vread", "/fhir/<resource_type>/<res_id>/_history/<version_id>", "GET", "vread"),
        ("fhir.type_level", "/fhir/<resource_type>", "GET", "search-type"),
        ("fhir.type_level", "/fhir/<resource_type>", "POST", "create"),
        ("fhir.system", "/fhir", "POST", "transaction"),
        ("fhir.process_message", "/fhir/$process-message", "POST", "$process-message"),
        ("fhir.plandefinition_apply", "/fhir/PlanDefinition/<res_id>/$apply", "POST", "$apply"),
        ("auth.token", "/auth/token", "POST", "auth.token"),
    ],
)
def test_interaction_names(endpoint: str, rule: str, method: str, expected: str) -> None:

    assert metrics.interaction(Rule(rule, endpoint=endpoint), method) == expected


def test_resource_type_label_is_bounded() -> None:

    rule = Rule("/fhir/<resource_type>", endpoint="fhir.type_level")
    assert metrics.resource_type(rule, {"resource_type": "Patient"}, {"Patient"}) == "Patient"
    assert metrics.resource_type(rule, {"resource_type": "x" * 50}, {"Patient"}) == "unknown"
    apply = Rule("/fhir/PlanDefinition/<res_id>/$apply", endpoint="fhir.apply")
    assert metrics.resource_type(apply, {"res_id": "1"}, {"Patient"}) == "PlanDefinition"
    assert metrics.resource_type(None, None, {"Patient"}) == ""


def test_counters_clamp_unknown_label_values() -> None:
    before = _sample("coordination_hl7v2_messages_total", transport="mllp", ack_code="other")
    metrics.hl7v2_message("mllp", "ZZ")
    assert _sample("coordination_hl7v2_messages_total", transport="mllp", ack_code="other") == before + 1
    before = _sample("coordination_tokens_issued_total", grant_type="other")
    metrics.token_issued("urn:whatever")
    assert _sample("coordination_tokens_issued_total", grant_type="other") == before + 1


def test_create_app_many_times_registers_metrics_once(tmp_path: Path) -> None:
    labels = {"interaction": "capabilities", "resource_type": "", "status_class": "2xx"}
    before = _sample("coordination_http_request_duration_seconds_count", **labels)
    # A configured secret: the page-token signer does not read the (unmigrated) database.
    apps = [
        create_app(Settings(database_url=f"sqlite:///{tmp_path / f'{n}.db'}", secret_key="s" * 32))
        for n in range(3)
    ]
    try:
        for made in apps:
            assert made.test_client().get("/fhir/metadata").status_code == 200
        body = apps[-1].test_client().get("/metrics").get_data(as_text=True)
    finally:
        for made in apps:
            close_app(made)
    # Each app counts into the one process registry; each family is exposed once (a second
    # registration would raise, or show the family twice).
    assert _sample("coordination_http_request_duration_seconds_count", **labels) == before + 3
    families = [line.split()[2] for line in body.splitlines() if line.startswith("# TYPE ")]
    assert "coordination_http_request_duration_seconds" in families
    assert len(families) == len(set(families)), sorted(families)


def _ready_app(database_url: str, max_age: float) -> Flask:
    settings = Settings(
        database_url=database_url, ready_requires_worker=True, worker_heartbeat_max_age=max_age
    )
    return create_app(settings)


def test_readiness_waits_for_a_worker_heartbeat_when_one_is_expected(app: Flask, database_url: str) -> None:
    app.test_client()  # the session database, migrated
    ready_app = _ready_app(database_url, 30.0)
    engine = ready_app.extensions["coordination"].repo.engine
    try:
        with engine.begin() as conn:
            conn.execute(worker_heartbeat.delete())
            # A worker gone quiet long ago does not count.
            old = int((time.time() - 3600) * 1_000_000)
            conn.execute(insert(worker_heartbeat).values(worker_id="gone:1", seen_us=old))
        response = ready_app.test_client().get("/readyz")
        assert response.status_code == 503
        assert "heartbeat" in response.get_json()["issue"][0]["diagnostics"]
        beat = WorkerHeartbeat(engine)
        beat.beat()
        assert ready_app.test_client().get("/readyz").get_json() == {"status": "ready", "connectors": ALL_OFF}
        beat.stop()
        assert ready_app.test_client().get("/readyz").status_code == 503
    finally:
        with engine.begin() as conn:
            conn.execute(worker_heartbeat.delete())
        close_app(ready_app)


def test_readiness_fails_when_migrations_are_not_applied(tmp_path: Path) -> None:
    fresh = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}"))
    response = fresh.test_client().get("/readyz")
    close_app(fresh)
    assert response.status_code == 503
    assert "db upgrade" in response.get_json()["issue"][0]["diagnostics"]


def test_lines_logged_during_a_request_name_its_id(app: Flask) -> None:
    record = logging.LogRecord("coordination_api.x", logging.ERROR, __file__, 1, "failed %s", ("here",), None)
    with app.test_request_context("/fhir/Patient"):
        g.request_id = "req-7"
        line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "req-7" and line["msg"] == "failed here" and line["level"] == "ERROR"
    assert "request_id" not in json.loads(JsonFormatter().format(record))
