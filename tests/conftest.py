"""Fixtures: the real app over a real database, SQLite and PostgreSQL (every test runs on both)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from auth.schema import auth_metadata
from coordination_api.app import create_app
from coordination_api.config import Settings
from coordination_api.errors import FhirError
from coordination_api.fhir.resources import validate_resource
from coordination_api.storage.migrate import upgrade
from coordination_api.storage.schema import metadata

PG_URL = os.environ.get("COORDINATION_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]
if os.environ.get("COORDINATION_TEST_BACKENDS"):
    BACKENDS = os.environ["COORDINATION_TEST_BACKENDS"].split(",")


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("db") / "test.db"
        yield f"sqlite:///{path}"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def app(database_url: str) -> Iterator[Flask]:
    application = create_app(Settings(database_url=database_url, audit_reads="sync"))
    application.config["TESTING"] = True
    engine = application.extensions["coordination"].repo.engine
    upgrade(engine)
    yield application
    engine.dispose()


@pytest.fixture
def backend(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


# Kept between tests: generating signing keys is slow and nothing depends on their absence.
_KEEP = {"signing_key", "server_secret"}


def _truncate(app: Flask) -> None:
    engine = app.extensions["coordination"].repo.engine
    with engine.begin() as conn:
        for table in [*reversed(metadata.sorted_tables), *reversed(auth_metadata.sorted_tables)]:
            if table.name not in _KEEP:
                conn.execute(table.delete())


def close_app(app: Flask) -> None:
    """Dispose of a test app's engine once its audit writer has committed what it queued."""
    app.extensions["audit_writer"].flush()
    app.extensions["coordination"].repo.engine.dispose()


def system_token(client: FlaskClient, scope: str = "system/*.cruds") -> str:
    """A real SMART Backend Services token from our token endpoint (client_secret_basic)."""
    store = client.application.extensions["auth"].store
    client_id, secret = store.create_client("tests", scope, "client_secret_basic", [], None, None)
    response = client.post(
        "/auth/token", data={"grant_type": "client_credentials", "scope": scope}, auth=(client_id, secret)
    )
    assert response.status_code == 200, response.get_json()
    token: str = response.get_json()["access_token"]
    return token


@pytest.fixture
def anonymous_client(app: Flask) -> FlaskClient:
    """A client without credentials."""
    _truncate(app)
    return app.test_client()


def authed(test_client: FlaskClient, scope: str = "system/*.cruds") -> FlaskClient:
    """The test client, carrying a backend-service token from now on."""
    test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {system_token(test_client, scope)}"
    return test_client


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A client authenticated as a backend service allowed everything (system/*.cruds)."""
    _truncate(app)
    return authed(app.test_client())


class Fhir:
    """A thin FHIR JSON helper over the Flask test client (real HTTP semantics, no mocks)."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def request(self, method: str, url: str, body: Any = None, **headers: str) -> Any:
        data = None
        if body is not None:
            data = body if isinstance(body, str | bytes) else orjson.dumps(body)
            headers.setdefault("Content-Type", "application/fhir+json")
        hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
        return self.client.open(url, method=method, data=data, headers=hdrs)

    def create(self, resource: dict[str, Any], **headers: str) -> dict[str, Any]:
        response = self.request("POST", f"/fhir/{resource['resourceType']}", resource, **headers)
        assert response.status_code in (200, 201), response.get_json()
        body: dict[str, Any] = response.get_json()
        return body

    def search(self, query: str) -> dict[str, Any]:
        response = self.request("GET", f"/fhir/{query}")
        assert response.status_code == 200, response.get_json()
        body: dict[str, Any] = response.get_json()
        return body

    def ids(self, query: str) -> set[str]:
        bundle = self.search(query)
        return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


@pytest.fixture
def fhir(client: FlaskClient) -> Fhir:
    return Fhir(client)


def stored_invalid(app: Flask) -> list[tuple[str, str, int, str]]:
    """Every stored version (current and history) that breaks the R4 base rules the API enforces on
    clients' writes: what the server writes itself (dispatch, protocols, intake) must meet them too,
    or a client that reads a resource and writes it back gets a 400 for the server's content."""

    engine = app.extensions["coordination"].repo.engine
    failures = []
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT res_type, res_id, version, content FROM resource_history WHERE content IS NOT NULL")
        ).all()
    for res_type, res_id, version, content in rows:
        try:
            validate_resource(orjson.loads(content), res_type, profiles=False)
        except FhirError as exc:
            failures.append(
                (res_type, res_id, version, exc.issues[0].diagnostics if exc.issues else str(exc))
            )
    return failures
