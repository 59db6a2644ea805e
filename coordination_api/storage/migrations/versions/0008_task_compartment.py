"""Tasks join their patient's compartment (Task.for, search parameter ``patient``): rows for the Tasks
stored before, so that the care-team rule and $everything cover them too

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The reference index already holds Task.for (parameter "patient"): copy its Patient targets.
    op.execute(
        "INSERT INTO idx_compartment (res_pk, res_type, param, patient_id) "
        "SELECT DISTINCT r.res_pk, r.res_type, r.param, r.target_id FROM idx_reference r "
        "WHERE r.res_type = 'Task' AND r.param = 'patient' AND r.target_type = 'Patient' "
        "AND r.target_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM idx_compartment c "
        "WHERE c.res_pk = r.res_pk AND c.patient_id = r.target_id)"
    )


def downgrade() -> None:
    op.execute("DELETE FROM idx_compartment WHERE res_type = 'Task'")
