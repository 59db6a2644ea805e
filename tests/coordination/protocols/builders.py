"""Resources the protocol tests start from (a patient, their cercle de soins, a finished stay)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import func, select

from coordination_api.coordination.protocol_library import load_definitions
from coordination_api.storage.schema import resource
from tests import factories
from tests.conftest import Fhir

ROLE = "https://coordination.example.org/fhir/CodeSystem/cercle-de-soins-role"
CARE_TEAM_PROFILE = "https://coordination.example.org/fhir/StructureDefinition/cercle-de-soins-careteam"
BASE = "https://coordination.cpts.fr/fhir"
ELDERLY = f"{BASE}/PlanDefinition/retour-domicile-personne-agee"
DISCHARGE_END = "2026-11-20T11:30:00+01:00"
PHYSIOTHERAPY = {"system": "http://snomed.info/sct", "code": "91251008"}


def load_library(app: Flask) -> None:
    with app.app_context():
        load_definitions(app.extensions["coordination"])


def count_resources(app: Flask) -> int:
    with app.extensions["coordination"].repo.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(resource)).scalar_one())


def new_patient(fhir: Fhir, birth_date: str = "1946-03-02", **extra: Any) -> str:
    body = factories.patient(None, "Durand", "Jeanne", birthDate=birth_date, **extra)
    return f"Patient/{fhir.create(body)['id']}"


def practitioner(fhir: Fhir, family: str) -> str:
    return f"Practitioner/{fhir.create(factories.practitioner(family))['id']}"


def care_team(fhir: Fhir, patient: str, members: dict[str, str], status: str = "active") -> str:
    body = {
        "resourceType": "CareTeam",
        "meta": {"profile": [CARE_TEAM_PROFILE]},
        "status": status,
        "subject": {"reference": patient},
        "participant": [
            {"role": [{"coding": [{"system": ROLE, "code": code}]}], "member": {"reference": member}}
            for code, member in members.items()
        ],
    }
    return f"CareTeam/{fhir.create(body)['id']}"


def circle(fhir: Fhir, patient: str) -> dict[str, str]:
    """Médecin traitant, IDEL and pharmacien in the patient's care team (no kinésithérapeute)."""
    members = {
        "medecin-traitant": practitioner(fhir, "Martin"),
        "infirmier-habituel": practitioner(fhir, "Bernard"),
        "pharmacien-habituel": practitioner(fhir, "Petit"),
    }
    care_team(fhir, patient, members)
    return members


def finished_encounter(fhir: Fhir, patient: str, end: str = DISCHARGE_END, **extra: Any) -> str:
    body: dict[str, Any] = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": patient},
        "period": {"start": "2026-11-10T09:00:00+01:00", "end": end},
        "hospitalization": {
            "dischargeDisposition": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/discharge-disposition", "code": "home"}
                ]
            }
        },
    }
    body.update(extra)
    return f"Encounter/{fhir.create(body)['id']}"


def physiotherapy_prescription(fhir: Fhir, patient: str) -> None:
    fhir.create(
        {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "code": {"coding": [PHYSIOTHERAPY]},
            "subject": {"reference": patient},
        }
    )


def parameters(**values: str) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": name, "valueString": value} for name, value in values.items()],
    }
