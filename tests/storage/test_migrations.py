"""Data migrations: what an existing database gains when it is upgraded."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import insert, select

from coordination_api.app import create_app
from coordination_api.config import Settings
from coordination_api.storage.migrate import upgrade
from coordination_api.storage.schema import idx_compartment, idx_reference, resource


def test_0008_puts_tasks_stored_before_into_their_patients_compartment(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'old.db'}", security_disabled=True))
    repo = app.extensions["coordination"].repo
    upgrade(repo.engine, "0007")
    with repo.engine.begin() as conn:
        # As a database written before Task joined the Patient compartment: the resource and its
        # reference row, no compartment row (rows written as the code of that revision did).
        pk = conn.execute(
            insert(resource).values(
                res_type="Task", res_id="t1", version=1, last_updated=1, deleted=False, content="{}"
            )
        ).inserted_primary_key[0]
        conn.execute(
            insert(idx_reference).values(
                res_pk=pk, res_type="Task", param="patient", target_type="Patient", target_id="p1"
            )
        )
    upgrade(repo.engine)
    with repo.engine.connect() as conn:
        rows = conn.execute(
            select(idx_compartment.c.patient_id, idx_compartment.c.param).where(
                idx_compartment.c.res_pk == pk
            )
        ).all()
    assert [tuple(r) for r in rows] == [("p1", "patient")]
    repo.engine.dispose()
