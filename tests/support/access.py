"""Small worlds for the access-rule tests (auth/policy.py): practitioners with user tokens, patients,
care teams, all made through the real API."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.factories import create_care_team, create_observation, create_patient, create_via
from tests.support.auth import bearer, practitioner_user, user_token

CARE_CIRCLE = "https://coordination.example.org/fhir/CodeSystem/cercle-de-soins-role"
COORDINATOR = {"coding": [{"system": CARE_CIRCLE, "code": "coordinateur-parcours"}]}


class ReachWorld:
    """ALICE, a practitioner with a user token, on patient P's care team and not on Q's; each has an
    Observation."""

    def __init__(self, app: Flask, client: FlaskClient) -> None:
        self.app = app
        self.client = client
        self.alice = practitioner_user(app, "alice", "10000000001")
        self.p = create_patient(client, "Martin")
        self.q = create_patient(client, "Secret")
        self.p_obs = create_observation(client, self.p)
        self.q_obs = create_observation(client, self.q)
        create_care_team(client, self.p, f"Practitioner/{self.alice}")
        self.token = user_token(app, "user/*.cruds", "alice")

    def get(self, url: str, **headers: str) -> Any:
        return self.client.get(url, headers=bearer(self.token, **headers))

    def send(self, method: str, url: str, body: Any, **headers: str) -> Any:
        return self.client.open(
            url,
            method=method,
            json=body,
            headers={**bearer(self.token, **headers), "Content-Type": "application/fhir+json"},
        )

    def ids(self, url: str) -> set[str]:
        response = self.get(url)
        assert response.status_code == 200, response.get_json()
        return {e["resource"]["id"] for e in response.get_json().get("entry", [])}


class GrantWorld:
    """ALICE and BOB, practitioners; patient P with an Observation and a care team naming only an
    Organization (neither of them); ALICE's user token."""

    def __init__(self, app: Flask, client: FlaskClient) -> None:
        self.app = app
        self.client = client
        self.alice = practitioner_user(app, "alice", "10000000001")
        self.bob = practitioner_user(app, "bob", "10000000002")
        self.p = create_patient(client, "Martin")
        self.obs = create_observation(client, self.p)
        self.org = create_via(client, {"resourceType": "Organization", "name": "Cabinet infirmier"})
        self.team = create_care_team(client, self.p, f"Organization/{self.org}")
        self.alice_token = user_token(app, "user/*.cruds", "alice")

    def as_alice(self, method: str, url: str, body: Any = None, **headers: str) -> Any:
        return self.client.open(
            url,
            method=method,
            json=body,
            headers={**bearer(self.alice_token, **headers), "Content-Type": "application/fhir+json"},
        )

    def alice_reads_observation(self) -> int:
        return int(self.as_alice("GET", f"/fhir/Observation/{self.obs}").status_code)


def team_body(patient: str, *members: tuple[str, dict[str, Any] | None]) -> dict[str, Any]:
    return {
        "resourceType": "CareTeam",
        "status": "active",
        "subject": {"reference": f"Patient/{patient}"},
        "participant": [
            {"member": {"reference": m}, **({"role": [role]} if role else {})} for m, role in members
        ],
    }
