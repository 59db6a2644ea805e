"""Fixtures of the directory tests: a local ANS-like directory server, a client of it, and an app
configured to use it (same database as the session's app)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from connectors.annuaire import AnnuaireSante
from connectors.http import HttpSettings
from coordination_api.app import create_app
from coordination_api.config import AnnuaireSettings, Settings
from tests.conftest import Fhir, _truncate, authed, close_app
from tests.support.ans_server import API_KEY, DirectoryServer, cpts_dataset

# Short timeouts and no backoff: failure tests stay fast; two retries still show the retrying.
FAST = HttpSettings(connect_timeout=1.0, read_timeout=0.5, retries=2, backoff=0.0)


@pytest.fixture(scope="session")
def ans_server() -> Iterator[DirectoryServer]:
    server = DirectoryServer(cpts_dataset()).start()
    yield server
    server.stop()


@pytest.fixture
def ans(ans_server: DirectoryServer) -> Iterator[DirectoryServer]:
    ans_server.reset()
    yield ans_server
    ans_server.reset()


@pytest.fixture
def directory(ans: DirectoryServer) -> Iterator[AnnuaireSante]:
    client = AnnuaireSante(ans.base_url, API_KEY, FAST, page_size=2, cache_ttl=60.0, cache_size=100)
    yield client
    client.close()


def annuaire_settings(base_url: str, api_key: str = API_KEY) -> AnnuaireSettings:
    return AnnuaireSettings(
        base_url=base_url,
        api_key=api_key,
        connect_timeout=1.0,
        read_timeout=0.5,
        retries=1,
        backoff=0.0,
        cache_ttl=60.0,
        page_size=3,
    )


@pytest.fixture(scope="session")
def dir_app(app: Flask, database_url: str, ans_server: DirectoryServer) -> Iterator[Flask]:
    """The app with the directory configured (``app`` has migrated the database)."""
    application = create_app(
        Settings(database_url=database_url, annuaire=annuaire_settings(ans_server.base_url))
    )
    application.config["TESTING"] = True
    yield application
    close_app(application)


@pytest.fixture
def dir_client(dir_app: Flask, ans: DirectoryServer) -> FlaskClient:
    _truncate(dir_app)
    dir_app.extensions["directory"].cache.clear()
    return authed(dir_app.test_client())


@pytest.fixture
def dir_fhir(dir_client: FlaskClient) -> Fhir:
    return Fhir(dir_client)
