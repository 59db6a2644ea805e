"""Review 20 (attacker's review of 37e4f0d..d3ee1fb): failing proof tests of the findings."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Fhir

C80 = "http://hl7.org/fhir/ValueSet/c80-doc-typecodes"  # 6,401 codes once expanded


def test_token_in_repeated_large_value_set_is_not_a_5xx(fhir: Fhir) -> None:
    """Each ``:in`` value set becomes one bound parameter per code: a handful of repeats of a large
    shipped value set passes the database's bind-parameter limit (SQLite 32,766, PostgreSQL 65,535)."""
    value = ",".join([C80] * 12)
    response = fhir.request("GET", f"/fhir/DocumentReference?type:in={value}")
    assert response.status_code < 500, response.get_data(as_text=True)[:500]


# -- narrative XSS outside DomainResource.text ----------------------------------------------------------

XSS_DIV = (
    '<div xmlns="http://www.w3.org/1999/xhtml"><a href="javascript:alert(document.cookie)">lettre</a>'
    "<script>alert(1)</script></div>"
)


def _letter(patient_id: str, div: str) -> dict[str, Any]:
    return {
        "resourceType": "Composition",
        "status": "final",
        "type": {"text": "Lettre de liaison"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": "2024-01-01",
        "author": [{"display": "Dr Martin"}],
        "title": "Lettre de liaison",
        "section": [
            {"title": "Synthese", "text": {"status": "generated", "div": div}},
            {"title": "Nested", "section": [{"title": "n", "text": {"status": "generated", "div": div}}]},
        ],
    }


def test_composition_section_narrative_is_checked_like_resource_text(fhir: Fhir) -> None:
    """Composition.section.text is a Narrative (R4 composition.html), rendered by document viewers: the
    txt-1 checks (script elements, javascript: URLs) apply to it as to Resource.text. Only text.div of a
    node carrying resourceType is checked (fhir/resources.narrative_issues), and base_rules maps txt-1
    to _no_issues, so a stored XSS in a discharge letter's section passes."""
    patient = fhir.create({"resourceType": "Patient", "name": [{"family": "Martin"}]})
    assert (
        fhir.request(
            "POST",
            "/fhir/Patient",
            {"resourceType": "Patient", "text": {"status": "generated", "div": XSS_DIV}},
        ).status_code
        == 422
    )  # the resource's own text: refused
    response = fhir.request("POST", "/fhir/Composition", _letter(patient["id"], XSS_DIV))
    assert response.status_code == 422, "Composition.section.text.div with <script> and javascript: stored"
    validate = fhir.request("POST", "/fhir/Composition/$validate", _letter(patient["id"], XSS_DIV))
    body = validate.get_json()
    assert any("txt-1" in (i.get("diagnostics") or "") for i in body.get("issue", [])), (
        "$validate does not report txt-1 on Composition.section.text.div"
    )


# -- a Consent actor resolved by identifier: an oracle on any identifier, before the care-team rule ------

IPP_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1.999"  # a hospital's IPP (patient id) system


def _consent_by_identifier(patient_id: str, actor_type: str, system: str, value: str) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "policyRule": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]
        },
        "provision": {
            "type": "deny",
            "actor": [
                {
                    "role": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "PRCP",
                            }
                        ]
                    },
                    "reference": {"type": actor_type, "identifier": {"system": system, "value": value}},
                }
            ],
        },
    }


def test_a_consent_actor_identifier_is_no_oracle_on_patients_out_of_reach(
    app: Flask, client: FlaskClient
) -> None:
    """consent_actors.resolve runs as a repository ``prepare`` hook, before the care-team rule, and takes
    any ``reference.type`` (Patient, Observation...): a practitioner outside Q's care team learns
    whether a patient with a given IPP (or any resource with a given identifier) is on the server from
    the answer (403: found, in Q's compartment; 422 "names no known professional": not found)."""
    from tests.auth.test_read_paths_reach import World

    world = World(app, client)
    known_ipp = "IPP-000042"
    response = client.put(
        f"/fhir/Patient/{world.q}",
        json={
            "resourceType": "Patient",
            "id": world.q,
            "name": [{"family": "Secret"}],
            "identifier": [{"system": IPP_SYSTEM, "value": known_ipp}],
        },
        headers={"Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 200, response.get_json()
    # Alice writes into her own patient's record (P), naming a "Patient" actor by an IPP.
    found = world.send(
        "POST", "/fhir/Consent", _consent_by_identifier(world.p, "Patient", IPP_SYSTEM, known_ipp)
    )
    unknown = world.send(
        "POST", "/fhir/Consent", _consent_by_identifier(world.p, "Patient", IPP_SYSTEM, "IPP-000043")
    )
    assert (found.status_code, found.get_json()["issue"][0]["diagnostics"]) == (
        unknown.status_code,
        unknown.get_json()["issue"][0]["diagnostics"].replace("IPP-000043", known_ipp),
    ), (found.get_json(), unknown.get_json())
