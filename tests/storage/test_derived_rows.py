"""The access policy's rows are an index hook of the repository (issue 20): create_app gives it the
producers of auth.policy, and every write of their types (create, update, delete) rewrites them in its
transaction. A repository cannot be built without saying which derived rows it keeps."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Column, Integer, MetaData, String, Table, select

from auth.schema import care_team_access, consent_deny, practitioner_affiliation, task_access
from coordination_api.search.registry import SearchRegistry
from coordination_api.storage.repository import Repository
from coordination_api.storage.schema import resource
from tests.conftest import Fhir
from tests.factories import consent

PATIENT = {"reference": "Patient/p1"}
DOCTOR = {"reference": "Practitioner/d1"}
CONSENT = consent("Patient/p1", {"type": "deny"})  # no actor: an opposition to everyone
# Per type: a body that derives rows, the same resource changed so that it derives none, the table
# and the columns compared, the rows expected.
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], Table, tuple[str, ...], list[tuple[Any, ...]]]] = {
    "CareTeam": (
        {
            "resourceType": "CareTeam",
            "status": "active",
            "subject": PATIENT,
            "participant": [{"member": DOCTOR}],
        },
        {"status": "inactive"},
        care_team_access,
        ("patient_id", "member"),
        [("p1", "Practitioner/d1")],
    ),
    "Consent": (CONSENT, {"status": "inactive"}, consent_deny, ("patient_id", "actor"), [("p1", "*")]),
    "PractitionerRole": (
        {
            "resourceType": "PractitionerRole",
            "practitioner": DOCTOR,
            "organization": {"reference": "Organization/o1"},
        },
        {"active": False},
        practitioner_affiliation,
        ("practitioner_id", "organization"),
        [("d1", "Organization/o1")],
    ),
    "Task": (
        {"resourceType": "Task", "status": "in-progress", "intent": "order", "for": PATIENT, "owner": DOCTOR},
        {"status": "completed"},
        task_access,
        ("patient_id", "member", "kind"),
        [("p1", "Practitioner/d1", "owner")],
    ),
}


def derived(app: Flask, table: Table, columns: tuple[str, ...], res_type: str, res_id: str) -> list[Any]:
    with app.extensions["coordination"].repo.engine.connect() as conn:
        pk = conn.execute(
            select(resource.c.pk).where(resource.c.res_type == res_type, resource.c.res_id == res_id)
        ).scalar_one()
        rows = conn.execute(select(*(table.c[c] for c in columns)).where(table.c.res_pk == pk)).all()
    return sorted(tuple(r) for r in rows)


@pytest.mark.parametrize("res_type", sorted(CASES))
def test_each_write_keeps_the_policy_rows_in_step(fhir: Fhir, app: Flask, res_type: str) -> None:
    body, change, table, columns, expected = CASES[res_type]
    fhir.create({"resourceType": "Patient", "id": "p1"}, **{"If-None-Exist": "_id=p1"})
    created = fhir.create(body)
    res_id = created["id"]
    assert derived(app, table, columns, res_type, res_id) == expected
    put = fhir.request("PUT", f"/fhir/{res_type}/{res_id}", {**created, **change})
    assert put.status_code == 200, put.get_json()
    assert derived(app, table, columns, res_type, res_id) == []
    put = fhir.request("PUT", f"/fhir/{res_type}/{res_id}", {**created, "id": res_id})
    assert put.status_code == 200, put.get_json()
    assert derived(app, table, columns, res_type, res_id) == expected
    assert fhir.request("DELETE", f"/fhir/{res_type}/{res_id}").status_code in (200, 204)
    assert derived(app, table, columns, res_type, res_id) == []


def test_the_app_registers_the_policy_rows_of_each_type(app: Flask) -> None:
    repo: Repository = app.extensions["coordination"].repo
    assert {t: table.name for t, (table, _rows) in repo.derived.items()} == {
        "CareTeam": "care_team_access",
        "Consent": "consent_deny",
        "PractitionerRole": "practitioner_affiliation",
        "Task": "task_access",
    }


def test_a_repository_is_built_with_its_derived_rows_or_not_at_all(app: Flask) -> None:
    engine = app.extensions["coordination"].repo.engine
    registry = SearchRegistry.default(frozenset({"CareTeam"}))
    with pytest.raises(TypeError):
        Repository(engine, registry)  # type: ignore[call-arg]
    # Rows the repository could not clear on the next write: refused at once.
    keyless = Table("keyless", MetaData(), Column("patient_id", String(64)), Column("n", Integer))
    with pytest.raises(ValueError, match="res_pk"):
        Repository(engine, registry, derived={"CareTeam": (keyless, lambda _body: [])})
