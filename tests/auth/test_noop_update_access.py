"""A no-op update (issue 18) is judged like any write: the care-team rule and the directory rule
refuse it alike, and an allowed one is audited; only the version is not written."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from tests.factories import create_care_team, create_observation, create_patient, create_via
from tests.support.auth import audit_rows, bearer, practitioner_user, session_key_ready, user_token

__all__ = ["session_key_ready"]  # autouse fixture: the auth pages' session key is loaded

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _current(client: FlaskClient, reference: str) -> dict[str, object]:
    response = client.get(f"/fhir/{reference}")
    assert response.status_code == 200
    body: dict[str, object] = response.get_json()
    return body


def test_no_op_update_outside_the_care_team_is_403(client: FlaskClient, app: Flask) -> None:
    practitioner_user(app)
    observation = f"Observation/{create_observation(client, create_patient(client, 'Outside'))}"
    body = _current(client, observation)
    token = user_token(app)
    response = client.put(f"/fhir/{observation}", json=body, headers=bearer(token, **FHIR_JSON))
    assert response.status_code == 403


def test_no_op_update_of_directory_data_by_a_practitioner_is_403(client: FlaskClient, app: Flask) -> None:
    practitioner_user(app)
    organization = f"Organization/{create_via(client, {'resourceType': 'Organization', 'name': 'CPTS'})}"
    body = _current(client, organization)
    token = user_token(app)
    response = client.put(f"/fhir/{organization}", json=body, headers=bearer(token, **FHIR_JSON))
    assert response.status_code == 403  # the rule on the written version still judges it


def test_allowed_no_op_update_is_audited(client: FlaskClient, app: Flask) -> None:
    practitioner_id = practitioner_user(app)
    patient_id = create_patient(client, "Inside")
    create_care_team(client, patient_id, f"Practitioner/{practitioner_id}")
    observation = f"Observation/{create_observation(client, patient_id)}"
    body = _current(client, observation)
    token = user_token(app)
    before = len(audit_rows(app))
    response = client.put(f"/fhir/{observation}", json=body, headers=bearer(token, **FHIR_JSON))
    assert response.status_code == 200 and response.headers["ETag"] == 'W/"1"'
    rows = audit_rows(app)[before:]
    updates = [r for r in rows if r.subtype == "update"]
    assert len(updates) == 1 and updates[0].entity.endswith(observation)
