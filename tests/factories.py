"""Builders of the FHIR resources tests start from, shared by every test package.

Dict builders return a resource (or a Bundle entry) to send; ``create_*`` helpers POST one through the real
API with the given client and return its id.
"""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from tests.conftest import Fhir

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


# -- resources ------------------------------------------------------------------------------------


def patient(
    pid: str | None = None, family: str = "Dupont", given: str = "Jean", **elements: Any
) -> dict[str, Any]:
    """A Patient with a name; ``pid`` sets its id (for PUT-as-create)."""
    body: dict[str, Any] = {"resourceType": "Patient"}
    if pid is not None:
        body["id"] = pid
    body["name"] = [{"family": family, "given": [given]}]
    body.update(elements)
    return body


def encounter(
    eid: str | None = None,
    subject: str | dict[str, Any] | None = None,
    status: str = "finished",
    **elements: Any,
) -> dict[str, Any]:
    """An inpatient Encounter (class IMP); ``subject`` is a reference string or a Reference."""
    body: dict[str, Any] = {"resourceType": "Encounter"}
    if eid is not None:
        body["id"] = eid
    body["status"] = status
    body["class"] = {"system": ACT_CODE, "code": "IMP"}
    if subject:
        body["subject"] = {"reference": subject} if isinstance(subject, str) else subject
    body.update(elements)
    return body


def practitioner(family: str, **elements: Any) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "name": [{"family": family}], **elements}


def care_team(subject: str, *members: str, **elements: Any) -> dict[str, Any]:
    """An active CareTeam of ``subject`` ("Patient/id") listing ``members`` (references)."""
    return {
        "resourceType": "CareTeam",
        "status": "active",
        "subject": {"reference": subject},
        "participant": [{"member": {"reference": member}} for member in members],
        **elements,
    }


# -- Bundle entries (R4 http.html#transaction) ------------------------------------------------------


def post_entry(
    resource: dict[str, Any], full_url: str | None = None, if_none_exist: str | None = None
) -> Any:
    request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    entry: dict[str, Any] = {"resource": resource, "request": request}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def put_entry(
    resource: dict[str, Any], url: str, full_url: str | None = None, if_match: str | None = None
) -> Any:
    request: dict[str, Any] = {"method": "PUT", "url": url}
    if if_match:
        request["ifMatch"] = if_match
    entry: dict[str, Any] = {"resource": resource, "request": request}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def delete_entry(url: str) -> Any:
    return {"request": {"method": "DELETE", "url": url}}


def get_entry(url: str) -> Any:
    return {"request": {"method": "GET", "url": url}}


def send_bundle(fhir: Fhir, entries: list[Any], kind: str = "transaction", **headers: str) -> Any:
    """POST a transaction or batch Bundle of ``entries``; the raw response."""
    return fhir.request(
        "POST", "/fhir", {"resourceType": "Bundle", "type": kind, "entry": entries}, **headers
    )


def bundle_ok(fhir: Fhir, entries: list[Any], kind: str = "transaction", **headers: str) -> dict[str, Any]:
    """POST a Bundle that must succeed; its response Bundle, one entry per request."""
    response = send_bundle(fhir, entries, kind, **headers)
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    assert body["resourceType"] == "Bundle"
    assert body["type"] == f"{kind}-response"
    assert len(body["entry"]) == len(entries)
    return body


def put_with_id(fhir: Fhir, resource: dict[str, Any]) -> dict[str, Any]:
    """Create (update-as-create) a resource under the id it carries, so tests can name their data."""
    response = fhir.request("PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
    assert response.status_code in (200, 201), response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


# -- created through the API with a test client ---------------------------------------------------


def create_via(client: FlaskClient, resource: dict[str, Any]) -> str:
    response = client.post(
        f"/fhir/{resource['resourceType']}", json=resource, headers={"Content-Type": "application/fhir+json"}
    )
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["id"])


def create_patient(client: FlaskClient, family: str) -> str:
    return create_via(client, {"resourceType": "Patient", "name": [{"family": family}]})


def create_observation(client: FlaskClient, patient_id: str) -> str:
    return create_via(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "valueQuantity": {
                "value": 72,
                "unit": "/min",
                "system": "http://unitsofmeasure.org",
                "code": "/min",
            },
        },
    )


def create_care_team(client: FlaskClient, patient_id: str, member: str) -> str:
    return create_via(client, care_team(f"Patient/{patient_id}", member))


PRCP = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]}


def consent(patient_ref: str, provision: dict[str, Any]) -> dict[str, Any]:
    """A patient-privacy Consent (OPTIN policy) of ``patient_ref`` with ``provision``."""
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": patient_ref},
        "policyRule": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]
        },
        "provision": provision,
    }


def create_consent_deny(client: FlaskClient, patient_id: str, actor: str) -> str:
    deny = {"type": "deny", "actor": [{"role": PRCP, "reference": {"reference": actor}}]}
    return create_via(client, consent(f"Patient/{patient_id}", deny))
