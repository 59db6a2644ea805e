"""PlanDefinition/$start: the plan stored as CarePlan, RequestGroup and requests, in one transaction."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import select

from coordination_api.storage.schema import subscription_outbox
from coordination_api.subscriptions.topics import TOPIC_BASE
from tests.conftest import Fhir, authed
from tests.coordination.protocols.builders import (
    ELDERLY,
    circle,
    count_resources,
    finished_encounter,
    load_library,
    new_patient,
    parameters,
)

PLAN = "retour-domicile-personne-agee"


def _start(fhir: Fhir, plan: str = PLAN, **values: str) -> Any:
    return fhir.request("POST", f"/fhir/PlanDefinition/{plan}/$start", parameters(**values))


def test_start_stores_an_active_careplan_its_requestgroup_and_tasks(app: Flask, fhir: Fhir) -> None:
    load_library(app)
    patient = new_patient(fhir)
    members = circle(fhir, patient)
    encounter = finished_encounter(fhir, patient)
    response = _start(fhir, subject=patient, encounter=encounter)
    assert response.status_code == 201, response.get_json()
    bundle = response.get_json()
    assert bundle["type"] == "transaction-response"
    assert all(e["response"]["status"] == "201 Created" for e in bundle["entry"])
    care_plan = bundle["entry"][0]["resource"]
    assert response.headers["Location"].split("/fhir/")[1].startswith(f"CarePlan/{care_plan['id']}/")
    stored = fhir.request("GET", f"/fhir/CarePlan/{care_plan['id']}").get_json()
    assert stored["status"] == "active" and stored["instantiatesCanonical"] == [ELDERLY]
    group_ref = stored["activity"][0]["reference"]["reference"]
    group = fhir.request("GET", f"/fhir/{group_ref}").get_json()
    assert group["resourceType"] == "RequestGroup"
    tasks = fhir.search(f"Task?based-on=CarePlan/{care_plan['id']}")["entry"]
    assert len(tasks) == 3
    task_refs = {f"Task/{t['resource']['id']}" for t in tasks}
    assert {a["resource"]["reference"] for a in group["action"][0]["action"]} == task_refs
    owners = {t["resource"]["owner"]["reference"] for t in tasks}
    assert owners == {members[r] for r in ("medecin-traitant", "infirmier-habituel", "pharmacien-habituel")}
    assert all(t["resource"]["status"] == "requested" for t in tasks)
    assert fhir.ids(f"Task?owner={members['infirmier-habituel']}")


def test_start_twice_for_the_same_encounter_finds_the_first(app: Flask, fhir: Fhir) -> None:
    load_library(app)
    patient = new_patient(fhir)
    circle(fhir, patient)
    encounter = finished_encounter(fhir, patient)
    first = _start(fhir, subject=patient, encounter=encounter)
    before = count_resources(app)
    again = _start(fhir, subject=patient, encounter=encounter)
    assert first.status_code == 201 and again.status_code == 200
    assert again.get_json()["entry"][0]["resource"]["id"] == first.get_json()["entry"][0]["resource"]["id"]
    assert count_resources(app) == before


def test_a_failure_midway_leaves_nothing(app: Flask, fhir: Fhir) -> None:
    load_library(app)
    patient = new_patient(fhir)
    good = fhir.search(f"PlanDefinition?url={ELDERLY}")["entry"][0]["resource"]["action"][0]["action"][0]
    definition = fhir.create(
        {
            "resourceType": "PlanDefinition",
            "url": "https://cpts.example/fhir/PlanDefinition/broken",
            "status": "active",
            "action": [
                good,
                {
                    "title": "Bad condition, evaluated after the CarePlan and the first Task are built",
                    "condition": [
                        {
                            "kind": "applicability",
                            "expression": {"language": "text/fhirpath", "expression": "%nosuchvariable"},
                        }
                    ],
                },
            ],
        }
    )
    before = count_resources(app)
    response = _start(fhir, definition["id"], subject=patient)
    assert response.status_code == 422
    assert count_resources(app) == before


def test_start_needs_create_scopes(app: Flask, fhir: Fhir) -> None:
    load_library(app)
    patient = new_patient(fhir)
    reader = Fhir(authed(app.test_client(), "system/*.rs"))
    assert reader.request("GET", f"/fhir/PlanDefinition/{PLAN}/$apply?subject={patient}").status_code == 200
    response = reader.request("POST", f"/fhir/PlanDefinition/{PLAN}/$start", parameters(subject=patient))
    assert response.status_code == 403


def test_tasks_with_an_owner_fire_the_task_assigned_topic(app: Flask, fhir: Fhir) -> None:
    load_library(app)
    subscription = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "tasks offered to the CPTS",
        "criteria": TOPIC_BASE + "task-assigned",
        "channel": {
            "type": "rest-hook",
            "endpoint": "http://127.0.0.1:9/hook",
            "payload": "application/fhir+json",
        },
    }
    fhir.create(subscription)
    patient = new_patient(fhir)
    circle(fhir, patient)
    assert _start(fhir, subject=patient).status_code == 201
    with app.extensions["coordination"].repo.engine.connect() as conn:
        focus = conn.execute(select(subscription_outbox.c.focus)).scalars().all()
    assert len([f for f in focus if f.startswith("Task/")]) == 3
