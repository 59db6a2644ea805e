"""Against a live ``coordination serve`` process: real sockets, gunicorn, and a standard FHIR client."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fhirclient import client as fhir_client
from fhirclient.models.fhirdate import FHIRDate
from fhirclient.models.humanname import HumanName
from fhirclient.models.identifier import Identifier
from fhirclient.models.patient import Patient

from tests.support.net import free_port

BIN = Path(sys.executable).parent


@pytest.fixture
def live_server(app: object, database_url: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "COORDINATION_DATABASE_URL": database_url}
    process = subprocess.Popen(
        [str(BIN / "coordination"), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # Not yet: refused, a worker still booting (read timeout), or 503 until the delivery worker
            # has beaten (its stderr is a pipe read only on failure: poll gently, each request logs a line).
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            process.kill()
            pytest.fail(f"server did not start: {process.stderr.read() if process.stderr else b''!r}")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr:
            process.stderr.close()


def test_live_server_health_and_metadata(live_server: str) -> None:
    assert requests.get(f"{live_server}/healthz", timeout=5).json() == {"status": "ok"}
    metadata = requests.get(f"{live_server}/fhir/metadata", timeout=5).json()
    assert metadata["fhirVersion"] == "4.0.1"
    assert any(r["type"] == "Patient" for r in metadata["rest"][0]["resource"])


def _backend_token(live_server: str, database_url: str) -> str:
    """Register a client with the CLI, as an integrator would, and get a token from the live server."""
    created = subprocess.run(
        [
            str(BIN / "coordination"),
            "clients",
            "create",
            "--name",
            "live",
            "--scope",
            "system/*.cruds",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COORDINATION_DATABASE_URL": database_url},
        check=True,
    )
    credentials = json.loads(created.stdout)
    response = requests.post(
        f"{live_server}/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
        auth=(credentials["client_id"], credentials["client_secret"]),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def test_fhirclient_crud_and_search_against_live_server(live_server: str, database_url: str) -> None:
    token = _backend_token(live_server, database_url)
    smart = fhir_client.FHIRClient(settings={"app_id": "tests", "api_base": f"{live_server}/fhir/"})
    smart.server.session.headers["Authorization"] = f"Bearer {token}"
    marker = uuid.uuid4().hex[:10]
    patient = Patient()
    name = HumanName()
    name.family = f"Martin{marker}"
    name.given = ["Louise"]
    patient.name = [name]
    patient.birthDate = FHIRDate("1960-05-01")
    identifier = Identifier()
    identifier.system = "urn:oid:1.2.250.1.71.4.2.7"
    identifier.value = marker
    patient.identifier = [identifier]
    created = patient.create(smart.server)
    assert created is not None and created["resourceType"] == "Patient"
    pid = created["id"]

    read = Patient.read(pid, smart.server)
    assert read.name[0].family == f"Martin{marker}"
    assert read.birthDate.isostring == "1960-05-01"

    read.gender = "female"
    read.update(smart.server)
    assert Patient.read(pid, smart.server).meta.versionId == "2"

    found = Patient.where(struct={"family": f"martin{marker}", "birthdate": "1960"})
    assert [p.id for p in found.perform_resources_iter(smart.server)] == [pid]
    by_identifier = Patient.where(struct={"identifier": f"urn:oid:1.2.250.1.71.4.2.7|{marker}"})
    assert [p.id for p in by_identifier.perform_resources_iter(smart.server)] == [pid]

    read.delete(smart.server)
    gone = requests.get(
        f"{live_server}/fhir/Patient/{pid}", timeout=5, headers={"Authorization": f"Bearer {token}"}
    )
    assert gone.status_code == 410
    assert requests.get(f"{live_server}/fhir/Patient/{pid}", timeout=5).status_code == 401


def test_serve_refuses_non_loopback_host_when_security_is_disabled() -> None:
    result = subprocess.run(
        [str(BIN / "coordination"), "serve", "--host", "0.0.0.0", "--port", "1"],  # noqa: S104
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "COORDINATION_DATABASE_URL": "sqlite:///:memory:",
            "COORDINATION_SECURITY_DISABLED": "1",
        },
        check=False,
    )
    assert result.returncode != 0
    assert "loopback" in result.stderr
