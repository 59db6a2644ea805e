"""Writes cannot widen the writer's reach (issue 16, findings 1-3; auth/policy.py, docs/security.md).

ALICE is a practitioner with a user token who is not on patient P's care team.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.auth.test_security import (
    _bearer,
    _care_team,
    _create,
    _observation,
    _patient,
    _practitioner,
    _session_key_ready,
    _user_token,
)

CARE_CIRCLE = "https://coordination.example.org/fhir/CodeSystem/cercle-de-soins-role"
COORDINATOR = {"coding": [{"system": CARE_CIRCLE, "code": "coordinateur-parcours"}]}


__all__ = ["_session_key_ready"]  # autouse fixture: the auth pages' session key is loaded


class World:
    def __init__(self, app: Flask, client: FlaskClient) -> None:
        self.app = app
        self.client = client
        self.alice = _practitioner(app, "alice", "10000000001")
        self.bob = _practitioner(app, "bob", "10000000002")
        self.p = _patient(client, "Martin")
        self.obs = _observation(client, self.p)
        self.org = _create(client, {"resourceType": "Organization", "name": "Cabinet infirmier"})
        self.team = _care_team(client, self.p, f"Organization/{self.org}")
        self.alice_token = _user_token(app, "user/*.cruds", "alice")

    def as_alice(self, method: str, url: str, body: Any = None, **headers: str) -> Any:
        return self.client.open(
            url,
            method=method,
            json=body,
            headers={**_bearer(self.alice_token, **headers), "Content-Type": "application/fhir+json"},
        )

    def alice_reads_observation(self) -> int:
        return int(self.as_alice("GET", f"/fhir/Observation/{self.obs}").status_code)


@pytest.fixture
def world(app: Flask, client: FlaskClient) -> World:
    return World(app, client)


def _team_body(patient: str, *members: tuple[str, dict[str, Any] | None]) -> dict[str, Any]:
    return {
        "resourceType": "CareTeam",
        "status": "active",
        "subject": {"reference": f"Patient/{patient}"},
        "participant": [
            {"member": {"reference": m}, **({"role": [role]} if role else {})} for m, role in members
        ],
    }


def test_posting_a_care_team_naming_herself_is_refused(world: World) -> None:
    assert world.alice_reads_observation() == 403
    response = world.as_alice(
        "POST", "/fhir/CareTeam", _team_body(world.p, (f"Practitioner/{world.alice}", None))
    )
    assert response.status_code == 403, response.get_json()
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert world.alice_reads_observation() == 403


def test_putting_a_care_team_naming_herself_is_refused(world: World) -> None:
    body = _team_body(world.p, (f"Organization/{world.org}", None), (f"Practitioner/{world.alice}", None))
    response = world.as_alice("PUT", f"/fhir/CareTeam/{world.team}", {**body, "id": world.team})
    assert response.status_code == 403, response.get_json()
    response = world.as_alice("PUT", "/fhir/CareTeam/alice-made", {**body, "id": "alice-made"})
    assert response.status_code == 403, response.get_json()
    assert world.alice_reads_observation() == 403


def test_a_member_who_is_no_coordinator_cannot_add_members(world: World, client: FlaskClient) -> None:
    team = _care_team(client, world.p, f"Practitioner/{world.alice}")
    assert world.alice_reads_observation() == 200
    body = _team_body(world.p, (f"Practitioner/{world.alice}", None), (f"Practitioner/{world.bob}", None))
    response = world.as_alice("PUT", f"/fhir/CareTeam/{team}", {**body, "id": team})
    assert response.status_code == 403, response.get_json()
    assert "coordinators" in response.get_json()["issue"][0]["diagnostics"]


def test_a_coordinator_adds_a_member(world: World, client: FlaskClient) -> None:
    team = _create(client, _team_body(world.p, (f"Practitioner/{world.alice}", COORDINATOR)))
    body = _team_body(
        world.p, (f"Practitioner/{world.alice}", COORDINATOR), (f"Practitioner/{world.bob}", None)
    )
    response = world.as_alice("PUT", f"/fhir/CareTeam/{team}", {**body, "id": team})
    assert response.status_code == 200, response.get_json()


def test_a_member_edits_a_team_without_changing_who_is_on_it(world: World, client: FlaskClient) -> None:
    team = _care_team(client, world.p, f"Practitioner/{world.alice}")
    body = {
        **_team_body(world.p, (f"Practitioner/{world.alice}", None)),
        "id": team,
        "name": "Cercle de soins",
    }
    response = world.as_alice("PUT", f"/fhir/CareTeam/{team}", body)
    assert response.status_code == 200, response.get_json()


def test_a_practitioner_cannot_give_herself_a_new_patients_team(world: World) -> None:
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
                    **_team_body("x", (f"Practitioner/{world.alice}", None)),
                    "subject": {"reference": "urn:uuid:4b6f8a52-1d6e-4a3e-9c1a-0d3a2e5f6a70"},
                },
                "request": {"method": "POST", "url": "CareTeam"},
            },
        ],
    }
    response = world.as_alice("POST", "/fhir", bundle)
    assert response.status_code == 403, response.get_json()


def test_a_practitioner_role_linking_herself_to_a_team_organization_is_refused(world: World) -> None:
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
    world: World, client: FlaskClient
) -> None:
    role = _create(
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
    task_id = _create(
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
def test_accepting_an_offer_cannot_move_the_task(world: World, client: FlaskClient, field: str) -> None:
    q = _patient(client, "Autre")
    q_obs = _observation(client, q)
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


def test_accepting_an_offer_as_offered_still_works(world: World, client: FlaskClient) -> None:
    task = _offered_task(client, world.p, world.alice)
    accepted = {**task, "status": "accepted", "owner": {"reference": f"Practitioner/{world.alice}"}}
    response = world.as_alice("PUT", f"/fhir/Task/{task['id']}", accepted, If_Match='W/"1"')
    assert response.status_code == 200, response.get_json()
    assert world.alice_reads_observation() == 200


def test_a_member_cannot_give_a_task_to_someone_else(world: World, client: FlaskClient) -> None:
    _care_team(client, world.p, f"Practitioner/{world.alice}")
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
