"""Data migrations: what an existing database gains when it is upgraded."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete, select

from coordination_api.app import create_app
from coordination_api.config import Settings
from coordination_api.storage.migrate import upgrade
from coordination_api.storage.schema import idx_compartment


def test_0008_puts_tasks_stored_before_into_their_patients_compartment(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'old.db'}", security_disabled=True))
    repo = app.extensions["coordination"].repo
    upgrade(repo.engine, "0007")
    with repo.writing() as conn:
        task = repo.create(
            conn,
            "Task",
            {
                "resourceType": "Task",
                "status": "completed",
                "intent": "order",
                "for": {"reference": "Patient/p1"},
            },
        )
        # As a database written before Task joined the Patient compartment.
        conn.execute(delete(idx_compartment).where(idx_compartment.c.res_pk == task.pk))
    upgrade(repo.engine)
    with repo.engine.connect() as conn:
        rows = conn.execute(
            select(idx_compartment.c.patient_id, idx_compartment.c.param).where(
                idx_compartment.c.res_pk == task.pk
            )
        ).all()
    assert [tuple(r) for r in rows] == [("p1", "patient")]
    repo.engine.dispose()
