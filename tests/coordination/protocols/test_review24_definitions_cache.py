"""Review 24: the protocol definitions cache (protocols/reading.definitions) never serves a definition
another worker changed or deleted: two app instances on one database, each with its own cache."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from coordination_api.app import create_app
from coordination_api.config import Settings
from tests.conftest import Fhir, authed, close_app
from tests.coordination.protocols.builders import ELDERLY, circle, load_library, new_patient, parameters


@pytest.fixture
def other(database_url: str, fhir: Fhir) -> Iterator[Fhir]:
    """A second worker on the same database (its own process state: repository, caches)."""
    second = create_app(Settings(database_url=database_url, audit_reads="sync"))
    second.config["TESTING"] = True
    yield Fhir(authed(second.test_client()))
    close_app(second)


def _apply(fhir: Fhir, patient: str) -> Any:
    return fhir.request("POST", "/fhir/PlanDefinition/$apply", parameters(url=ELDERLY, subject=patient))


def _definitions(care_plan: dict[str, Any]) -> set[str]:
    return {r["instantiatesCanonical"] for r in care_plan["contained"] if r["resourceType"] == "Task"}


def test_an_activity_definition_deleted_by_another_worker_is_not_served(
    app: Flask, fhir: Fhir, other: Fhir
) -> None:
    load_library(app)
    patient = new_patient(fhir)
    circle(fhir, patient)
    first = _apply(fhir, patient)  # fills this worker's cache
    assert first.status_code == 200, first.get_json()
    canonical = sorted(_definitions(first.get_json()))[0]
    found = other.search(f"ActivityDefinition?url={canonical}")["entry"][0]["resource"]
    assert other.request("DELETE", f"/fhir/ActivityDefinition/{found['id']}").status_code in (200, 204)
    again = _apply(fhir, patient)
    assert again.status_code == 422, again.get_json()
    assert canonical in again.get_json()["issue"][0]["diagnostics"]


def test_a_plan_definition_changed_then_deleted_by_another_worker_is_not_served(
    app: Flask, fhir: Fhir, other: Fhir
) -> None:
    load_library(app)
    patient = new_patient(fhir)
    circle(fhir, patient)
    assert _apply(fhir, patient).status_code == 200
    plan = other.search(f"PlanDefinition?url={ELDERLY}")["entry"][0]["resource"]
    plan["title"] = "Changed by the other worker"
    plan["action"] = plan["action"][:1]
    assert other.request("PUT", f"/fhir/PlanDefinition/{plan['id']}", plan).status_code == 200
    changed = _apply(fhir, patient)
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["title"] == "Changed by the other worker"
    assert other.request("DELETE", f"/fhir/PlanDefinition/{plan['id']}").status_code in (200, 204)
    gone = _apply(fhir, patient)
    assert gone.status_code == 404, gone.get_json()
