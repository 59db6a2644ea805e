"""Patient data in any resource type is in that patient's compartment (review 17, R3): a resource that
names a patient anywhere, or follows (Reference(Any): Provenance.target, ...) a resource of a patient's
compartment, is for that patient's care team, whether the R4 Patient CompartmentDefinition lists its
type or not. docs/security.md, "Compartments"."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordination_api.core.validation import validate_resource
from coordination_api.fhir.resources import supported_types
from fhir_profiles import reference_elements
from tests.factories import create_via
from tests.security import minimal
from tests.security.conftest import PROFILE
from tests.support.access import ReachWorld
from tests.support.auth import session_key_ready

__all__ = ["session_key_ready"]  # autouse fixture: the auth pages' session key is loaded


@pytest.fixture
def world(app: Flask, client: FlaskClient) -> ReachWorld:
    return ReachWorld(app, client)


def _about_q(world: ReachWorld) -> list[dict[str, Any]]:
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
        {
            "resourceType": "Linkage",
            "item": [  # lnk-1: at least two items
                {"type": "source", "resource": {"reference": f"Patient/{q}"}},
                {"type": "alternate", "resource": {"reference": f"Patient/{q}"}},
            ],
        },
    ]


def test_patient_data_outside_the_compartment_definition_is_not_for_everyone(
    world: ReachWorld, client: FlaskClient
) -> None:
    """A Device implanted in Q, the Provenance of Q's Observation, a GuidanceResponse or Contract about
    Q: outside_compartments() made them compartment-less, so every practitioner read them."""
    readable = []
    for body in _about_q(world):
        rid = create_via(client, body)
        if world.get(f"/fhir/{body['resourceType']}/{rid}").status_code == 200:
            readable.append(body["resourceType"])
    assert readable == []


def test_a_practitioner_cannot_file_a_device_into_an_unreachable_record(world: ReachWorld) -> None:
    body = {"resourceType": "Device", "patient": {"reference": f"Patient/{world.q}"}}
    assert world.send("POST", "/fhir/Device", body).status_code == 403


# -- the class: every type the server serves, every element that can point at a Patient ----------------

# Types that cannot be stored through the REST API at all, with the reason.
NOT_BUILDABLE = {
    "AuditEvent": "written by the server's audit trail only (405 on create)",
}


def _cases() -> list[tuple[str, str, bool]]:
    """(type, element path, whether the element takes any resource) for each Reference element of a
    served type whose targetProfile includes Patient or Resource (R4 StructureDefinitions)."""
    out = []
    for res_type, elements in sorted(reference_elements().items()):
        if res_type not in supported_types() or res_type in NOT_BUILDABLE:
            continue
        for path, targets in elements:
            if path and ("Patient" in targets or "Resource" in targets):
                out.append((res_type, path, "Resource" in targets))
    return out


CASES = _cases()


def _body(case: tuple[str, str, bool], target: str) -> dict[str, Any]:
    res_type, path, _any = case
    return minimal.place(res_type, minimal.minimal(res_type), path, {"reference": target})


def _exposed(world: ReachWorld, client: FlaskClient, body: dict[str, Any]) -> list[str]:
    """What a practitioner outside Q's team gets of a resource about Q stored by a system client."""
    res_type = body["resourceType"]
    created = client.post(f"/fhir/{res_type}", json=body, headers={"Content-Type": "application/fhir+json"})
    assert created.status_code == 201, (res_type, created.get_json())
    rid = created.get_json()["id"]
    out = []
    if world.get(f"/fhir/{res_type}/{rid}").status_code != 403:
        out.append("read")
    found = world.get(f"/fhir/{res_type}?_id={rid}")
    if found.status_code == 200 and rid in {e["resource"]["id"] for e in found.get_json().get("entry", [])}:
        out.append("search")
    if world.send("POST", f"/fhir/{res_type}", body).status_code != 403:
        out.append("create")
    return out


def test_the_case_list_is_derived_from_the_definitions() -> None:
    """The sweep covers what review 17 found by hand (and its Device case through Device.patient)."""
    paths = {(t, p) for t, p, _any in CASES}
    for expected in [
        ("Device", "patient"),
        ("Provenance", "target"),
        ("GuidanceResponse", "subject"),
        ("Contract", "subject"),
        ("Linkage", "item.resource"),
        ("Communication", "about"),
        ("VerificationResult", "target"),
    ]:
        assert expected in paths
    assert len(CASES) > 150


def test_every_element_that_can_name_a_patient_keeps_it_in_the_patients_compartment(
    world: ReachWorld, client: FlaskClient
) -> None:
    """Each (type, element) naming Patient/Q: not readable, not searchable, not creatable by Alice."""
    leaks = {}
    for case in CASES:
        exposed = _exposed(world, client, _body(case, f"Patient/{world.q}"))
        if exposed:
            leaks[f"{case[0]}.{case[1]}"] = exposed
    assert leaks == {}


@settings(settings.get_profile(PROFILE), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=st.sampled_from(CASES),
    via=st.sampled_from(["element", "followed", "extension", "contained"]),
)
def test_patient_data_anywhere_in_any_type_is_the_patients(
    world: ReachWorld, client: FlaskClient, case: tuple[str, str, bool], via: str
) -> None:
    """Property: however a resource of any type ties itself to Q (the element itself; a Reference(Any)
    element pointing at Q's Observation; an extension or a contained resource naming Q), a practitioner
    outside Q's team neither reads, finds nor files it. (The world is shared by the examples: Alice
    never gains reach.)"""
    if via == "followed" and not case[2]:
        via = "element"  # only a Reference(Any) element can point at an Observation
    target = f"Observation/{world.q_obs}" if via == "followed" else f"Patient/{world.q}"
    if via in ("element", "followed"):
        body = _body(case, target)
    else:
        body = minimal.minimal(case[0])
        if via == "extension":
            body["extension"] = [
                {"url": "http://example.org/about", "valueReference": {"reference": f"Patient/{world.q}"}}
            ]
        else:
            body["contained"] = [
                {
                    "resourceType": "Observation",
                    "id": "about",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": f"Patient/{world.q}"},
                }
            ]
            body.setdefault("extension", []).append(
                {"url": "http://example.org/about", "valueReference": {"reference": "#about"}}
            )
    assert _exposed(world, client, body) == []


@pytest.mark.parametrize("res_type", sorted({case[0] for case in CASES}))
def test_every_minimal_body_is_valid_alone(res_type: str) -> None:
    """The property above builds bodies of any type from ``minimal``; each must pass the base rules on
    its own (an invariant ``minimal`` misses would fail the property only on the seeds that draw
    that type: apr-1 did)."""
    validate_resource(minimal.minimal(res_type), res_type)
