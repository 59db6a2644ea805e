"""Writes cannot widen the writer's reach (issue 16, findings 1-3; auth/policy.py, docs/security.md).

ALICE is a practitioner with a user token who is not on patient P's care team.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.factories import create_care_team, create_observation, create_patient, create_via
from tests.support.access import COORDINATOR, GrantWorld, team_body
from tests.support.auth import session_key_ready

__all__ = ["session_key_ready"]  # autouse fixture: the auth pages' session key is loaded


@pytest.fixture
def world(app: Flask, client: FlaskClient) -> GrantWorld:
    return GrantWorld(app, client)


def test_posting_a_care_team_naming_herself_is_refused(world: GrantWorld) -> None:
    assert world.alice_reads_observation() == 403
    response = world.as_alice(
        "POST", "/fhir/CareTeam", team_body(world.p, (f"Practitioner/{world.alice}", None))
    )
    assert response.status_code == 403, response.get_json()
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert world.alice_reads_observation() == 403


def test_putting_a_care_team_naming_herself_is_refused(world: GrantWorld) -> None:
    body = team_body(world.p, (f"Organization/{world.org}", None), (f"Practitioner/{world.alice}", None))
    response = world.as_alice("PUT", f"/fhir/CareTeam/{world.team}", {**body, "id": world.team})
    assert response.status_code == 403, response.get_json()
    response = world.as_alice("PUT", "/fhir/CareTeam/alice-made", {**body, "id": "alice-made"})
    assert response.status_code == 403, response.get_json()
    assert world.alice_reads_observation() == 403


def test_a_member_who_is_no_coordinator_cannot_add_members(world: GrantWorld, client: FlaskClient) -> None:
    team = create_care_team(client, world.p, f"Practitioner/{world.alice}")
    assert world.alice_reads_observation() == 200
    body = team_body(world.p, (f"Practitioner/{world.alice}", None), (f"Practitioner/{world.bob}", None))
    response = world.as_alice("PUT", f"/fhir/CareTeam/{team}", {**body, "id": team})
    assert response.status_code == 403, response.get_json()
    assert "coordinators" in response.get_json()["issue"][0]["diagnostics"]


def test_a_coordinator_adds_a_member(world: GrantWorld, client: FlaskClient) -> None:
    team = create_via(client, team_body(world.p, (f"Practitioner/{world.alice}", COORDINATOR)))
    body = team_body(
        world.p, (f"Practitioner/{world.alice}", COORDINATOR), (f"Practitioner/{world.bob}", None)
    )
    response = world.as_alice("PUT", f"/fhir/CareTeam/{team}", {**body, "id": team})
    assert response.status_code == 200, response.get_json()


def test_a_member_edits_a_team_without_changing_who_is_on_it(world: GrantWorld, client: FlaskClient) -> None:
    team = create_care_team(client, world.p, f"Practitioner/{world.alice}")
    body = {
        **team_body(world.p, (f"Practitioner/{world.alice}", None)),
        "id": team,
        "name": "Cercle de soins",
    }
    response = world.as_alice("PUT", f"/fhir/CareTeam/{team}", body)
    assert response.status_code == 200, response.get_json()


def test_a_practitioner_cannot_give_herself_a_new_patients_team(world: GrantWorld) -> None:
    """Second review (H4, H5): a Patient she registers (or a Patient id she re-creates over data filed
    under it, or one carrying someone's INS before the hospital's data arrives) gets its care team from
    a coordinator or a system client, not from her."""
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:4b6f8a52-1d6e-4a3e-9c1a-0d3a2e5f6a70",
                "resource": {"resourceType": "Patient", "name": [{"family": "Nouveau"}]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    **team_body("x", (f"Practitioner/{world.alice}", None)),
                    "subject": {"reference": "urn:uuid:4b6f8a52-1d6e-4a3e-9c1a-0d3a2e5f6a70"},
                },
                "request": {"method": "POST", "url": "CareTeam"},
            },
        ],
    }
    response = world.as_alice("POST", "/fhir", bundle)
    assert response.status_code == 403, response.get_json()


def test_a_practitioner_role_linking_herself_to_a_team_organization_is_refused(world: GrantWorld) -> None:
    role = {
        "resourceType": "PractitionerRole",
        "active": True,
        "practitioner": {"reference": f"Practitioner/{world.alice}"},
        "organization": {"reference": f"Organization/{world.org}"},
    }
    response = world.as_alice("POST", "/fhir/PractitionerRole", role)
    assert response.status_code == 403, response.get_json()
    assert world.alice_reads_observation() == 403


def test_repointing_another_practitioners_role_at_herself_is_refused(
    world: GrantWorld, client: FlaskClient
) -> None:
    role = create_via(
        client,
        {
            "resourceType": "PractitionerRole",
            "active": True,
            "practitioner": {"reference": f"Practitioner/{world.bob}"},
            "organization": {"reference": f"Organization/{world.org}"},
        },
    )
    body = {
        "resourceType": "PractitionerRole",
        "id": role,
        "active": True,
        "practitioner": {"reference": f"Practitioner/{world.alice}"},
        "organization": {"reference": f"Organization/{world.org}"},
    }
    response = world.as_alice("PUT", f"/fhir/PractitionerRole/{role}", body)
    assert response.status_code == 403, response.get_json()
    assert world.alice_reads_observation() == 403


def _offered_task(client: FlaskClient, patient: str, alice: str) -> dict[str, Any]:
    task_id = create_via(
        client,
        {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "for": {"reference": f"Patient/{patient}"},
            "restriction": {"recipient": [{"reference": f"Practitioner/{alice}"}]},
        },
    )
    task: dict[str, Any] = client.get(f"/fhir/Task/{task_id}").get_json()
    return task


@pytest.mark.parametrize("field", ["for", "focus", "encounter"])
def test_accepting_an_offer_cannot_move_the_task(world: GrantWorld, client: FlaskClient, field: str) -> None:
    q = create_patient(client, "Autre")
    q_obs = create_observation(client, q)
    task = _offered_task(client, world.p, world.alice)
    accepted = {
        **task,
        "status": "accepted",
        "owner": {"reference": f"Practitioner/{world.alice}"},
        field: {"reference": f"Patient/{q}"},
    }
    response = world.as_alice("PUT", f"/fhir/Task/{task['id']}", accepted, If_Match='W/"1"')
    assert response.status_code == 403, response.get_json()
    assert world.as_alice("GET", f"/fhir/Observation/{q_obs}").status_code == 403


def test_accepting_an_offer_as_offered_still_works(world: GrantWorld, client: FlaskClient) -> None:
    task = _offered_task(client, world.p, world.alice)
    accepted = {**task, "status": "accepted", "owner": {"reference": f"Practitioner/{world.alice}"}}
    response = world.as_alice("PUT", f"/fhir/Task/{task['id']}", accepted, If_Match='W/"1"')
    assert response.status_code == 200, response.get_json()
    assert world.alice_reads_observation() == 200


def test_a_member_cannot_give_a_task_to_someone_else(world: GrantWorld, client: FlaskClient) -> None:
    create_care_team(client, world.p, f"Practitioner/{world.alice}")
    body = {
        "resourceType": "Task",
        "status": "in-progress",
        "intent": "order",
        "for": {"reference": f"Patient/{world.p}"},
        "owner": {"reference": f"Practitioner/{world.bob}"},
    }
    response = world.as_alice("POST", "/fhir/Task", body)
    assert response.status_code == 403, response.get_json()
    # Herself neither (second review, H3): an owner grant would outlive her team membership, or turn a
    # break-the-glass access into a lasting one; she takes Tasks by accepting offers.
    mine = {**body, "owner": {"reference": f"Practitioner/{world.alice}"}}
    assert world.as_alice("POST", "/fhir/Task", mine).status_code == 403
    unowned = {k: v for k, v in body.items() if k != "owner"}
    assert world.as_alice("POST", "/fhir/Task", {**unowned, "status": "requested"}).status_code == 201
