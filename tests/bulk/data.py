"""A small varied record: Patients, Encounters, CarePlans, Tasks, CareTeams, Observations, Practitioners,
with references between them."""

from __future__ import annotations

from typing import Any

from tests.conftest import Fhir
from tests.factories import patient
from tests.factories import put_with_id as put

LOINC = "http://loinc.org"


def observation(oid: str, subject: str, code: str = "8867-4", value: float = 72.5) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2026-01-02T10:00:00+01:00",
        "valueQuantity": {
            "value": value,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


def record(fhir: Fhir, pid: str) -> list[str]:
    """A patient's record; the Type/id of every resource written."""
    gp = f"gp-{pid}"
    resources: list[dict[str, Any]] = [
        {"resourceType": "Practitioner", "id": gp, "name": [{"family": "Durand", "given": ["Paul"]}]},
        patient(pid, "Martin", "Claire", gender="female", birthDate="1950-03-04"),
        {
            "resourceType": "Encounter",
            "id": f"enc-{pid}",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": f"Patient/{pid}"},
            "period": {"start": "2026-01-01T08:00:00Z", "end": "2026-01-05T12:00:00Z"},
            "participant": [{"individual": {"reference": f"Practitioner/{gp}"}}],
        },
        observation(f"obs-{pid}-1", f"Patient/{pid}"),
        observation(f"obs-{pid}-2", f"Patient/{pid}", code="29463-7", value=61.25),
        {
            "resourceType": "CareTeam",
            "id": f"team-{pid}",
            "status": "active",
            "subject": {"reference": f"Patient/{pid}"},
            "participant": [{"member": {"reference": f"Practitioner/{gp}"}}],
        },
        {
            "resourceType": "CarePlan",
            "id": f"plan-{pid}",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": f"Patient/{pid}"},
            "encounter": {"reference": f"Encounter/enc-{pid}"},
            "careTeam": [{"reference": f"CareTeam/team-{pid}"}],
            "title": "Retour à domicile — suivi infirmier",
        },
        {
            "resourceType": "Task",
            "id": f"task-{pid}",
            "status": "completed",
            "intent": "order",
            "for": {"reference": f"Patient/{pid}"},
            "basedOn": [{"reference": f"CarePlan/plan-{pid}"}],
            "owner": {"reference": f"Practitioner/{gp}"},
            "description": "Pansement J+2",
        },
    ]
    for resource in resources:
        put(fhir, resource)
    return [f"{r['resourceType']}/{r['id']}" for r in resources]
