"""A realistic CPTS care pathway as FHIR resources with chosen ids (one set per patient)."""

from __future__ import annotations

from typing import Any

from tests.conftest import Fhir
from tests.support.search import put

ROLE = "https://mos.esante.gouv.fr/NOS/TRE_R85-RolePriseCharge/FHIR/TRE-R85-RolePriseCharge"
PROFESSION = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
BUSINESS = "https://coordination.example.org/fhir/CodeSystem/task-business-status"
NURSE = f"{PROFESSION}|60"
PHARMACIST = f"{PROFESSION}|21"


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


def concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, str] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def directory(fhir: Fhir) -> None:
    """The CPTS directory: a GP, a nurse, a pharmacist (with roles), the CPTS and a hospital."""
    for pid, family in (("gp", "Martin"), ("nurse", "Bernard"), ("pharma", "Petit"), ("other", "Leroy")):
        put(fhir, {"resourceType": "Practitioner", "id": pid, "name": [{"family": family}]})
    put(fhir, {"resourceType": "Organization", "id": "cpts", "name": "CPTS du Val"})
    put(fhir, {"resourceType": "Organization", "id": "chu", "name": "CHU"})
    put(fhir, {"resourceType": "Location", "id": "cabinet", "name": "Cabinet infirmier"})
    put(
        fhir,
        {
            "resourceType": "PractitionerRole",
            "id": "nurse-cpts",
            "active": True,
            "practitioner": ref("Practitioner/nurse"),
            "organization": ref("Organization/cpts"),
            "code": [concept(PROFESSION, "60", "Infirmier")],
        },
    )


def pathway(fhir: Fhir, p: str, *, gp: str = "Practitioner/gp") -> dict[str, str]:
    """A patient leaving hospital with a follow-up plan; ids are prefixed with ``p``."""
    put(
        fhir,
        {
            "resourceType": "Patient",
            "id": p,
            "name": [{"family": f"Durand-{p}", "given": ["Louise"]}],
            "generalPractitioner": [ref(gp)],
        },
    )
    put(
        fhir,
        {
            "resourceType": "RelatedPerson",
            "id": f"{p}-aidant",
            "patient": ref(f"Patient/{p}"),
            "relationship": [concept("http://terminology.hl7.org/CodeSystem/v3-RoleCode", "DAU")],
        },
    )
    put(
        fhir,
        {
            "resourceType": "CareTeam",
            "id": f"{p}-team",
            "status": "active",
            "subject": ref(f"Patient/{p}"),
            "period": {"start": "2026-01-01"},
            "participant": [
                {"role": [concept(ROLE, "MT", "Médecin traitant")], "member": ref(gp)},
                {"role": [concept(ROLE, "IDE")], "member": ref("PractitionerRole/nurse-cpts")},
                {"role": [concept(ROLE, "COORD")], "member": ref("Organization/cpts")},
                {"role": [concept(ROLE, "AIDANT")], "member": ref(f"RelatedPerson/{p}-aidant")},
            ],
        },
    )
    put(
        fhir,
        {
            "resourceType": "Encounter",
            "id": f"{p}-stay",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": ref(f"Patient/{p}"),
            "serviceProvider": ref("Organization/chu"),
            "period": {"start": "2026-03-01T10:00:00Z", "end": "2026-03-06T16:00:00Z"},
        },
    )
    put(
        fhir,
        {
            "resourceType": "Goal",
            "id": f"{p}-goal",
            "lifecycleStatus": "active",
            "description": {"text": "Retour à domicile sans réhospitalisation à 30 jours"},
            "subject": ref(f"Patient/{p}"),
            "startDate": "2026-03-06",
        },
    )
    put(
        fhir,
        {
            "resourceType": "ServiceRequest",
            "id": f"{p}-soins",
            "status": "active",
            "intent": "order",
            "code": {"text": "Soins infirmiers à domicile"},
            "subject": ref(f"Patient/{p}"),
            "requester": ref(gp),
            "performer": [ref("PractitionerRole/nurse-cpts")],
            "authoredOn": "2026-03-06",
        },
    )
    put(
        fhir,
        {
            "resourceType": "CommunicationRequest",
            "id": f"{p}-cr",
            "status": "active",
            "subject": ref(f"Patient/{p}"),
            "requester": ref(gp),
            "recipient": [ref("Practitioner/pharma")],
            "payload": [{"contentString": "Conciliation médicamenteuse de sortie"}],
            "authoredOn": "2026-03-06",
        },
    )
    task(
        fhir,
        f"{p}-t-visit",
        p,
        status="requested",
        owner="PractitionerRole/nurse-cpts",
        deadline="2026-03-09",
    )
    task(fhir, f"{p}-t-call", p, status="accepted", owner=gp, deadline="2026-03-08", business="planifie")
    task(fhir, f"{p}-t-open", p, status="requested", owner=None, performer=PHARMACIST, deadline="2026-03-10")
    task(fhir, f"{p}-t-done", p, status="completed", owner=gp, deadline="2026-03-07")
    put(
        fhir,
        {
            "resourceType": "CarePlan",
            "id": f"{p}-plan",
            "status": "active",
            "intent": "plan",
            "title": "Parcours sortie d'hospitalisation",
            "subject": ref(f"Patient/{p}"),
            "period": {"start": "2026-03-06"},
            "careTeam": [ref(f"CareTeam/{p}-team")],
            "goal": [ref(f"Goal/{p}-goal")],
            "activity": [
                {"reference": ref(f"Task/{p}-t-visit")},
                {"reference": ref(f"ServiceRequest/{p}-soins")},
                {"reference": ref(f"CommunicationRequest/{p}-cr")},
            ],
        },
    )
    put(
        fhir,
        {
            "resourceType": "Appointment",
            "id": f"{p}-rdv",
            "status": "booked",
            "start": "2026-03-12T09:00:00Z",
            "end": "2026-03-12T09:20:00Z",
            "participant": [
                {"actor": ref(f"Patient/{p}"), "status": "accepted"},
                {"actor": ref(gp), "status": "accepted"},
                {"actor": ref("Location/cabinet"), "status": "accepted"},
            ],
        },
    )
    return {"patient": p, "encounter": f"{p}-stay", "plan": f"{p}-plan"}


def task(
    fhir: Fhir,
    tid: str,
    p: str,
    *,
    status: str,
    owner: str | None,
    deadline: str,
    performer: str | None = None,
    business: str | None = None,
) -> None:
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "id": tid,
        "status": status,
        "intent": "order",
        "priority": "routine",
        "code": {"text": "Suivi post-hospitalisation"},
        "for": ref(f"Patient/{p}"),
        "focus": ref(f"Encounter/{p}-stay"),
        "authoredOn": "2026-03-06T17:00:00Z",
        "restriction": {"period": {"end": f"{deadline}T18:00:00Z"}},
    }
    if owner:
        resource["owner"] = ref(owner)
    if performer:
        system, code = performer.split("|")
        resource["performerType"] = [concept(system, code)]
    if business:
        resource["businessStatus"] = concept(BUSINESS, business)
    put(fhir, resource)
