"""Migrations run on frozen helpers (coordination_api/storage/migrations/helpers/), not on the live
rules: a database written before 0003 upgrades to head, whatever the access policy became since, and
gains the policy rows of what it held (0003 for care teams, oppositions and roles, 0006 for Tasks)."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, select, text

from auth.schema import care_team_access, consent_deny, practitioner_affiliation, task_access
from coordination_api.storage.migrate import is_current, upgrade
from coordination_api.storage.schema import idx_compartment, idx_token

PATIENT = {"reference": "Patient/p1"}
DOCTOR = {"reference": "Practitioner/d1"}
BODIES: list[dict[str, Any]] = [
    {
        "resourceType": "CareTeam",
        "id": "ct",
        "status": "active",
        "subject": PATIENT,
        "participant": [{"member": DOCTOR, "period": {"start": "2024"}}],
    },
    {
        "resourceType": "Consent",
        "id": "co",
        "status": "active",
        "patient": PATIENT,
        "provision": {"type": "deny", "actor": [{"reference": {"reference": "Organization/o1"}}]},
    },
    {
        "resourceType": "PractitionerRole",
        "id": "pr",
        "practitioner": DOCTOR,
        "organization": {"reference": "Organization/o1"},
    },
    # A Task stored before 0003: its reach rows are 0006's (the table does not exist at 0003); its
    # typed identifier gets its ``:of-type`` rows from 0014's re-index.
    {
        "resourceType": "Task",
        "id": "ta",
        "identifier": [{"type": {"coding": [{"system": "urn:x", "code": "MR"}]}, "value": "T-1"}],
        "status": "in-progress",
        "intent": "order",
        "for": PATIENT,
        "owner": DOCTOR,
    },
]


def test_a_database_from_before_0003_gains_its_policy_rows(empty_engine: Engine) -> None:
    upgrade(empty_engine, "0002")
    pks: dict[str, int] = {}
    with empty_engine.begin() as conn:
        for body in BODIES:
            conn.execute(
                text(
                    "INSERT INTO resource (res_type, res_id, version, last_updated, deleted, content) "
                    "VALUES (:t, :i, 1, 1, :f, :c)"
                ),
                {"t": body["resourceType"], "i": body["id"], "f": False, "c": orjson.dumps(body).decode()},
            )
            pks[body["resourceType"]] = conn.execute(
                text("SELECT pk FROM resource WHERE res_id = :i"), {"i": body["id"]}
            ).scalar_one()
        # The reference row the code of that revision wrote for CareTeam.subject.
        conn.execute(
            text(
                "INSERT INTO idx_reference (res_pk, res_type, param, target_type, target_id) "
                "VALUES (:pk, 'CareTeam', 'patient', 'Patient', 'p1')"
            ),
            {"pk": pks["CareTeam"]},
        )
    upgrade(empty_engine)
    assert is_current(empty_engine)
    with empty_engine.connect() as conn:
        ct = care_team_access.c
        assert conn.execute(select(ct.res_pk, ct.patient_id, ct.member, ct.end_us)).all() == [
            (pks["CareTeam"], "p1", "Practitioner/d1", None)
        ]
        cd = consent_deny.c
        assert conn.execute(select(cd.res_pk, cd.patient_id, cd.actor)).all() == [
            (pks["Consent"], "p1", "Organization/o1")
        ]
        pa = practitioner_affiliation.c
        assert conn.execute(select(pa.res_pk, pa.practitioner_id, pa.role_id, pa.organization)).all() == [
            (pks["PractitionerRole"], "d1", "pr", "Organization/o1")
        ]
        ta = task_access.c
        assert conn.execute(select(ta.res_pk, ta.patient_id, ta.member, ta.kind)).all() == [
            (pks["Task"], "p1", "Practitioner/d1", "owner")
        ]
        tk = idx_token.c
        assert sorted(
            conn.execute(
                select(tk.param, tk.code, tk.elem).where(tk.res_pk == pks["Task"], tk.elem.isnot(None))
            )
        ) == [("identifier:of-type$0", "MR", 0), ("identifier:of-type$1", "T-1", 0)]
        ic = idx_compartment.c
        assert ("p1", "patient") in conn.execute(
            select(ic.patient_id, ic.param).where(ic.res_pk == pks["CareTeam"])
        ).all()
