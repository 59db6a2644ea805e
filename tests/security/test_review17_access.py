"""Review of issues 16/17 (access), as regression tests: a self-made coordinator, periods ending on a
leap second, If-Match and 410 oracles (the patient data outside the compartment definition: in
test_patient_references_everywhere.py)."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.factories import create_care_team, create_via
from tests.support.access import COORDINATOR, GrantWorld, ReachWorld, team_body
from tests.support.auth import bearer, practitioner_user, session_key_ready, user_token

__all__ = ["session_key_ready"]  # autouse fixture: the auth pages' session key is loaded

LEAP_SECOND_END = "2016-12-31T23:59:60Z"  # FHIR dateTime allows second 60 (R4 datatypes.html#dateTime)


@pytest.fixture
def world(app: Flask, client: FlaskClient) -> ReachWorld:
    return ReachWorld(app, client)


@pytest.fixture
def team_world(app: Flask, client: FlaskClient) -> GrantWorld:
    return GrantWorld(app, client)


# -- R1: a care-team member makes herself coordinator --------------------------------------------------


def test_a_member_cannot_give_herself_the_coordinator_role(
    team_world: GrantWorld, client: FlaskClient
) -> None:
    """The coordinator role is read from participant.role, which is not in the derived access rows, so
    reach_change sees no change and the edit passes as a harmless one; the member is then a
    coordinator (adds members, lifts objections, gives herself lasting Task ownership)."""
    w = team_world
    team = create_care_team(client, w.p, f"Practitioner/{w.alice}")
    promoted = {**team_body(w.p, (f"Practitioner/{w.alice}", COORDINATOR)), "id": team}
    response = w.as_alice("PUT", f"/fhir/CareTeam/{team}", promoted)
    assert response.status_code == 403, "a plain member made herself the patient's coordinator"
    widened = {
        **team_body(w.p, (f"Practitioner/{w.alice}", COORDINATOR), (f"Practitioner/{w.bob}", None)),
        "id": team,
    }
    assert w.as_alice("PUT", f"/fhir/CareTeam/{team}", widened).status_code == 403


# -- R2: a period ending on a leap second never ends ----------------------------------------------------


def test_an_offer_that_ended_on_a_leap_second_cannot_be_read_or_accepted(
    world: ReachWorld, client: FlaskClient, app: Flask
) -> None:
    """policy._instant cannot parse second 60 and returns None, read as 'no end': an offer that
    expired in 2016 still shows the patient and can be accepted, which gives full reach."""
    carol = practitioner_user(app, "carol", "10000000003")
    task = create_via(
        client,
        {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "for": {"reference": f"Patient/{world.q}"},
            "restriction": {
                "period": {"end": LEAP_SECOND_END},
                "recipient": [{"reference": f"Practitioner/{carol}"}],
            },
        },
    )
    token = user_token(app, "user/*.cruds", "carol")
    read = client.get(f"/fhir/Task/{task}", headers=bearer(token))
    if read.status_code == 200:
        accepted = {**read.get_json(), "status": "accepted", "owner": {"reference": f"Practitioner/{carol}"}}
        client.put(
            f"/fhir/Task/{task}",
            json=accepted,
            headers=bearer(token, **{"Content-Type": "application/fhir+json"}),
        )
    observation = client.get(f"/fhir/Observation/{world.q_obs}", headers=bearer(token)).status_code
    assert (read.status_code, observation) == (403, 403)


def test_a_care_team_membership_that_ended_on_a_leap_second_has_ended(
    world: ReachWorld, client: FlaskClient, app: Flask
) -> None:
    bob = practitioner_user(app, "bob", "10000000002")
    create_via(
        client,
        {
            "resourceType": "CareTeam",
            "status": "active",
            "subject": {"reference": f"Patient/{world.q}"},
            "participant": [
                {
                    "member": {"reference": f"Practitioner/{bob}"},
                    "period": {"start": "2016-01-01", "end": LEAP_SECOND_END},
                }
            ],
        },
    )
    token = user_token(app, "user/*.cruds", "bob")
    assert client.get(f"/fhir/Patient/{world.q}", headers=bearer(token)).status_code == 403


# -- R4: oracles on refused resources --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_if_match_does_not_tell_the_version_of_an_unreachable_resource(
    world: ReachWorld, method: str
) -> None:
    """The version check (412) runs before the care-team check (403): trying W/"1", W/"2"… tells
    that the resource exists and how many times it was changed."""
    body = {"resourceType": "Patient", "id": world.q} if method == "PUT" else None
    statuses = {
        world.send(method, f"/fhir/Patient/{world.q}", body, **{"If-Match": f'W/"{v}"'}).status_code
        for v in (1, 2, 3)
    }
    assert statuses == {403}


def test_if_match_on_patch_does_not_tell_the_version(world: ReachWorld) -> None:
    statuses = {
        world.client.patch(
            f"/fhir/Patient/{world.q}",
            data='[{"op": "test", "path": "/id", "value": "x"}]',
            headers=bearer(
                world.token, **{"Content-Type": "application/json-patch+json", "If-Match": f'W/"{v}"'}
            ),
        ).status_code
        for v in (1, 2, 3)
    }
    assert statuses == {403}


def test_a_deleted_resource_of_an_unreachable_patient_is_refused_not_gone(
    world: ReachWorld, client: FlaskClient
) -> None:
    """Read of a deleted resource answers 410 with its ETag to anyone (vread of the same version is 403)."""
    assert client.delete(f"/fhir/Observation/{world.q_obs}").status_code in (200, 204)
    response = world.get(f"/fhir/Observation/{world.q_obs}")
    assert response.status_code == 403
    assert "ETag" not in response.headers
