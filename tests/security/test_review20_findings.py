"""Review 20 (attacker's review of 37e4f0d..d3ee1fb): failing proof tests of the findings."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg
from flask import Flask
from flask.testing import FlaskClient

from coordination_api.errors import Category, from_database_error
from coordination_api.search.compiler import MAX_SEARCH_VALUES
from tests.conftest import Fhir
from tests.factories import PRCP, consent
from tests.support.access import ReachWorld

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
    actor = {"type": actor_type, "identifier": {"system": system, "value": value}}
    return consent(f"Patient/{patient_id}", {"type": "deny", "actor": [{"role": PRCP, "reference": actor}]})


def test_a_consent_actor_identifier_is_no_oracle_on_patients_out_of_reach(
    app: Flask, client: FlaskClient
) -> None:
    """consent_actors.resolve runs as a repository ``prepare`` hook, before the care-team rule, and takes
    any ``reference.type`` (Patient, Observation...): a practitioner outside Q's care team learns
    whether a patient with a given IPP (or any resource with a given identifier) is on the server from
    the answer (403: found, in Q's compartment; 422 "names no known professional": not found)."""
    world = ReachWorld(app, client)
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


def test_a_consent_actor_by_identifier_of_a_non_directory_type_is_refused_as_its_literal_form(
    fhir: Fhir,
) -> None:
    """Only directory types (auth.policy.ACTOR_TYPES) are resolved by identifier; any other type is
    the 422 of a literal reference the rule cannot enforce, whether or not something carries it."""
    patient = fhir.create({"resourceType": "Patient", "name": [{"family": "Martin"}]})
    fhir.create({"resourceType": "Device", "identifier": [{"system": IPP_SYSTEM, "value": "D-1"}]})
    literal = _consent_by_identifier(patient["id"], "Device", IPP_SYSTEM, "D-1")
    literal["provision"]["actor"][0]["reference"] = {"reference": "Device/x"}
    expected = fhir.request("POST", "/fhir/Consent", literal)
    assert expected.status_code == 422
    for actor_type, value in (
        ("Device", "D-1"),
        ("Device", "D-2"),
        ("Patient", "D-1"),
        ("Observation", "D-1"),
    ):
        response = fhir.request(
            "POST", "/fhir/Consent", _consent_by_identifier(patient["id"], actor_type, IPP_SYSTEM, value)
        )
        assert response.status_code == 422, (actor_type, value)
        assert (
            response.get_json()["issue"][0]["diagnostics"] == expected.get_json()["issue"][0]["diagnostics"]
        )


# -- too many values in one search: a 400 naming the limit, never "database unavailable" -------------


def test_a_search_binding_too_many_values_is_a_400_naming_the_limit(fhir: Fhir) -> None:

    ids = ",".join(f"i{n}" for n in range(MAX_SEARCH_VALUES + 1))
    response = fhir.request("GET", f"/fhir/Patient?_id={ids}")
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert str(MAX_SEARCH_VALUES) in response.get_json()["issue"][0]["diagnostics"]
    # Split over several parameters and hops: counted together.
    half = ",".join(f"i{n}" for n in range(MAX_SEARCH_VALUES // 2 + 1))
    response = fhir.request("GET", f"/fhir/Observation?_id={half}&subject._id={half}")
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    # A repeated value set is bound once: the 12 repeats above are one c80 set (6,401 codes).
    response = fhir.request("GET", f"/fhir/DocumentReference?type:in={','.join([C80] * 40)}")
    assert response.status_code == 200, response.get_data(as_text=True)[:300]


def test_too_many_database_parameters_is_not_database_unavailable() -> None:

    for error in (
        psycopg.OperationalError(
            "sending query and params failed: number of parameters must be between 0 and 65535"
        ),
        sqlite3.OperationalError("too many SQL variables"),
    ):
        found = from_database_error(error)
        assert found is not None and found.category is Category.TOO_COSTLY, error
        assert "unavailable" not in str(found) and "Retry-After" not in found.headers
    lost = from_database_error(psycopg.OperationalError("connection refused"))
    assert lost is not None and lost.category is Category.TRANSIENT
