"""Round trip: a system export imported by `coordination import` into an empty database gives back
every resource unchanged (meta.versionId/lastUpdated aside)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, func, select, text

from coordination_api.app import create_app
from coordination_api.cli import main
from coordination_api.config import Settings
from coordination_api.storage.migrate import upgrade
from coordination_api.storage.schema import resource, resource_history
from tests.bulk.data import put, record
from tests.bulk.support import local, manifest, started
from tests.conftest import PG_URL, Fhir, close_app


@pytest.fixture
def empty_app(backend: str, tmp_path: Path) -> Iterator[Flask]:
    """An app over a fresh, migrated, empty database of the same kind."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in PG_URL else "?"
        url = f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    app = create_app(Settings(database_url=url, audit_reads="sync"))
    upgrade(app.extensions["coordination"].repo.engine)
    try:
        yield app
    finally:
        close_app(app)
        if backend == "postgresql":
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _stored(app: Flask) -> dict[str, dict[str, Any]]:
    with app.extensions["coordination"].repo.engine.connect() as conn:
        rows = conn.execute(
            select(resource.c.res_type, resource.c.res_id, resource.c.content).where(
                resource.c.deleted.is_(False)
            )
        )
        out = {}
        for rtype, rid, content in rows:
            body = orjson.loads(content)
            body["meta"].pop("versionId")
            body["meta"].pop("lastUpdated")
            if not body["meta"]:
                del body["meta"]
            out[f"{rtype}/{rid}"] = body
    return out


def test_an_export_imports_back_identical(
    client: FlaskClient, fhir: Fhir, export_app: Flask, empty_app: Flask, tmp_path: Path
) -> None:
    for pid in ("p1", "p2", "p3"):
        record(fhir, pid)
    put(fhir, {"resourceType": "Organization", "id": "cpts", "name": "CPTS du Val", "active": True})
    # A resource with several versions and one deleted: the export holds the current ones only.
    put(fhir, {**_stored(export_app)["Patient/p2"], "id": "p2", "gender": "other"})
    assert fhir.request("DELETE", "/fhir/Observation/obs-p3-2").status_code in (200, 204)
    body = manifest(client, export_app, started(client, "/fhir/$export"))
    files = []
    for number, item in enumerate(body["output"]):
        response = client.get(local(item["url"]))
        assert response.status_code == 200
        path = tmp_path / f"{number:03d}-{item['type']}.ndjson"  # as a Bulk Data client names them
        path.write_bytes(response.data)
        files.append(str(path))
    result = empty_app.test_cli_runner().invoke(main, args=["import", *files])
    assert result.exit_code == 0, result.output
    assert "failed: 0" in result.output
    source, copy = _stored(export_app), _stored(empty_app)
    assert "Observation/obs-p3-2" not in copy and copy["Patient/p2"]["gender"] == "other"
    assert len(copy) == 3 * 8 + 1 - 1  # three records, the Organization, less the deleted Observation
    assert copy == source


def _versions(app: Flask) -> int:
    with app.extensions["coordination"].repo.engine.connect() as conn:
        count: int = conn.execute(select(func.count()).select_from(resource_history)).scalar_one()
    return count


def test_an_export_imported_twice_writes_no_new_version(
    client: FlaskClient, fhir: Fhir, export_app: Flask, empty_app: Flask, tmp_path: Path
) -> None:
    """Issue 18: a re-import of the same NDJSON changes nothing (no-op updates), into the server the
    export came from as into a copy of it."""
    for pid in ("p1", "p2"):
        record(fhir, pid)
    put(fhir, {**_stored(export_app)["Patient/p2"], "id": "p2", "gender": "other"})
    body = manifest(client, export_app, started(client, "/fhir/$export"))
    files = []
    for number, item in enumerate(body["output"]):
        path = tmp_path / f"{number:03d}-{item['type']}.ndjson"
        path.write_bytes(client.get(local(item["url"])).data)
        files.append(str(path))
    count = len(_stored(export_app))
    # Back into the server it came from: every resource is already there as exported.
    before = _versions(export_app)
    result = export_app.test_cli_runner().invoke(main, args=["import", *files])
    assert result.exit_code == 0, result.output
    assert f"created: 0\nupdated: 0\nunchanged: {count}\nfailed: 0" in result.output
    assert _versions(export_app) == before
    # Into an empty server twice: created, then unchanged.
    first = empty_app.test_cli_runner().invoke(main, args=["import", *files])
    assert f"created: {count}\nupdated: 0\nunchanged: 0\nfailed: 0" in first.output
    versions = _versions(empty_app)
    assert versions == count
    second = empty_app.test_cli_runner().invoke(main, args=["import", *files])
    assert second.exit_code == 0, second.output
    assert f"created: 0\nupdated: 0\nunchanged: {count}\nfailed: 0" in second.output
    assert _versions(empty_app) == versions
    assert _stored(empty_app) == _stored(export_app)
