"""Fixtures of the $export suite: apps whose export directory is a temporary one (never instance/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from coordination_api.app import create_app
from coordination_api.config import ExportSettings, Settings
from coordination_api.storage.migrate import upgrade
from tests.conftest import _truncate, authed, close_app


def _app(database_url: str, directory: Path, **export: float | int | str) -> Flask:
    settings = ExportSettings(
        directory=str(directory), resources_per_file=5, chunk_size=4, max_jobs_per_client=2, settle=0.0
    )
    for key, value in export.items():
        settings = ExportSettings(**{**settings.__dict__, key: value})
    app = create_app(Settings(database_url=database_url, audit_reads="sync", export=settings))
    app.config["TESTING"] = True
    upgrade(app.extensions["coordination"].repo.engine)
    return app


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="session")
def export_app(database_url: str, export_dir: Path) -> Iterator[Flask]:
    """Small files (5 resources) and pages (4 rows); a worker pass finishes a test-sized export."""
    app = _app(database_url, export_dir, slice=60.0)
    yield app
    close_app(app)


@pytest.fixture(scope="session")
def sliced_app(database_url: str, export_dir: Path) -> Iterator[Flask]:
    """The same database and directory, a worker that stops after each page (as after each slice)."""
    app = _app(database_url, export_dir, slice=0.0)
    yield app
    close_app(app)


@pytest.fixture
def client(export_app: Flask) -> FlaskClient:
    _truncate(export_app)
    return authed(export_app.test_client())
