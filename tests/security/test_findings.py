"""Regression tests, one per finding 1, 2, 3, 5, 6 and 7 of issue 16 (ALICE: a practitioner user token,
not on patient P's CareTeam; she is on patient A's)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from flask import Flask

from tests.conftest import Fhir
from tests.security.conftest import as_bearer, mint_token
from tests.security.model import BASE

NURSE = {"coding": [{"system": "http://snomed.info/sct", "code": "224535009"}]}


def put(fhir: Fhir, body: dict[str, Any]) -> dict[str, Any]:
    response = fhir.request("PUT", f"/fhir/{body['resourceType']}/{body['id']}", body)
    assert response.status_code in (200, 201), response.get_json()
    stored: dict[str, Any] = response.get_json()
    return stored


def team(team_id: str, patient: str, *members: str) -> dict[str, Any]:
    return {
        "resourceType": "CareTeam",
        "id": team_id,
        "status": "active",
        "subject": {"reference": f"Patient/{patient}"},
        "participant": [{"member": {"reference": m}, "role": [NURSE]} for m in members],
    }


def observation(obs_id: str, subject: str, text: str = "secret") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": subject},
        "valueString": text,
    }


@pytest.fixture
def world(app: Flask, fhir: Fhir) -> Fhir:
    """Patients A (alice's, through team ct-a) and P (bob's and organization O's, team ct-p), each with an
    Observation; bob holds role r-bob in O."""
    for patient in ("A", "P"):
        put(fhir, {"resourceType": "Patient", "id": patient, "name": [{"family": f"Fam{patient}"}]})
    for name in ("alice", "bob"):
        put(fhir, {"resourceType": "Practitioner", "id": name, "name": [{"family": name}]})
    put(fhir, {"resourceType": "Organization", "id": "O", "name": "Cabinet O"})
    put(
        fhir,
        {
            "resourceType": "PractitionerRole",
            "id": "r-bob",
            "active": True,
            "practitioner": {"reference": "Practitioner/bob"},
            "organization": {"reference": "Organization/O"},
        },
    )
    put(fhir, team("ct-a", "A", "Practitioner/alice"))
    put(fhir, team("ct-p", "P", "Practitioner/bob", "Organization/O"))
    put(fhir, observation("obs-a", "Patient/A"))
    put(fhir, observation("obs-p", "Patient/P"))
    return fhir


@pytest.fixture
def alice(app: Flask, world: Fhir) -> Fhir:
    return as_bearer(app, mint_token(app, "user/*.cruds", "alice"))


def status(fhir: Fhir, url: str) -> int:
    code: int = fhir.request("GET", f"/fhir/{url}").status_code
    return code


def test_baseline_alice_reaches_a_not_p(alice: Fhir) -> None:
    assert status(alice, "Observation/obs-a") == 200
    assert status(alice, "Observation/obs-p") in (403, 404)


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_finding_1_a_care_team_naming_oneself_grants_nothing(alice: Fhir, world: Fhir, method: str) -> None:
    body = team("ct-self", "P", "Practitioner/alice")
    if method == "POST":
        del body["id"]
        alice.request("POST", "/fhir/CareTeam", body)
    else:
        alice.request("PUT", "/fhir/CareTeam/ct-self", body)
    assert status(alice, "Observation/obs-p") in (403, 404)
    # and P's existing team is unchanged by a PUT that adds her
    alice.request("PUT", "/fhir/CareTeam/ct-p", team("ct-p", "P", "Practitioner/bob", "Practitioner/alice"))
    assert status(alice, "Observation/obs-p") in (403, 404)


def test_finding_2_a_role_in_a_team_organization_grants_nothing(alice: Fhir) -> None:
    alice.request(
        "POST",
        "/fhir/PractitionerRole",
        {
            "resourceType": "PractitionerRole",
            "active": True,
            "practitioner": {"reference": "Practitioner/alice"},
            "organization": {"reference": "Organization/O"},
        },
    )
    assert status(alice, "Observation/obs-p") in (403, 404)


def test_finding_2_taking_over_another_practitioners_role_grants_nothing(alice: Fhir) -> None:
    alice.request(
        "PUT",
        "/fhir/PractitionerRole/r-bob",
        {
            "resourceType": "PractitionerRole",
            "id": "r-bob",
            "active": True,
            "practitioner": {"reference": "Practitioner/alice"},
            "organization": {"reference": "Organization/O"},
        },
    )
    assert status(alice, "Observation/obs-p") in (403, 404)


def test_finding_3_accepting_an_offer_cannot_move_the_task_to_another_patient(
    alice: Fhir, world: Fhir
) -> None:
    put(world, {"resourceType": "Patient", "id": "B", "name": [{"family": "FamB"}]})
    put(world, observation("obs-b", "Patient/B"))
    task = put(
        world,
        {
            "resourceType": "Task",
            "id": "offer",
            "status": "requested",
            "intent": "order",
            "code": {"text": "Soins"},
            "for": {"reference": "Patient/B"},
            "restriction": {"recipient": [{"reference": "Practitioner/alice"}]},
        },
    )
    assert status(alice, "Observation/obs-b") in (403, 404)  # an offer shows only Patient and Task
    accepted = {
        **task,
        "status": "accepted",
        "owner": {"reference": "Practitioner/alice"},
        "for": {"reference": "Patient/P"},
    }
    accepted.pop("meta", None)
    alice.request("PUT", "/fhir/Task/offer", accepted)
    assert status(alice, "Observation/obs-p") in (403, 404)
    stored = world.request("GET", "/fhir/Task/offer").get_json()
    assert stored["for"]["reference"] == "Patient/B"


def test_finding_5_absolute_references_to_our_base_are_in_the_compartment(alice: Fhir, world: Fhir) -> None:
    put(world, observation("obs-abs", f"{BASE}/Patient/P"))
    assert status(alice, "Observation/obs-abs") in (403, 404)
    assert "obs-abs" not in {
        e["resource"]["id"] for e in alice.request("GET", "/fhir/Observation").get_json().get("entry", [])
    }
    assert world.ids("Observation?patient=P") >= {"obs-p", "obs-abs"}
    # and she cannot write into P's record that way
    body = observation("x", f"{BASE}/Patient/P")
    del body["id"]
    response = alice.request("POST", "/fhir/Observation", body)
    assert response.status_code == 403, response.get_json()


def test_finding_6_a_binary_follows_its_document_reference(alice: Fhir, world: Fhir) -> None:
    put(
        world,
        {
            "resourceType": "DocumentReference",
            "id": "doc-p",
            "status": "current",
            "subject": {"reference": "Patient/P"},
            "content": [{"attachment": {"contentType": "text/plain", "url": "Binary/letter-p"}}],
        },
    )
    data = base64.b64encode(b"Lettre de liaison").decode()
    put(
        world,
        {
            "resourceType": "Binary",
            "id": "letter-p",
            "contentType": "text/plain",
            "securityContext": {"reference": "DocumentReference/doc-p"},
            "data": data,
        },
    )
    put(world, {"resourceType": "Binary", "id": "orphan", "contentType": "text/plain", "data": data})
    assert status(alice, "Binary/letter-p") in (403, 404)
    assert status(alice, "Binary/orphan") in (403, 404)
    assert status(world, "Binary/letter-p") == 200


def _match_ids(fhir: Fhir, query: str) -> set[str] | None:
    """The matches, or None when the search is refused (403)."""
    response = fhir.request("GET", f"/fhir/{query}")
    if response.status_code == 403:
        return None
    assert response.status_code == 200, response.get_json()
    return {
        e["resource"]["id"] for e in response.get_json().get("entry", []) if e["search"]["mode"] == "match"
    }


def test_finding_7_has_is_no_oracle_for_a_patient_only_scope(app: Flask, world: Fhir) -> None:
    narrow = as_bearer(app, mint_token(app, "system/Patient.rs"))
    found = _match_ids(narrow, "Patient?_has:Observation:subject:value-string=secret")
    assert found is None or found == set(), found


def test_finding_7_has_and_chains_ignore_other_teams_patients(alice: Fhir, world: Fhir) -> None:
    put(
        world,
        {
            "resourceType": "Encounter",
            "id": "enc-p",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/P"},
            "serviceProvider": {"reference": "Organization/O"},
        },
    )
    put(world, {**observation("obs-p2", "Patient/P"), "performer": [{"reference": "Practitioner/bob"}]})
    for query in (
        "Organization?_has:Encounter:service-provider:subject=Patient/P",
        "Practitioner?_has:Observation:performer:value-string=secret",
        "Practitioner?_has:Observation:performer:patient=P",
    ):
        found = _match_ids(alice, query)
        assert found is None or found == set(), (query, found)
    found = _match_ids(alice, "Encounter?subject:Patient.name=FamP")
    assert found is None or found == set(), found
