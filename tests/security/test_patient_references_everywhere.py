"""Patient data in any resource type is in that patient's compartment (review 17, R3): a resource that
names a patient anywhere, or follows (Reference(Any): Provenance.target, ...) a resource of a patient's
compartment, is for that patient's care team, whether the R4 Patient CompartmentDefinition lists its
type or not. docs/security.md, "Compartments"."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.auth import test_read_paths_reach as reads
from tests.auth.test_security import _create, _session_key_ready

__all__ = ["_session_key_ready"]  # autouse fixture: the auth pages' session key is loaded


@pytest.fixture
def world(app: Flask, client: FlaskClient) -> reads.World:
    return reads.World(app, client)


def _about_q(world: reads.World) -> list[dict[str, Any]]:
    q = world.q
    return [
        {"resourceType": "Device", "patient": {"reference": f"Patient/{q}"}},
        {
            "resourceType": "Provenance",
            "target": [{"reference": f"Observation/{world.q_obs}"}],
            "recorded": "2024-01-01T00:00:00Z",
            "agent": [{"who": {"display": "Dr X"}}],
        },
        {
            "resourceType": "GuidanceResponse",
            "moduleUri": "http://example.org/module",
            "status": "success",
            "subject": {"reference": f"Patient/{q}"},
        },
        {"resourceType": "Contract", "status": "executed", "subject": [{"reference": f"Patient/{q}"}]},
        {"resourceType": "Linkage", "item": [{"type": "source", "resource": {"reference": f"Patient/{q}"}}]},
    ]


def test_patient_data_outside_the_compartment_definition_is_not_for_everyone(
    world: reads.World, client: FlaskClient
) -> None:
    """A Device implanted in Q, the Provenance of Q's Observation, a GuidanceResponse or Contract about
    Q: outside_compartments() made them compartment-less, so every practitioner read them."""
    readable = []
    for body in _about_q(world):
        rid = _create(client, body)
        if world.get(f"/fhir/{body['resourceType']}/{rid}").status_code == 200:
            readable.append(body["resourceType"])
    assert readable == []


def test_a_practitioner_cannot_file_a_device_into_an_unreachable_record(world: reads.World) -> None:
    body = {"resourceType": "Device", "patient": {"reference": f"Patient/{world.q}"}}
    assert world.send("POST", "/fhir/Device", body).status_code == 403
