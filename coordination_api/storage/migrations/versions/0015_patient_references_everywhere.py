"""Compartments as a class (review 17, R3): a resource stored before this revision joins the compartment
of every patient it names anywhere, and of what its Reference(Any) elements follow (Provenance.target,
AuditEvent.entity.what, ...), whatever its type (docs/security.md, "Compartments").

Current rows gain the new compartment rows (``#reference``, ``#follows``) and the reference rows
through which followers are kept in step; a Binary's followed securityContext rows become ``#follows``
rows. Every stored version gains the patients its own content names plus its resource's compartments at
upgrade time (more compartments only ever narrow who may read a version).

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

# The current compartment rule and the values it writes: this revision re-indexes compartments as
# the current code makes them (helpers/reindex.py), on the tables as they are at this revision.
from coordination_api.storage import indexer
from coordination_api.storage.migrations.helpers.reindex import insert_rows, reflected

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

CHUNK = 500
MAX_ROUNDS = 8


def upgrade() -> None:
    conn = op.get_bind()
    c, r, hc, resource = (
        reflected(conn, name)
        for name in ("idx_compartment", "idx_reference", "history_compartment", "resource")
    )
    # A Binary's compartments taken from a non-Patient securityContext (or UNRESOLVED while it was
    # not here) are followed ones: they move when it does.
    conn.execute(
        sa.update(c)
        .where(
            c.c.res_type == "Binary",
            c.c.param == indexer.SECURITY_CONTEXT,
            c.c.res_pk.in_(
                sa.select(r.c.res_pk).where(
                    r.c.param == indexer.SECURITY_CONTEXT,
                    r.c.res_type == "Binary",
                    r.c.target_type != "Patient",
                )
            ),
        )
        .values(param=indexer.FOLLOWS)
    )
    # Named patients and follow rows of the current versions.
    last = 0
    while True:
        rows = conn.execute(
            sa.select(resource.c.pk, resource.c.res_type, resource.c.content)
            .where(resource.c.pk > last, resource.c.deleted == sa.false())
            .order_by(resource.c.pk)
            .limit(CHUNK)
        ).all()
        if not rows:
            break
        last = rows[-1][0]
        held: dict[int, set[str]] = {}
        for pk, patient in conn.execute(
            sa.select(c.c.res_pk, c.c.patient_id).where(c.c.res_pk.in_([row[0] for row in rows]))
        ):
            held.setdefault(pk, set()).add(patient)
        compartments: list[dict[str, Any]] = []
        references: list[dict[str, Any]] = []
        for pk, res_type, content in rows:
            body = orjson.loads(content)
            fresh = indexer.named_rows(res_type, body)
            mine = held.get(pk, set())
            for row in fresh.get("compartment", []):
                if row["patient_id"] not in mine and (
                    row["param"] == indexer.NAMES_PATIENT or res_type == "Bundle"
                ):
                    compartments.append({**row, "res_pk": pk})
                    mine.add(row["patient_id"])
            if res_type != "Binary":
                references.extend(
                    {**row, "res_pk": pk}
                    for row in fresh.get("reference", [])
                    if row["param"] == indexer.FOLLOWS
                )
        insert_rows(conn, c, compartments)
        insert_rows(conn, r, references)
    # Followers take the compartments of what they follow, round by round (chains of followers).
    for _round in range(MAX_ROUNDS):
        changed = False
        followers = conn.execute(
            sa.select(r.c.res_pk, r.c.res_type, r.c.target_type, r.c.target_id)
            .where(r.c.param.in_((indexer.FOLLOWS, indexer.SECURITY_CONTEXT)), r.c.target_type != "Patient")
            .order_by(r.c.res_pk)
        ).all()
        wanted: dict[int, tuple[str, set[str]]] = {}
        for pk, res_type, target_type, target_id in followers:
            target = conn.execute(
                sa.select(resource.c.pk).where(
                    resource.c.res_type == target_type, resource.c.res_id == target_id
                )
            ).scalar()
            patients = (
                {indexer.UNRESOLVED}
                if target is None
                else set(conn.execute(sa.select(c.c.patient_id).where(c.c.res_pk == target)).scalars())
            )
            wanted.setdefault(pk, (res_type, set()))[1].update(patients)
        for pk, (res_type, patients) in wanted.items():
            mine = set(conn.execute(sa.select(c.c.patient_id).where(c.c.res_pk == pk)).scalars())
            new = sorted(patients - mine)
            if new:
                changed = True
                insert_rows(
                    conn,
                    c,
                    [
                        {"res_pk": pk, "res_type": res_type, "param": indexer.FOLLOWS, "patient_id": p}
                        for p in new
                    ],
                )
        if not changed:
            break
    # Every version: its own named patients, and its resource's compartments now.
    last = 0
    while True:
        versions = conn.execute(
            sa.text(
                "SELECT res_pk, version, res_type, content FROM resource_history WHERE res_pk > :last "
                "ORDER BY res_pk, version LIMIT :n"
            ),
            {"last": last, "n": CHUNK},
        ).all()
        if not versions:
            break
        # Whole resources per chunk: the last res_pk may be cut, take the rest of it too.
        last = versions[-1][0]
        pks = sorted({v[0] for v in versions})
        current: dict[int, set[str]] = {}
        for pk, patient in conn.execute(sa.select(c.c.res_pk, c.c.patient_id).where(c.c.res_pk.in_(pks))):
            current.setdefault(pk, set()).add(patient)
        recorded: set[tuple[int, int, str]] = {
            (pk, version, patient)
            for pk, version, patient in conn.execute(
                sa.select(hc.c.res_pk, hc.c.version, hc.c.patient_id).where(hc.c.res_pk.in_(pks))
            )
        }
        rest = conn.execute(
            sa.text(
                "SELECT res_pk, version, res_type, content FROM resource_history "
                "WHERE res_pk = :pk AND version > :v"
            ),
            {"pk": last, "v": versions[-1][1]},
        ).all()
        add: list[dict[str, Any]] = []
        for pk, version, res_type, content in [*versions, *rest]:
            patients = set(current.get(pk, set()))
            if content is not None:
                fresh = indexer.named_rows(res_type, orjson.loads(content))
                patients |= {row["patient_id"] for row in fresh.get("compartment", [])}
            for patient in sorted(patients):
                if (pk, version, patient) not in recorded:
                    recorded.add((pk, version, patient))
                    add.append({"res_pk": pk, "version": version, "patient_id": patient})
        insert_rows(conn, hc, add)


def downgrade() -> None:
    op.execute(
        sa.text("DELETE FROM idx_compartment WHERE param IN (:a, :b)").bindparams(
            a=indexer.NAMES_PATIENT, b=indexer.FOLLOWS
        )
    )
    op.execute(sa.text("DELETE FROM idx_reference WHERE param = :a").bindparams(a=indexer.FOLLOWS))
    # history_compartment keeps its added rows: they only narrow who may read a version.
