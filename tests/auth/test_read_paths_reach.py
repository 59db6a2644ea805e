"""Every read path applies the one care-team rule (issue 16, findings 5-7 and the medium ones).

ALICE is a practitioner with a user token on patient P's care team and not on Q's.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from fhir_profiles.french_identifiers import RPPS
from tests.conftest import authed
from tests.factories import consent, create_observation, create_patient, create_via
from tests.support.access import ReachWorld
from tests.support.auth import bearer, practitioner_user, session_key_ready, user_token

__all__ = ["session_key_ready"]  # autouse fixture: the auth pages' session key is loaded


@pytest.fixture
def world(app: Flask, client: FlaskClient) -> ReachWorld:
    return ReachWorld(app, client)


# -- finding 5: references to our own base are local --------------------------------------------------


def test_an_absolute_reference_to_our_base_is_stored_relative(world: ReachWorld, client: FlaskClient) -> None:
    body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "poids"},
        "subject": {"reference": f"http://localhost/fhir/Patient/{world.q}"},
    }
    obs = create_via(client, body)
    stored = client.get(f"/fhir/Observation/{obs}").get_json()
    assert stored["subject"]["reference"] == f"Patient/{world.q}"
    assert world.get(f"/fhir/Observation/{obs}").status_code == 403
    assert obs not in world.ids("/fhir/Observation")


def test_alice_cannot_write_into_an_unreachable_record_through_an_absolute_reference(
    world: ReachWorld,
) -> None:
    body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "poids"},
        "subject": {"reference": f"http://localhost/fhir/Patient/{world.q}"},
    }
    assert world.send("POST", "/fhir/Observation", body).status_code == 403


def test_a_patient_named_by_identifier_only_is_for_system_clients(
    world: ReachWorld, client: FlaskClient
) -> None:
    body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "poids"},
        "subject": {"type": "Patient", "identifier": {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1"}},
    }
    obs = create_via(client, body)
    assert world.get(f"/fhir/Observation/{obs}").status_code == 403
    assert obs not in world.ids("/fhir/Observation")


# -- finding 6: Binary follows its securityContext ----------------------------------------------------


def _letter(client: FlaskClient, patient: str) -> tuple[str, str]:
    doc = create_via(
        client,
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": {"reference": f"Patient/{patient}"},
            "content": [{"attachment": {"contentType": "text/plain"}}],
        },
    )
    binary = create_via(
        client,
        {
            "resourceType": "Binary",
            "contentType": "text/plain",
            "securityContext": {"reference": f"DocumentReference/{doc}"},
            "data": base64.b64encode(b"lettre de sortie").decode(),
        },
    )
    return doc, binary


def test_a_binary_is_read_as_its_document_is(world: ReachWorld, client: FlaskClient) -> None:
    _doc, mine = _letter(client, world.p)
    _doc, theirs = _letter(client, world.q)
    assert world.get(f"/fhir/Binary/{mine}").status_code == 200
    assert world.get(f"/fhir/Binary/{theirs}").status_code == 403
    assert world.ids("/fhir/Binary") == {mine}


def test_a_binary_without_context_is_for_system_clients_only(world: ReachWorld, client: FlaskClient) -> None:
    orphan = create_via(
        client,
        {"resourceType": "Binary", "contentType": "text/plain", "data": base64.b64encode(b"x").decode()},
    )
    assert client.get(f"/fhir/Binary/{orphan}").status_code == 200
    assert world.get(f"/fhir/Binary/{orphan}").status_code == 403


def test_a_binary_follows_its_document_when_it_moves(world: ReachWorld, client: FlaskClient) -> None:
    doc, binary = _letter(client, world.q)
    assert world.get(f"/fhir/Binary/{binary}").status_code == 403
    moved = client.get(f"/fhir/DocumentReference/{doc}").get_json()
    moved["subject"] = {"reference": f"Patient/{world.p}"}
    assert client.put(f"/fhir/DocumentReference/{doc}", json=moved).status_code == 200
    assert world.get(f"/fhir/Binary/{binary}").status_code == 200


def test_a_binary_created_before_its_document_follows_it(world: ReachWorld, client: FlaskClient) -> None:
    binary = create_via(
        client,
        {
            "resourceType": "Binary",
            "contentType": "text/plain",
            "securityContext": {"reference": "DocumentReference/later"},
            "data": base64.b64encode(b"x").decode(),
        },
    )
    assert world.get(f"/fhir/Binary/{binary}").status_code == 403
    body = {
        "resourceType": "DocumentReference",
        "id": "later",
        "status": "current",
        "subject": {"reference": f"Patient/{world.p}"},
        "content": [{"attachment": {"url": f"Binary/{binary}"}}],
    }
    assert client.put("/fhir/DocumentReference/later", json=body).status_code == 201
    assert world.get(f"/fhir/Binary/{binary}").status_code == 200


# -- finding 7: chains and _has hops -------------------------------------------------------------------


def test_has_does_not_reveal_an_unreachable_patients_data(world: ReachWorld) -> None:
    found = world.ids("/fhir/Patient?_has:Observation:subject:code=8867-4")
    assert found == {world.p}


def test_a_chain_does_not_reveal_an_unreachable_patients_data(world: ReachWorld, client: FlaskClient) -> None:
    org = create_via(client, {"resourceType": "Organization", "name": "Clinique"})
    create_via(
        client,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": f"Patient/{world.q}"},
            "serviceProvider": {"reference": f"Organization/{org}"},
        },
    )
    assert world.ids(f"/fhir/Organization?_has:Encounter:service-provider:patient={world.q}") == set()
    assert world.ids("/fhir/Encounter?subject:Patient.name=Secret") == set()


def test_has_needs_a_scope_on_the_hop(anonymous_client: FlaskClient, app: Flask) -> None:

    system = authed(app.test_client())
    p = create_patient(system, "Martin")
    create_observation(system, p)
    narrow = authed(app.test_client(), "system/Patient.rs")
    response = narrow.get("/fhir/Patient?_has:Observation:subject:code=8867-4")
    assert response.status_code == 403, response.get_json()
    response = narrow.get("/fhir/Patient?general-practitioner.name=x")
    assert response.status_code == 403, response.get_json()


# -- versions are judged by their own compartments --------------------------------------------------


def test_an_old_version_is_judged_by_its_own_patient(world: ReachWorld, client: FlaskClient) -> None:
    moved = client.get(f"/fhir/Observation/{world.q_obs}").get_json()
    moved["subject"] = {"reference": f"Patient/{world.p}"}
    assert client.put(f"/fhir/Observation/{world.q_obs}", json=moved).status_code == 200
    assert world.get(f"/fhir/Observation/{world.q_obs}").status_code == 200
    assert world.get(f"/fhir/Observation/{world.q_obs}/_history/2").status_code == 200
    assert world.get(f"/fhir/Observation/{world.q_obs}/_history/1").status_code == 403
    history = world.get(f"/fhir/Observation/{world.q_obs}/_history").get_json()
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"']
    type_history = world.get("/fhir/Observation/_history").get_json()
    versions = {(e["fullUrl"].rsplit("/", 1)[1], e["response"]["etag"]) for e in type_history["entry"]}
    assert (world.q_obs, 'W/"1"') not in versions
    assert (world.q_obs, 'W/"2"') in versions


# -- Consent fails closed -----------------------------------------------------------------------------


def _deny(actor: dict[str, Any], patient: str) -> dict[str, Any]:
    return consent(
        f"Patient/{patient}", {"type": "deny", "actor": [{"role": {"text": "any"}, "reference": actor}]}
    )


def test_a_consent_actor_given_by_rpps_is_resolved_and_enforced(
    world: ReachWorld, client: FlaskClient
) -> None:

    assert world.get(f"/fhir/Observation/{world.p_obs}").status_code == 200
    actor = {"type": "Practitioner", "identifier": {"system": RPPS, "value": "10000000001"}}
    response = client.post("/fhir/Consent", json=_deny(actor, world.p))
    assert response.status_code == 201, response.get_json()
    assert (
        response.get_json()["provision"]["actor"][0]["reference"]["reference"]
        == f"Practitioner/{world.alice}"
    )
    assert world.get(f"/fhir/Observation/{world.p_obs}").status_code == 403


def test_a_consent_actor_nobody_carries_is_refused(world: ReachWorld, client: FlaskClient) -> None:
    actor = {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "99999999999"}}
    response = client.post("/fhir/Consent", json=_deny(actor, world.p))
    assert response.status_code == 422, response.get_json()
    assert "cannot be enforced" in response.get_json()["issue"][0]["diagnostics"]


# -- conditional operations answer alike whether hidden data matches -----------------------------------


def test_conditional_create_is_no_existence_oracle(world: ReachWorld, client: FlaskClient) -> None:
    hidden = {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:test", "value": "hidden-1"}],
        "code": {"text": "poids"},
        "subject": {"reference": f"Patient/{world.q}"},
    }
    create_via(client, hidden)
    mine = {**hidden, "subject": {"reference": f"Patient/{world.p}"}}
    first = world.send("POST", "/fhir/Observation", mine, If_None_Exist="identifier=urn:test|hidden-1")
    unused = {**mine, "identifier": [{"system": "urn:test", "value": "never-used"}]}
    other = world.send("POST", "/fhir/Observation", unused, If_None_Exist="identifier=urn:test|never-used")
    assert first.status_code == other.status_code == 201, (first.get_json(), other.get_json())
    gone = world.send("DELETE", "/fhir/Observation?identifier=urn:test|hidden-1", None)
    assert gone.status_code in (200, 204)
    assert (
        client.get(f"/fhir/Observation?identifier=urn:test|hidden-1&subject={world.q}").get_json()["total"]
        == 1
    )


# -- practitioners' identities ------------------------------------------------------------------------


def test_a_practitioner_cannot_change_a_colleagues_identifiers(
    world: ReachWorld, client: FlaskClient
) -> None:
    bob = practitioner_user(world.app, "bob", "10000000002")
    body = client.get(f"/fhir/Practitioner/{bob}").get_json()
    body["identifier"] = [*body.get("identifier", []), {"system": "urn:test:badge", "value": "x"}]
    response = world.send("PUT", f"/fhir/Practitioner/{bob}", body)
    assert response.status_code == 403, response.get_json()


# -- second review of issue 16 ------------------------------------------------------------------------


def test_whoever_writes_a_binarys_context_first_does_not_claim_it(
    world: ReachWorld, client: FlaskClient
) -> None:
    binary = create_via(
        client,
        {
            "resourceType": "Binary",
            "contentType": "text/plain",
            "securityContext": {"reference": "DocumentReference/letter-q"},
            "data": base64.b64encode(b"lettre de Q").decode(),
        },
    )
    claim = {
        "resourceType": "DocumentReference",
        "id": "letter-q",
        "status": "current",
        "subject": {"reference": f"Patient/{world.p}"},
        "content": [{"attachment": {"contentType": "text/plain"}}],
    }
    assert world.send("PUT", "/fhir/DocumentReference/letter-q", claim).status_code == 403
    assert world.get(f"/fhir/Binary/{binary}").status_code == 403


@pytest.mark.parametrize(
    "form",
    [
        "HTTP://LOCALHOST/fhir/Practitioner/{id}",
        "http://localhost:80/fhir/Practitioner/{id}",
        "http://localhost/fhir//Practitioner/{id}",
        "Practitioner/{id}/",
        "https://elsewhere.example/fhir/Practitioner/{id}",
        "CareTeam/{id}",
    ],
)
def test_a_consent_actor_is_enforced_or_refused_never_ignored(
    world: ReachWorld, client: FlaskClient, form: str
) -> None:
    actor = {"reference": form.format(id=world.alice)}
    response = client.post("/fhir/Consent", json=_deny(actor, world.p))
    assert response.status_code in (201, 422), response.get_json()
    if response.status_code == 201:
        assert world.get(f"/fhir/Observation/{world.p_obs}").status_code == 403


def test_a_practitioner_does_not_write_directory_data(world: ReachWorld) -> None:
    for body in (
        {"resourceType": "Location", "status": "active", "name": "Bordeaux"},
        {"resourceType": "HealthcareService", "active": True},
        {"resourceType": "Organization", "name": "Cabinet"},
    ):
        response = world.send("POST", f"/fhir/{body['resourceType']}", body)
        assert response.status_code == 403, response.get_json()
        assert "directory data" in response.get_json()["issue"][0]["diagnostics"]


def test_one_practitioner_per_rpps(world: ReachWorld) -> None:

    twin = {"resourceType": "Practitioner", "identifier": [{"system": RPPS, "value": "10000000001"}]}
    response = world.send("POST", "/fhir/Practitioner", twin)
    assert response.status_code == 409, response.get_json()


def test_her_audit_trail_does_not_name_a_patient_she_was_refused(
    world: ReachWorld, client: FlaskClient
) -> None:
    assert world.get(f"/fhir/Observation/{world.q_obs}").status_code == 403
    token = user_token(world.app, "user/*.cruds user/AuditEvent.rs", "alice")
    trail = client.get(f"/fhir/AuditEvent?entity=Observation/{world.q_obs}", headers=bearer(token))
    assert trail.status_code == 200, trail.get_json()
    assert trail.get_json().get("entry"), "her refused read is in her trail"
    assert world.q not in str(trail.get_json())
    guess = client.get(f"/fhir/AuditEvent?patient={world.q}", headers=bearer(token))
    assert guess.get_json().get("entry") is None


def test_a_stored_bundle_with_patient_data_is_for_system_clients(
    world: ReachWorld, client: FlaskClient
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}}],
    }
    stored = create_via(client, bundle)
    assert client.get(f"/fhir/Bundle/{stored}").status_code == 200
    assert world.get(f"/fhir/Bundle/{stored}").status_code == 403
