"""bulk export: Bulk Data $export jobs and the patients a Patient/Group-level job is limited to

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bulk_export_job",
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("owner_client", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("request_url", sa.Text(), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("transaction_us", sa.BigInteger(), nullable=False),
        sa.Column("max_pk", sa.BigInteger(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("finished_us", sa.BigInteger(), nullable=True),
        sa.Column("expires_us", sa.BigInteger(), nullable=True),
        sa.Column("lease_until", sa.BigInteger(), nullable=True),
        sa.Column("restarts", sa.Integer(), nullable=False),
        sa.Column("progress", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_bulk_export_job")),
        sa.UniqueConstraint("job_id", name=op.f("uq_bulk_export_job_job_id")),
    )
    op.create_index(op.f("ix_bulk_export_job_status_created_us"), "bulk_export_job", ["status", "created_us"])
    op.create_index(
        op.f("ix_bulk_export_job_owner_client_status"), "bulk_export_job", ["owner_client", "status"]
    )
    op.create_table(
        "bulk_export_patient",
        sa.Column("job_pk", PK, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_pk"],
            ["bulk_export_job.pk"],
            name=op.f("fk_bulk_export_patient_job_pk"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_pk", "patient_id", name=op.f("pk_bulk_export_patient")),
    )


def downgrade() -> None:
    op.drop_table("bulk_export_patient")
    op.drop_index(op.f("ix_bulk_export_job_owner_client_status"), table_name="bulk_export_job")
    op.drop_index(op.f("ix_bulk_export_job_status_created_us"), table_name="bulk_export_job")
    op.drop_table("bulk_export_job")
