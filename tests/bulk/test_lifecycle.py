"""A job's life: download streaming, DELETE, expiry, failure, and workers that race or crash."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from coordination_api.bulk import export, jobs
from coordination_api.bulk.files import Progress
from coordination_api.storage.schema import bulk_export_job as job
from coordination_api.subscriptions.worker import worker_loop
from tests.bulk.data import record
from tests.bulk.support import bad, drain, exported, local, manifest, started
from tests.conftest import Fhir


def _row(app: Flask, status: str) -> object:
    job_id = status.rsplit("/", 1)[1]
    with app.extensions["coordination"].repo.engine.connect() as conn:
        return conn.execute(select(job).where(job.c.job_id == job_id)).first()


def _set(app: Flask, status: str, **values: object) -> None:
    job_id = status.rsplit("/", 1)[1]
    with app.extensions["coordination"].repo.engine.begin() as conn:
        conn.execute(update(job).where(job.c.job_id == job_id).values(**values))


def test_files_are_streamed_ndjson(client: FlaskClient, fhir: Fhir, export_app: Flask) -> None:
    record(fhir, "p1")
    body = manifest(client, export_app, started(client, "/fhir/$export?_type=Observation"))
    [item] = body["output"]
    response = client.get(local(item["url"]))
    assert response.is_streamed
    data = b"".join(response.response)  # type: ignore[arg-type]
    assert int(response.headers["Content-Length"]) == len(data)
    assert data.endswith(b"\n") and data.count(b"\n") == item["count"] == 2
    assert all(orjson.loads(line)["resourceType"] == "Observation" for line in data.splitlines())
    # Any Accept that admits NDJSON; not JSON.
    assert client.get(local(item["url"]), headers={"Accept": "*/*"}).status_code == 200
    assert "export files are" in bad(
        client.get(local(item["url"]), headers={"Accept": "application/json"}), 406
    )
    assert "is not known" in bad(client.get(local(item["url"]) + "x"), 404)


def test_delete_of_a_finished_job_removes_it_and_its_files(
    client: FlaskClient, fhir: Fhir, export_app: Flask, export_dir: Path
) -> None:
    record(fhir, "p1")
    status = started(client, "/fhir/$export")
    body = manifest(client, export_app, status)
    directory = export_dir / status.rsplit("/", 1)[1]
    assert directory.is_dir()
    response = client.delete(status)
    assert response.status_code == 202 and response.get_json()["resourceType"] == "OperationOutcome"
    assert not directory.exists()
    assert "is not known" in bad(client.get(status), 404)
    assert "is not known" in bad(client.get(local(body["output"][0]["url"])), 404)
    assert "is not known" in bad(client.delete(status), 404)


def test_delete_while_a_worker_writes_stops_it_and_removes_the_files(
    client: FlaskClient, fhir: Fhir, export_app: Flask, export_dir: Path
) -> None:
    record(fhir, "p1")
    status = started(client, "/fhir/$export")
    svc = export_app.extensions["coordination"]
    claim = jobs.claim(svc.repo.engine, svc.settings.export)  # a worker holds it
    assert claim is not None
    assert client.delete(status).status_code == 202
    assert "is not known" in bad(client.get(status), 404)
    export.Producer(svc, svc.settings.export, claim).run()  # it finds the job cancelled
    assert not (export_dir / claim.job_id).exists()
    assert _row(export_app, status) is None


def test_a_queued_job_deleted_is_never_produced(client: FlaskClient, fhir: Fhir, export_app: Flask) -> None:
    record(fhir, "p1")
    status = started(client, "/fhir/$export")
    assert client.delete(status).status_code == 202
    assert _row(export_app, status) is None
    assert drain(export_app) == 0


def test_expired_jobs_answer_404_and_lose_their_files(
    client: FlaskClient, fhir: Fhir, export_app: Flask, export_dir: Path
) -> None:
    record(fhir, "p1")
    status = started(client, "/fhir/$export")
    body = manifest(client, export_app, status)
    row = _row(export_app, status)
    assert row.expires_us - row.finished_us == 3600 * 1_000_000  # type: ignore[attr-defined]
    _set(export_app, status, expires_us=1)  # the TTL has passed
    assert "expired" in bad(client.get(status), 404)
    assert bad(client.get(local(body["output"][0]["url"])), 404)
    assert export.run_due(export_app) == 1  # the worker removes them
    assert not (export_dir / status.rsplit("/", 1)[1]).exists()
    assert _row(export_app, status) is None


def test_a_failed_job_answers_an_operation_outcome(
    client: FlaskClient, fhir: Fhir, export_app: Flask
) -> None:
    record(fhir, "p1")
    status = started(client, "/fhir/$export")
    _set(export_app, status, restarts=jobs.MAX_RESTARTS, lease_until=1)  # its worker died again
    drain(export_app)
    assert "interrupted" in bad(client.get(status), 500)


def test_a_job_waits_for_the_writes_in_flight_at_its_kick_off(
    client: FlaskClient, fhir: Fhir, export_app: Flask
) -> None:
    record(fhir, "p1")
    status = started(client, "/fhir/$export")
    row = _row(export_app, status)
    _set(export_app, status, transaction_us=row.transaction_us + 3_600_000_000)  # type: ignore[attr-defined]
    assert export.run_due(export_app) == 0  # not before transactionTime + settle
    assert client.get(status).headers["X-Progress"] == "queued"


def test_a_worker_that_cannot_see_the_files_fails_the_job_clearly(
    client: FlaskClient, fhir: Fhir, export_app: Flask, sliced_app: Flask, export_dir: Path
) -> None:
    record(fhir, "p1")
    status = started(client, "/fhir/$export")
    assert export.run_due(sliced_app) == 1  # a first page, checkpointed
    for path in (export_dir / status.rsplit("/", 1)[1]).iterdir():  # as if on another volume
        path.unlink()
    drain(export_app)
    assert "must share COORDINATION_EXPORT_DIR" in bad(client.get(status), 500)


def test_one_worker_holds_a_job_at_a_time(client: FlaskClient, fhir: Fhir, export_app: Flask) -> None:
    record(fhir, "p1")
    started(client, "/fhir/$export")
    svc = export_app.extensions["coordination"]
    first = jobs.claim(svc.repo.engine, svc.settings.export)
    assert first is not None
    assert jobs.claim(svc.repo.engine, svc.settings.export) is None
    assert export.run_due(export_app) == 0  # another worker finds nothing to do


def test_two_workers_racing_produce_each_resource_once(
    client: FlaskClient, fhir: Fhir, export_app: Flask, sliced_app: Flask
) -> None:
    written = [r for pid in ("p1", "p2", "p3", "p4") for r in record(fhir, pid)]
    status = started(client, "/fhir/$export")
    errors: list[Exception] = []

    def work(app: Flask) -> None:  # two apps: two engines, as two worker processes
        try:
            for _ in range(500):
                if _row(app, status).status != "pending":  # type: ignore[attr-defined]
                    return
                export.run_due(app)
        except Exception as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(app,)) for app in (sliced_app, sliced_app, export_app)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    body = manifest(client, export_app, status)
    assert set(exported(client, body)) == set(written)  # exported() refuses duplicates


def test_a_crashed_workers_job_is_taken_over_after_its_lease(
    client: FlaskClient, fhir: Fhir, export_app: Flask, sliced_app: Flask, export_dir: Path
) -> None:
    written = record(fhir, "p1") + record(fhir, "p2")
    status = started(client, "/fhir/$export")
    assert export.run_due(sliced_app) == 1  # a first page, checkpointed
    svc = sliced_app.extensions["coordination"]
    claim = jobs.claim(svc.repo.engine, svc.settings.export)
    assert claim is not None and not claim.take_over
    # That worker then hangs: it appended a line past its checkpoint, and its lease runs out.
    progress = Progress.from_json(_row(export_app, status).progress)  # type: ignore[attr-defined]
    stray = next(f for f in progress.files if f.open)
    with open(export_dir / claim.job_id / stray.name, "ab") as handle:
        handle.write(b'{"resourceType":"Patient","id":"stray"}\n')
    _set(export_app, status, lease_until=1)
    body = manifest(client, export_app, status)  # another worker takes over and finishes
    assert _row(export_app, status).restarts == 1  # type: ignore[attr-defined]
    resources = exported(client, body)
    assert set(resources) == set(written)  # the stray line is past the committed length: never served
    # The hung worker wakes up: its lease is gone, it changes nothing.
    assert not jobs.checkpoint(svc.repo.engine, claim, "{}", None)
    assert client.get(status).status_code == 200


def test_the_delivery_worker_produces_exports(client: FlaskClient, fhir: Fhir, export_app: Flask) -> None:

    written = record(fhir, "p1")
    status = started(client, "/fhir/$export")
    worker_loop(export_app, threading.Event(), once=True)
    response = client.get(status)
    assert response.status_code == 200
    assert set(exported(client, orjson.loads(response.data))) == set(written)
