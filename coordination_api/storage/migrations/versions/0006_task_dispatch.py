"""task dispatch: the dispatch state of open Tasks, and the patient reach Tasks give (offers, owners)

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import orjson
import sqlalchemy as sa
from alembic import op

from coordination_api.storage.migrations.helpers.policy_rows import task_access_rows

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "task_dispatch",
        sa.Column("task_pk", PK, autoincrement=False, nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("entered_us", sa.BigInteger(), nullable=False),
        sa.Column("stage_since_us", sa.BigInteger(), nullable=False),
        sa.Column("next_due_us", sa.BigInteger(), nullable=True),
        sa.Column("lease_until", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_pk"], ["resource.pk"], name=op.f("fk_task_dispatch_task_pk"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_pk", name=op.f("pk_task_dispatch")),
    )
    op.create_index(op.f("ix_task_dispatch_next_due_us"), "task_dispatch", ["next_due_us"], unique=False)
    task_access = op.create_table(
        "task_access",
        sa.Column("res_pk", PK, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("member", sa.String(length=140), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("start_us", sa.BigInteger(), nullable=True),
        sa.Column("end_us", sa.BigInteger(), nullable=True),
    )
    op.create_index(
        op.f("ix_task_access_member_patient_id"), "task_access", ["member", "patient_id"], unique=False
    )
    op.create_index(op.f("ix_task_access_res_pk"), "task_access", ["res_pk"], unique=False)
    # Tasks stored before this revision give their owners reach too.
    resource = sa.table(
        "resource", sa.column("pk"), sa.column("res_type"), sa.column("deleted"), sa.column("content")
    )
    rows = op.get_bind().execute(
        sa.select(resource.c.pk, resource.c.content).where(
            resource.c.res_type == "Task", resource.c.deleted == sa.false()
        )
    )
    derived = [
        {**row, "res_pk": pk}
        for pk, content in rows
        if content
        for row in task_access_rows(orjson.loads(content))
    ]
    if derived:
        op.bulk_insert(task_access, derived)


def downgrade() -> None:
    op.drop_table("task_access")
    op.drop_table("task_dispatch")
