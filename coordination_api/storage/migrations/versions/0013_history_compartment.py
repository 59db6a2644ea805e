"""Each version's own compartments (history_compartment): vread and history judge a version by the
patients whose compartment held it, not by where the resource is now (issue 16)

Versions written before this revision get the compartments their resource has at upgrade time (what
the server used for them until now); every later write records its own.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "history_compartment",
        sa.Column(
            "res_pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("resource.pk", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("res_pk", "version", "patient_id"),
    )
    op.execute(
        "INSERT INTO history_compartment (res_pk, version, patient_id) "
        "SELECT DISTINCT h.res_pk, h.version, c.patient_id FROM resource_history h "
        "JOIN idx_compartment c ON c.res_pk = h.res_pk"
    )


def downgrade() -> None:
    op.drop_table("history_compartment")
