"""The write core called directly, without HTTP: an explicit Principal, its scopes, If-Match,
conditional create, and the create hooks create_app registers (the NdE intake)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from auth.policy import Principal
from auth.scopes import ScopeSet
from coordination_api.coordination.intake import nde
from coordination_api.core import principal, writes
from coordination_api.core.services import Hooks, Services
from coordination_api.errors import Category, FhirError
from coordination_api.storage.schema import resource
from fhir_profiles.french_identifiers import FINESS
from tests.support.messages import IPP_SYSTEM, NOS_R254, ins, patient

EVENT_TYPE = "https://interop.esante.gouv.fr/ig/fhir/nde/StructureDefinition/event-type"


def client_principal(scope: str) -> Principal:
    return Principal(client_id="core-tests", scopes=ScopeSet.parse(scope))


def services(app: Flask) -> Services:
    svc: Services = app.extensions["coordination"]
    return svc


def count(svc: Services, resource_type: str) -> int:
    with svc.repo.reading() as conn:
        found = conn.scalar(
            select(func.count()).select_from(resource).where(resource.c.res_type == resource_type)
        )
    return int(found or 0)


def practitioner(family: str = "Martin") -> dict[str, Any]:
    return {"resourceType": "Practitioner", "name": [{"family": family}]}


def test_create_update_and_conditional_create_with_a_principal(anonymous_client: FlaskClient) -> None:
    svc = services(anonymous_client.application)
    who = client_principal("system/Practitioner.cru")
    created = writes.create(svc, who, "Practitioner", {**practitioner(), "id": "ignored"})
    assert created.status == 201 and created.stored is not None
    first = created.stored
    assert first.version == 1 and first.res_id != "ignored"  # the server assigns the id (R4 3.1.0.7)

    body = {**practitioner("Durand"), "id": first.res_id}
    updated = writes.update(svc, who, "Practitioner", first.res_id, body, 'W/"1"')
    assert updated.status == 200 and updated.stored is not None and updated.stored.version == 2
    with pytest.raises(FhirError) as stale:
        writes.update(svc, who, "Practitioner", first.res_id, body, 'W/"1"')
    assert stale.value.category is Category.PRECONDITION_FAILED
    with pytest.raises(FhirError) as malformed:
        writes.update(svc, who, "Practitioner", first.res_id, body, "version one")
    assert malformed.value.category is Category.INVALID

    again = writes.create(svc, who, "Practitioner", practitioner(), if_none_exist="family=Durand")
    assert again.status == 200 and again.stored is not None and again.stored.res_id == first.res_id
    assert count(svc, "Practitioner") == 1


def test_the_scopes_refuse_before_anything_is_written(anonymous_client: FlaskClient) -> None:
    svc = services(anonymous_client.application)
    reader = client_principal("system/Practitioner.rs")
    with pytest.raises(FhirError) as refused:
        writes.create(svc, reader, "Practitioner", practitioner())
    assert refused.value.category is Category.FORBIDDEN
    with pytest.raises(FhirError) as not_deleted:
        writes.delete(svc, reader, "Practitioner", "any")
    assert not_deleted.value.category is Category.FORBIDDEN
    assert count(svc, "Practitioner") == 0

    writer = client_principal("system/Practitioner.c")
    with pytest.raises(FhirError) as invalid:
        writes.create(svc, writer, "Practitioner", {"resourceType": "Practitioner", "gender": "robot"})
    assert invalid.value.category is Category.STRUCTURE
    with pytest.raises(FhirError) as server_only:
        writes.create(svc, principal.UNRESTRICTED, "AuditEvent", {"resourceType": "AuditEvent"})
    assert server_only.value.category is Category.METHOD_NOT_ALLOWED
    assert writes.create(svc, writer, "Practitioner", practitioner()).status == 201


def test_conditional_update_and_delete_need_criteria(anonymous_client: FlaskClient) -> None:
    svc = services(anonymous_client.application)
    who = client_principal("system/Practitioner.cruds")
    with pytest.raises(FhirError) as no_put_criteria:
        writes.conditional_update(svc, who, "Practitioner", [], practitioner())
    assert no_put_criteria.value.category is Category.METHOD_NOT_ALLOWED
    with pytest.raises(FhirError) as no_delete_criteria:
        writes.conditional_delete(svc, who, "Practitioner", [])
    assert no_delete_criteria.value.category is Category.METHOD_NOT_ALLOWED
    made = writes.conditional_update(svc, who, "Practitioner", [("family", "Petit")], practitioner("Petit"))
    assert made.status == 201 and made.stored is not None
    gone = writes.conditional_delete(svc, who, "Practitioner", [("family", "Petit")])
    assert gone.stored is not None and gone.stored.deleted


def nde_request(identifier: str = "nde-core-1") -> dict[str, Any]:
    contained = patient(nir=ins())
    contained["id"] = "pat"
    return {
        "resourceType": "CommunicationRequest",
        "extension": [{"url": EVENT_TYPE, "valueCoding": {"system": NOS_R254, "code": "SOR"}}],
        "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.7.750100125.9", "value": identifier}],
        "contained": [
            contained,
            {
                "resourceType": "Organization",
                "id": "org",
                "identifier": [{"system": FINESS, "value": "750100125"}],
                "name": "Hôpital Nord",
            },
        ],
        "status": "active",
        "subject": {"reference": "#pat"},
        "sender": {"reference": "#org"},
        "occurrenceDateTime": "2026-11-20T11:30:00+01:00",
    }


def test_the_nde_hook_runs_on_a_create_through_core(anonymous_client: FlaskClient) -> None:
    app_svc = services(anonymous_client.application)
    assert nde.before_create in app_svc.hooks.before_create  # registered by create_app
    met: list[tuple[str, str]] = []
    # The app's hooks, and one of this test's own that records whom the intake met first.
    svc = replace(
        app_svc,
        hooks=Hooks(
            before_create=list(app_svc.hooks.before_create),
            new_party=[lambda _conn, _svc, kind, number: met.append((kind, number))],
        ),
    )
    who = client_principal("system/CommunicationRequest.c")  # no sender registered: may send as any
    first = writes.create(svc, who, "CommunicationRequest", nde_request())
    assert first.status == 201 and first.stored is not None
    stored = first.stored.json()
    with svc.repo.reading() as conn:
        patients = writes.find_matches(conn, svc, "Patient", [("identifier", f"{IPP_SYSTEM}|IPP0001")])
        encounters = writes.find_matches(conn, svc, "Encounter", [("_id:not", "none")])
    assert [p.res_id for p in patients] and stored["subject"]["reference"] == f"Patient/{patients[0].res_id}"
    assert stored["encounter"]["reference"] == f"Encounter/{encounters[0].res_id}"
    assert "contained" not in stored  # the Patient and the Organization were resolved
    assert met == [("Organization", "750100125")]

    resent = writes.create(svc, who, "CommunicationRequest", nde_request())
    assert resent.status == 200 and resent.stored is not None
    assert resent.stored.res_id == first.stored.res_id
    assert count(svc, "Encounter") == 1 and count(svc, "CommunicationRequest") == 1

    # Without the hook the same body is an ordinary CommunicationRequest: nothing else is written.
    plain = replace(app_svc, hooks=Hooks())
    other = writes.create(plain, who, "CommunicationRequest", nde_request("nde-core-2"))
    assert other.status == 201 and other.stored is not None
    assert other.stored.json()["subject"] == {"reference": "#pat"}
    assert count(plain, "Encounter") == 1


def test_the_request_principal_does_not_outlive_its_request(client: FlaskClient) -> None:
    assert principal.authenticated() is None
    response = client.post(
        "/fhir/Practitioner", json=practitioner(), headers={"Content-Type": "application/fhir+json"}
    )
    assert response.status_code == 201
    assert principal.authenticated() is None  # cleared at teardown: CLI and workers act as nobody
    with principal.acting_as(client_principal("system/*.r")):
        who = principal.authenticated()
        assert who is not None and who.client_id == "core-tests"
    assert principal.authenticated() is None
