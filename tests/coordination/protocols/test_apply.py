"""PlanDefinition/$apply (R4 plandefinition-operation-apply): a CarePlan, nothing stored."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Fhir, system_token
from tests.coordination.protocols.builders import (
    ELDERLY,
    ROLE,
    circle,
    count_resources,
    finished_encounter,
    load_library,
    new_patient,
    parameters,
    physiotherapy_prescription,
)

PLAN = "retour-domicile-personne-agee"
UCUM = "http://unitsofmeasure.org"


def _apply(fhir: Fhir, **values: str) -> Any:
    return fhir.request("POST", f"/fhir/PlanDefinition/{PLAN}/$apply", parameters(**values))


def _contained(care_plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"#{r['id']}": r for r in care_plan["contained"]}


def _tasks_by_definition(care_plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        r["instantiatesCanonical"].rsplit("/", 1)[1]: r
        for r in care_plan["contained"]
        if r["resourceType"] == "Task"
    }


def test_apply_builds_tasks_relative_to_discharge_with_owners_from_care_team(app: Flask, fhir: Fhir) -> None:
    load_library(app)
    patient = new_patient(fhir)
    members = circle(fhir, patient)
    physiotherapy_prescription(fhir, patient)
    encounter = finished_encounter(fhir, patient)
    response = _apply(fhir, subject=patient, encounter=encounter)
    assert response.status_code == 200, response.get_json()
    care_plan = response.get_json()
    assert care_plan["resourceType"] == "CarePlan"
    assert care_plan["instantiatesCanonical"] == [ELDERLY]
    assert care_plan["subject"] == {"reference": patient}
    assert care_plan["status"] == "draft"
    contained = _contained(care_plan)
    group = contained[care_plan["activity"][0]["reference"]["reference"]]
    assert group["resourceType"] == "RequestGroup"
    refs = [a["resource"]["reference"] for a in group["action"][0]["action"]]
    assert all(ref in contained for ref in refs)
    tasks = _tasks_by_definition(care_plan)
    idel = tasks["visite-idel-retour-domicile"]
    assert idel["restriction"]["period"] == {
        "start": "2026-11-20T11:30:00+01:00",
        "end": "2026-11-22T11:30:00+01:00",
    }
    assert idel["owner"] == {"reference": members["infirmier-habituel"]}
    assert idel["for"] == {"reference": patient} and idel["encounter"] == {"reference": encounter}
    assert idel["basedOn"] == [{"reference": "#"}]
    doctor = tasks["consultation-medecin-traitant-sortie"]
    assert doctor["owner"] == {"reference": members["medecin-traitant"]}
    assert doctor["restriction"]["period"]["end"] == "2026-11-27T11:30:00+01:00"
    pharmacist = tasks["conciliation-medicamenteuse-sortie"]
    assert pharmacist["owner"] == {"reference": members["pharmacien-habituel"]}
    physio = tasks["seances-kinesitherapie-retour-domicile"]
    assert "owner" not in physio
    assert physio["performerType"][0]["coding"][0] == {
        "system": ROLE,
        "code": "masseur-kinesitherapeute",
        "display": "Masseur-kinésithérapeute",
    }


def test_inapplicable_actions_are_skipped(app: Flask, fhir: Fhir) -> None:
    load_library(app)
    patient = new_patient(fhir)
    circle(fhir, patient)
    care_plan = _apply(fhir, subject=patient).get_json()
    tasks = _tasks_by_definition(care_plan)
    assert "seances-kinesitherapie-retour-domicile" not in tasks  # no physiotherapy prescribed
    assert len(tasks) == 3
    younger = new_patient(fhir, birth_date="1980-01-01")
    care_plan = _apply(fhir, subject=younger).get_json()
    assert [r["resourceType"] for r in care_plan["contained"]] == ["RequestGroup"]
    assert "action" not in care_plan["contained"][0]


def test_apply_stores_nothing(app: Flask, fhir: Fhir) -> None:
    load_library(app)
    patient = new_patient(fhir)
    circle(fhir, patient)
    before = count_resources(app)
    assert _apply(fhir, subject=patient).status_code == 200
    assert count_resources(app) == before


def test_get_and_post_forms_give_the_same_plan(app: Flask, fhir: Fhir) -> None:
    load_library(app)
    patient = new_patient(fhir)
    circle(fhir, patient)
    by_get = fhir.request("GET", f"/fhir/PlanDefinition/{PLAN}/$apply?subject={patient}")
    by_post = _apply(fhir, subject=patient)
    assert by_get.status_code == by_post.status_code == 200
    assert _tasks_by_definition(by_get.get_json()).keys() == _tasks_by_definition(by_post.get_json()).keys()


def test_type_level_apply_takes_the_definition_or_its_url(app: Flask, fhir: Fhir) -> None:
    load_library(app)
    patient = new_patient(fhir)
    by_url = fhir.request("POST", "/fhir/PlanDefinition/$apply", parameters(url=ELDERLY, subject=patient))
    assert by_url.status_code == 200, by_url.get_json()
    assert by_url.get_json()["instantiatesCanonical"] == [ELDERLY]
    definition = fhir.search(f"PlanDefinition?url={ELDERLY}")["entry"][0]["resource"]
    body = parameters(subject=patient)
    body["parameter"].append({"name": "planDefinition", "resource": definition})
    inline = fhir.request("POST", "/fhir/PlanDefinition/$apply", body)
    assert inline.status_code == 200, inline.get_json()
    assert len(inline.get_json()["contained"]) == len(by_url.get_json()["contained"])


def test_unknown_subject_is_refused(app: Flask, fhir: Fhir) -> None:
    load_library(app)
    response = _apply(fhir, subject="Patient/nobody")
    assert 400 <= response.status_code < 500
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_unknown_definition_is_404(fhir: Fhir) -> None:
    patient = new_patient(fhir)
    response = fhir.request("GET", f"/fhir/PlanDefinition/unknown/$apply?subject={patient}")
    assert response.status_code == 404
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_missing_subject_is_400(app: Flask, fhir: Fhir) -> None:
    load_library(app)
    response = fhir.request("GET", f"/fhir/PlanDefinition/{PLAN}/$apply")
    assert response.status_code == 400


def test_a_failing_expression_is_422(fhir: Fhir) -> None:
    patient = new_patient(fhir)
    definition = fhir.create(
        {
            "resourceType": "PlanDefinition",
            "status": "active",
            "action": [
                {
                    "title": "Bad",
                    "condition": [
                        {
                            "kind": "applicability",
                            "expression": {"language": "text/fhirpath", "expression": "%nosuchvariable"},
                        }
                    ],
                }
            ],
        }
    )
    response = fhir.request("GET", f"/fhir/PlanDefinition/{definition['id']}/$apply?subject={patient}")
    assert response.status_code == 422
    assert "PlanDefinition.action[0].condition[0]" in response.get_json()["issue"][0]["diagnostics"]


def test_heart_failure_plan_makes_service_and_communication_requests(app: Flask, fhir: Fhir) -> None:
    load_library(app)
    patient = new_patient(fhir)
    members = circle(fhir, patient)
    reason = {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I50.1"}]}
    encounter = finished_encounter(fhir, patient, reasonCode=[reason])
    response = fhir.request(
        "GET",
        f"/fhir/PlanDefinition/sortie-insuffisance-cardiaque/$apply?subject={patient}&encounter={encounter}",
    )
    assert response.status_code == 200, response.get_json()
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in response.get_json()["contained"]:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    [message] = by_type["CommunicationRequest"]
    assert message["recipient"] == [{"reference": members["medecin-traitant"]}]
    assert message["occurrencePeriod"]["end"] == "2026-11-21T11:30:00+01:00"
    [referral] = by_type["ServiceRequest"]
    assert "performer" not in referral  # no specialist in the care team: an open referral
    assert referral["performerType"]["coding"][0]["code"] == "medecin-specialiste"
    assert referral["occurrencePeriod"]["end"] == "2027-01-19T11:30:00+01:00"
    assert len(by_type["Task"]) == 2


def test_unscheduled_care_is_an_open_request_then_a_report_after_it(app: Flask, fhir: Fhir) -> None:
    load_library(app)
    patient = new_patient(fhir, birth_date="1990-06-01")
    circle(fhir, patient)
    response = fhir.request("GET", f"/fhir/PlanDefinition/soins-non-programmes/$apply?subject={patient}")
    assert response.status_code == 200, response.get_json()
    contained = response.get_json()["contained"]
    [task] = [r for r in contained if r["resourceType"] == "Task"]
    assert "owner" not in task and task["priority"] == "urgent"
    assert task["performerType"][0]["coding"][0]["code"] == "SM54"
    [report] = [r for r in contained if r["resourceType"] == "CommunicationRequest"]
    assert report["occurrencePeriod"]["start"] == task["restriction"]["period"]["end"]


def test_capability_statement_declares_apply_and_start(fhir: Fhir) -> None:
    statement = fhir.request("GET", "/fhir/metadata").get_json()
    [plan] = [r for r in statement["rest"][0]["resource"] if r["type"] == "PlanDefinition"]
    assert {o["name"] for o in plan["operation"]} >= {"apply", "start"}


def test_dynamic_values_are_set_on_the_request(fhir: Fhir) -> None:
    patient = new_patient(fhir)
    definition = fhir.create(
        {
            "resourceType": "PlanDefinition",
            "status": "active",
            "action": [
                {
                    "title": "Appel de suivi",
                    "dynamicValue": [
                        {
                            "path": "description",
                            "expression": {
                                "language": "text/fhirpath",
                                "expression": "'Appeler ' + %patient.name.first().family",
                            },
                        },
                        {
                            "path": "priority",
                            "expression": {
                                "language": "text/fhirpath",
                                "expression": "iif(%age >= 75, 'urgent', 'routine')",
                            },
                        },
                    ],
                }
            ],
        }
    )
    response = fhir.request("GET", f"/fhir/PlanDefinition/{definition['id']}/$apply?subject={patient}")
    assert response.status_code == 200, response.get_json()
    [task] = [r for r in response.get_json()["contained"] if r["resourceType"] == "Task"]
    assert task["description"] == "Appeler Durand"
    assert task["priority"] == "urgent"


def _single_action(fhir: Fhir, action: dict[str, Any]) -> str:
    created: str = fhir.create({"resourceType": "PlanDefinition", "status": "active", "action": [action]})[
        "id"
    ]
    return created


def test_an_absurd_delay_is_422_not_a_crash(fhir: Fhir) -> None:
    patient = new_patient(fhir)
    for timing in (
        {"timingDuration": {"value": 99999999, "system": UCUM, "code": "a"}},
        {"timingRange": {"low": {"value": 1e12, "system": UCUM, "code": "d"}}},
        {"timingDuration": {"value": -2, "system": UCUM, "code": "d"}},
    ):
        definition = _single_action(fhir, {"title": "Visite", **timing})
        response = fhir.request("GET", f"/fhir/PlanDefinition/{definition}/$apply?subject={patient}")
        assert response.status_code == 422, response.get_json()


def test_a_dynamic_value_cannot_change_what_the_request_is(fhir: Fhir) -> None:
    patient = new_patient(fhir)
    for path in ("resourceType", "id", "meta.source"):
        action = {
            "title": "Visite",
            "dynamicValue": [
                {"path": path, "expression": {"language": "text/fhirpath", "expression": "'x'"}}
            ],
        }
        definition = _single_action(fhir, action)
        response = fhir.request("GET", f"/fhir/PlanDefinition/{definition}/$apply?subject={patient}")
        assert response.status_code == 422, response.get_json()


def test_apply_needs_read_scopes_on_what_the_protocol_reads(app: Flask, fhir: Fhir) -> None:
    patient = new_patient(fhir)
    definition = _single_action(fhir, {"title": "Visite"})
    narrow: FlaskClient = app.test_client()
    scope = "system/PlanDefinition.rs system/Patient.rs"
    narrow.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {system_token(narrow, scope)}"
    response = narrow.get(f"/fhir/PlanDefinition/{definition}/$apply?subject={patient}")
    assert response.status_code == 403, response.get_json()
