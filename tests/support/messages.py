"""Discharge messages for the intake tests (FHIR message Bundles)."""

from __future__ import annotations

import base64
import copy
import uuid
from typing import Any

from flask.testing import FlaskClient

from fhir_profiles.french_identifiers import (
    FINESS,
    INS_NIR,
    RELIABILITY_SYSTEM,
    RELIABILITY_URL,
    RPPS,
    nir_key,
)

DAVINCI = "http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event"
NOS_R254 = "https://mos.esante.gouv.fr/NOS/TRE_R254-TypeEvenement/FHIR/TRE-R254-TypeEvenement"
IPP_SYSTEM = "urn:oid:1.2.250.1.71.4.2.7.750100125"
VISIT_SYSTEM = "urn:oid:1.2.250.1.71.4.2.7.750100125.2"
SENDER = "mllp://hopital-nord.example/ADT"
HL7_SENDER = "SIH-PASTEL^CHU-NANTES"  # MSH-3^MSH-4 of tests.support.hl7v2.adt()
NDE_SENDER = "750100125"  # the FINESS of the NdE sending Organization (nde() below)
TEST_SENDERS = (SENDER, HL7_SENDER, NDE_SENDER)
EVENT_TYPE = "https://interop.esante.gouv.fr/ig/fhir/nde/StructureDefinition/event-type"


def as_sender(client: FlaskClient, *senders: str) -> FlaskClient:
    """Register the test messages' senders to the client whose token ``client`` carries, as an operator
    would with ``coordination clients create --sender`` (issue 16: a client sends only as its own)."""
    token = str(client.environ_base["HTTP_AUTHORIZATION"]).split()[1]
    store = client.application.extensions["auth"].store
    stored = store.access_token(token)
    assert stored is not None
    store.add_senders(stored.client_id, list(senders or TEST_SENDERS))
    return client


def ins(number13: str = "1850578006084") -> str:
    return f"{number13}{nir_key(number13):02d}"


def patient(status: str = "VALI", nir: str | None = None, ipp: str = "IPP0001") -> dict[str, Any]:
    identifiers: list[dict[str, Any]] = [{"system": IPP_SYSTEM, "value": ipp}]
    if nir is not None:
        identifiers.insert(0, {"system": INS_NIR, "value": nir})
    return {
        "resourceType": "Patient",
        "id": "p1",
        "extension": [
            {
                "url": RELIABILITY_URL,
                "extension": [
                    {"url": "identityStatus", "valueCoding": {"system": RELIABILITY_SYSTEM, "code": status}}
                ],
            }
        ],
        "identifier": identifiers,
        "name": [{"family": "Lefèvre", "given": ["Hélène"]}],
        "gender": "female",
        "birthDate": "1938-05-12",
    }


def discharge_message(
    *,
    message_id: str | None = None,
    code: tuple[str, str] = (DAVINCI, "notification-discharge"),
    visit: str = "V2026-001",
    status: str = "finished",
    patient_resource: dict[str, Any] | None = None,
    letter: bool = True,
) -> dict[str, Any]:
    encounter: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": "e1",
        "identifier": [{"system": VISIT_SYSTEM, "value": visit}],
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2026-11-10T09:00:00+01:00", "end": "2026-11-20T11:30:00+01:00"},
        "hospitalization": {
            "dischargeDisposition": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/discharge-disposition", "code": "home"}
                ]
            }
        },
        "serviceProvider": {"reference": "Organization/o1"},
        "participant": [{"individual": {"reference": "Practitioner/pr1"}}],
    }
    if status != "finished":
        encounter["period"].pop("end")
        encounter.pop("hospitalization")
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": "urn:uuid:" + str(uuid.uuid4()),
            "resource": {
                "resourceType": "MessageHeader",
                "id": message_id or str(uuid.uuid4()),
                "eventCoding": {"system": code[0], "code": code[1]},
                "source": {"name": "Hôpital Nord", "endpoint": SENDER},
                "focus": [{"reference": "Encounter/e1"}],
            },
        },
        {"fullUrl": "http://hopital-nord.example/fhir/Encounter/e1", "resource": encounter},
        {
            "fullUrl": "http://hopital-nord.example/fhir/Patient/p1",
            "resource": patient_resource or patient(nir=ins()),
        },
        {
            "fullUrl": "http://hopital-nord.example/fhir/Organization/o1",
            "resource": {
                "resourceType": "Organization",
                "id": "o1",
                "identifier": [{"system": FINESS, "value": "750100125"}],
                "name": "Hôpital Nord",
            },
        },
        {
            "fullUrl": "http://hopital-nord.example/fhir/Practitioner/pr1",
            "resource": {
                "resourceType": "Practitioner",
                "id": "pr1",
                "identifier": [{"system": RPPS, "value": "10003456789"}],
                "name": [{"family": "Martin", "given": ["Paul"]}],
            },
        },
    ]
    if letter:
        entries += [
            {
                "fullUrl": "http://hopital-nord.example/fhir/DocumentReference/d1",
                "resource": {
                    "resourceType": "DocumentReference",
                    "id": "d1",
                    "status": "current",
                    "type": {"coding": [{"system": "http://loinc.org", "code": "11490-0"}]},
                    "subject": {"reference": "Patient/p1"},
                    "content": [{"attachment": {"contentType": "application/pdf", "url": "Binary/b1"}}],
                },
            },
            {
                "fullUrl": "http://hopital-nord.example/fhir/Binary/b1",
                "resource": {
                    "resourceType": "Binary",
                    "id": "b1",
                    "contentType": "application/pdf",
                    "data": base64.b64encode(b"%PDF-1.4 lettre de liaison").decode(),
                },
            },
        ]
    return {
        "resourceType": "Bundle",
        "type": "message",
        "timestamp": "2026-11-20T11:35:00+01:00",
        "entry": copy.deepcopy(entries),
    }


def nde(code: str = "SOR", identifier: str | None = "nde-1", **patient_args: Any) -> dict[str, Any]:
    contained_patient = patient(**({"nir": ins()} | patient_args))
    contained_patient["id"] = "pat"
    resource: dict[str, Any] = {
        "resourceType": "CommunicationRequest",
        "extension": [{"url": EVENT_TYPE, "valueCoding": {"system": NOS_R254, "code": code}}],
        "contained": [
            contained_patient,
            {
                "resourceType": "Organization",
                "id": "org",
                "identifier": [{"system": FINESS, "value": "750100125"}],
                "name": "Hôpital Nord",
            },
        ],
        "status": "active",
        "subject": {"reference": "#pat"},
        "sender": {"reference": "#org"},
        "occurrenceDateTime": "2026-11-20T11:30:00+01:00",
        "payload": [{"contentString": "Sortie d'hospitalisation, retour à domicile"}],
    }
    if identifier:
        resource["identifier"] = [{"system": "urn:oid:1.2.250.1.71.4.2.7.750100125.9", "value": identifier}]
    return resource
