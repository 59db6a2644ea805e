"""A discharge starts the protocols it triggers, in the discharge's own transaction."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Fhir
from tests.coordination.protocols.builders import ELDERLY, circle, load_library
from tests.support.messages import IPP_SYSTEM, as_sender, discharge_message, patient

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _post(client: FlaskClient, message: dict[str, Any]) -> Any:
    response = as_sender(client).post("/fhir/$process-message", json=message, headers=FHIR_JSON)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["entry"][0]["resource"]["response"]["code"] == "ok"
    return response


def _known_patient(fhir: Fhir) -> str:
    """The 88-year-old of the test messages, known by the hospital's IPP, with a cercle de soins."""
    body = patient(status="PROV")
    body.pop("id")
    body.pop("extension")
    return f"Patient/{fhir.create(body)['id']}"


def _message(message_id: str) -> dict[str, Any]:
    return discharge_message(message_id=message_id, patient_resource=patient(status="PROV"), letter=False)


def test_discharge_of_an_elderly_patient_starts_the_return_home_protocol(
    app: Flask, client: FlaskClient, fhir: Fhir
) -> None:
    load_library(app)
    subject = _known_patient(fhir)
    members = circle(fhir, subject)
    _post(client, _message("sortie-1"))
    assert fhir.ids(f"Patient?identifier={IPP_SYSTEM}|IPP0001") == {subject.split("/")[1]}
    plans = fhir.search(f"CarePlan?subject={subject}")["entry"]
    assert [p["resource"]["instantiatesCanonical"] for p in plans] == [[ELDERLY]]
    plan = plans[0]["resource"]
    encounter = plan["encounter"]["reference"]
    assert plan["status"] == "active"
    tasks = [e["resource"] for e in fhir.search(f"Task?based-on=CarePlan/{plan['id']}")["entry"]]
    assert {t["owner"]["reference"] for t in tasks} == set(members.values())
    assert all(t["encounter"]["reference"] == encounter for t in tasks)
    idel = next(t for t in tasks if t["owner"]["reference"] == members["infirmier-habituel"])
    assert idel["restriction"]["period"]["end"] == "2026-11-22T11:30:00+01:00"


def test_replayed_or_resent_discharge_starts_nothing_again(
    app: Flask, client: FlaskClient, fhir: Fhir
) -> None:
    load_library(app)
    subject = _known_patient(fhir)
    circle(fhir, subject)
    message = _message("sortie-2")
    _post(client, message)
    _post(client, message)  # replay: same message id
    _post(client, _message("sortie-2-bis"))  # re-sent with a new id: same encounter
    assert len(fhir.search(f"CarePlan?subject={subject}")["entry"]) == 1
    assert len(fhir.search("Task")["entry"]) == 3


def test_a_broken_protocol_does_not_lose_the_discharge(
    app: Flask, client: FlaskClient, fhir: Fhir, caplog: pytest.LogCaptureFixture
) -> None:
    load_library(app)
    fhir.create(
        {
            "resourceType": "PlanDefinition",
            "url": "https://cpts.example/fhir/PlanDefinition/broken",
            "status": "active",
            "action": [
                {
                    "title": "Bad expression",
                    "trigger": [{"type": "named-event", "name": "discharge"}],
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
    subject = _known_patient(fhir)
    circle(fhir, subject)
    with caplog.at_level(logging.WARNING, "coordination_api.coordination.protocols"):
        _post(client, _message("sortie-3"))
    assert len(fhir.search("Encounter")["entry"]) == 1
    logged = [r.getMessage() for r in caplog.records if "not started" in r.getMessage()]
    assert len(logged) == 1 and subject.split("/")[1] not in logged[0] and "Lef" not in logged[0]
    plans = fhir.search(f"CarePlan?subject={subject}")["entry"]
    assert [p["resource"]["instantiatesCanonical"] for p in plans] == [[ELDERLY]]


def test_admission_starts_nothing(app: Flask, client: FlaskClient, fhir: Fhir) -> None:
    load_library(app)
    subject = _known_patient(fhir)
    circle(fhir, subject)
    admit = discharge_message(
        message_id="adm-1",
        code=("https://mos.esante.gouv.fr/NOS/TRE_R254-TypeEvenement/FHIR/TRE-R254-TypeEvenement", "ADM"),
        status="in-progress",
        patient_resource=patient(status="PROV"),
        letter=False,
    )
    _post(client, admit)
    assert fhir.search("CarePlan").get("entry", []) == []
