"""Review of issues 16/17 (access), as regression tests: a self-made coordinator, periods ending on a
leap second, If-Match and 410 oracles (the patient data outside the compartment definition: in
test_patient_references_everywhere.py)."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.auth import test_read_paths_reach as reads
from tests.auth import test_self_granted_reach as grants
from tests.auth.test_security import (
    _bearer,
    _care_team,
    _create,
    _practitioner,
    _session_key_ready,
    _user_token,
)

__all__ = ["_session_key_ready"]  # autouse fixture: the auth pages' session key is loaded

LEAP_SECOND_END = "2016-12-31T23:59:60Z"  # FHIR dateTime allows second 60 (R4 datatypes.html#dateTime)


@pytest.fixture
def world(app: Flask, client: FlaskClient) -> reads.World:
    return reads.World(app, client)


@pytest.fixture
def team_world(app: Flask, client: FlaskClient) -> grants.World:
    return grants.World(app, client)


# -- R1: a care-team member makes herself coordinator --------------------------------------------------


def test_a_member_cannot_give_herself_the_coordinator_role(
    team_world: grants.World, client: FlaskClient
) -> None:
    """The coordinator role is read from participant.role, which is not in the derived access rows, so
    reach_change sees no change and the edit passes as a harmless one; the member is then a
    coordinator (adds members, lifts objections, gives herself lasting Task ownership)."""
    w = team_world
    team = _care_team(client, w.p, f"Practitioner/{w.alice}")
    promoted = {**grants._team_body(w.p, (f"Practitioner/{w.alice}", grants.COORDINATOR)), "id": team}
    response = w.as_alice("PUT", f"/fhir/CareTeam/{team}", promoted)
    assert response.status_code == 403, "a plain member made herself the patient's coordinator"
    widened = {
        **grants._team_body(
            w.p, (f"Practitioner/{w.alice}", grants.COORDINATOR), (f"Practitioner/{w.bob}", None)
        ),
        "id": team,
    }
    assert w.as_alice("PUT", f"/fhir/CareTeam/{team}", widened).status_code == 403


# -- R2: a period ending on a leap second never ends ----------------------------------------------------


def test_an_offer_that_ended_on_a_leap_second_cannot_be_read_or_accepted(
    world: reads.World, client: FlaskClient, app: Flask
) -> None:
    """policy._instant cannot parse second 60 and returns None, read as 'no end': an offer that
    expired in 2016 still shows the patient and can be accepted, which gives full reach."""
    carol = _practitioner(app, "carol", "10000000003")
    task = _create(
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
    token = _user_token(app, "user/*.cruds", "carol")
    read = client.get(f"/fhir/Task/{task}", headers=_bearer(token))
    if read.status_code == 200:
        accepted = {**read.get_json(), "status": "accepted", "owner": {"reference": f"Practitioner/{carol}"}}
        client.put(
            f"/fhir/Task/{task}",
            json=accepted,
            headers=_bearer(token, **{"Content-Type": "application/fhir+json"}),
        )
    observation = client.get(f"/fhir/Observation/{world.q_obs}", headers=_bearer(token)).status_code
    assert (read.status_code, observation) == (403, 403)


def test_a_care_team_membership_that_ended_on_a_leap_second_has_ended(
    world: reads.World, client: FlaskClient, app: Flask
) -> None:
    bob = _practitioner(app, "bob", "10000000002")
    _create(
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
    token = _user_token(app, "user/*.cruds", "bob")
    assert client.get(f"/fhir/Patient/{world.q}", headers=_bearer(token)).status_code == 403


# -- R4: oracles on refused resources --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_if_match_does_not_tell_the_version_of_an_unreachable_resource(
    world: reads.World, method: str
) -> None:
    """The version check (412) runs before the care-team check (403): trying W/"1", W/"2"… tells
    that the resource exists and how many times it was changed."""
    body = {"resourceType": "Patient", "id": world.q} if method == "PUT" else None
    statuses = {
        world.send(method, f"/fhir/Patient/{world.q}", body, **{"If-Match": f'W/"{v}"'}).status_code
        for v in (1, 2, 3)
    }
    assert statuses == {403}


def test_if_match_on_patch_does_not_tell_the_version(world: reads.World) -> None:
    statuses = {
        world.client.patch(
            f"/fhir/Patient/{world.q}",
            data='[{"op": "test", "path": "/id", "value": "x"}]',
            headers=_bearer(
                world.token, **{"Content-Type": "application/json-patch+json", "If-Match": f'W/"{v}"'}
            ),
        ).status_code
        for v in (1, 2, 3)
    }
    assert statuses == {403}


def test_a_deleted_resource_of_an_unreachable_patient_is_refused_not_gone(
    world: reads.World, client: FlaskClient
) -> None:
    """Read of a deleted resource answers 410 with its ETag to anyone (vread of the same version is 403)."""
    assert client.delete(f"/fhir/Observation/{world.q_obs}").status_code in (200, 204)
    response = world.get(f"/fhir/Observation/{world.q_obs}")
    assert response.status_code == 403
    assert "ETag" not in response.headers
