"""The patient page's world for its HTTP and browser tests: tests/support/pages.py's small CPTS, its
patient discharged (the protocol started), a discharge letter stored as the intake stores one
(DocumentReference, then its Binary following it), and an objection to a pharmacist."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Fhir
from tests.factories import consent
from tests.support.pages import Cpts, build_cpts, post_discharge

LETTER = b"%PDF-1.4 lettre de liaison (test)"
PRCP = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]}


@dataclass
class PatientWorld:
    cpts: Cpts
    document: str
    binary: str

    @property
    def patient(self) -> str:
        return self.cpts.patient

    @property
    def pid(self) -> str:
        return self.cpts.patient.split("/", 1)[1]


def build_patient_world(app: Flask, client: FlaskClient, fhir: Fhir) -> PatientWorld:
    built = build_cpts(app, fhir)
    post_discharge(client, built)
    document = fhir.create(
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11490-0"}]},
            "subject": {"reference": built.patient},
            "date": "2026-11-20T11:30:00+01:00",
            "content": [
                {
                    "attachment": {
                        "contentType": "application/pdf",
                        "title": "Lettre de sortie",
                        "url": "Binary/x",
                    }
                }
            ],
        }
    )
    binary = fhir.create(
        {
            "resourceType": "Binary",
            "contentType": "application/pdf",
            "securityContext": {"reference": f"DocumentReference/{document['id']}"},
            "data": base64.b64encode(LETTER).decode(),
        }
    )
    document["content"][0]["attachment"]["url"] = f"Binary/{binary['id']}"
    assert fhir.request("PUT", f"/fhir/DocumentReference/{document['id']}", document).status_code == 200
    pharmacist = fhir.create(
        {"resourceType": "Practitioner", "name": [{"family": "Aubert", "given": ["Pierre"]}]}
    )
    deny = {
        "type": "deny",
        "actor": [{"role": PRCP, "reference": {"reference": f"Practitioner/{pharmacist['id']}"}}],
    }
    fhir.create(consent(built.patient, deny))
    return PatientWorld(built, str(document["id"]), str(binary["id"]))
