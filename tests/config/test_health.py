"""Configuration from the environment, and the health probes."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from coordination_api.app import create_app
from coordination_api.config import Settings
from tests.conftest import authed
from tests.support.connector_states import ALL_OFF


def test_settings_read_prefixed_environment(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    settings = Settings.from_env(
        {
            "COORDINATION_DATABASE_URL": "sqlite:///x.db",
            "COORDINATION_PUBLIC_BASE_URL": "https://fhir.example.org/fhir/",
            "COORDINATION_MAX_BODY_BYTES": "1024",
            "COORDINATION_DEFAULT_PAGE_SIZE": "7",
            "COORDINATION_DB_ECHO": "yes",
            "COORDINATION_SECRET_KEY_FILE": str(secret),
            "COORDINATION_LOG_LEVEL": "debug",
            "UNRELATED": "ignored",
        }
    )
    assert settings.database_url == "sqlite:///x.db"
    assert settings.public_base_url == "https://fhir.example.org/fhir"
    assert settings.max_body_bytes == 1024
    assert settings.default_page_size == 7
    assert settings.db_echo is True
    assert settings.secret_key == "s3cret"
    assert settings.log_level == "DEBUG"


def test_settings_defaults_and_overrides() -> None:
    settings = Settings.from_env({}, max_page_size=50)
    assert settings.database_url.startswith("sqlite:///") and settings.database_url.endswith(
        "instance/coordination.db"
    )
    assert settings.max_page_size == 50
    assert settings.secret_key is None
    with pytest.raises(ValueError):
        Settings.from_env({"COORDINATION_MAX_BODY_BYTES": "ten"})


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready", "connectors": ALL_OFF}


def test_readiness_fails_with_503_when_database_is_unreachable(tmp_path: Path) -> None:
    app = create_app(Settings(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1"))
    response = app.test_client().get("/readyz")
    app.extensions["coordination"].repo.engine.dispose()
    assert response.status_code == 503
    assert response.get_json()["issue"][0]["code"] == "transient"
    assert "nobody" not in response.get_data(as_text=True)


def test_public_base_url_is_used_in_links(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url, public_base_url="https://fhir.example.org/fhir"))
    response = authed(app.test_client()).post(
        "/fhir/Patient", data=b'{"resourceType":"Patient"}', headers={"Content-Type": "application/fhir+json"}
    )
    app.extensions["coordination"].repo.engine.dispose()
    assert response.headers["Location"].startswith("https://fhir.example.org/fhir/Patient/")


def test_request_id_is_echoed_and_security_headers_set(client: FlaskClient) -> None:
    response = client.get("/fhir/metadata", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    generated = client.get("/fhir/metadata", headers={"X-Request-ID": "x" * 500}).headers["X-Request-ID"]
    assert generated != "x" * 500 and len(generated) == 36


def test_delivery_pool_and_restart_policy_settings() -> None:
    settings = Settings.from_env(
        {
            "COORDINATION_SUBSCRIPTION_CONCURRENCY": "16",
            "COORDINATION_SUBSCRIPTION_PER_ORIGIN": "3",
            "COORDINATION_SUBSCRIPTION_MAX_COUNT_CAP": "20",
            "COORDINATION_SERVE_CRASH_LOOP_EXITS": "7",
            "COORDINATION_SERVE_CRASH_LOOP_WINDOW": "120",
            "COORDINATION_SERVE_BACKOFF_FIRST": "1",
            "COORDINATION_SERVE_BACKOFF_MAX": "10",
        }
    )
    assert (settings.subscriptions.concurrency, settings.subscriptions.per_origin) == (16, 3)
    assert settings.subscriptions.max_count_cap == 20
    s = settings.supervision
    assert (s.crash_loop_exits, s.crash_loop_window, s.backoff_first, s.backoff_max) == (7, 120.0, 1.0, 10.0)


def test_links_behind_trusted_proxies_keep_the_forwarded_prefix(database_url: str) -> None:
    """COORDINATION_TRUSTED_PROXIES: the base a client reached through a proxy (scheme, host and the
    path prefix it mounts us under, X-Forwarded-Prefix) is the one links carry."""
    app = create_app(Settings(database_url=database_url, trusted_proxies=1))
    forwarded = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "cpts.example",
        "X-Forwarded-Prefix": "/coordination",
    }
    response = app.test_client().get("/fhir/metadata", headers=forwarded)
    bare = app.test_client().get("/fhir/metadata")
    app.extensions["coordination"].repo.engine.dispose()
    assert response.get_json()["implementation"]["url"] == "https://cpts.example/coordination/fhir"
    assert bare.get_json()["implementation"]["url"] == "http://localhost/fhir"
