"""Search indexes for large databases: date upper bounds, covering string index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # gt/ge/eb on dates compare the range's upper bound.
    op.create_index("ix_idx_date_param_high", "idx_date", ["param", "high"])
    # PostgreSQL: carry res_pk in the string index so name searches are index-only scans.
    op.drop_index("ix_idx_string_param_value_norm", table_name="idx_string")
    op.create_index(
        "ix_idx_string_param_value_norm",
        "idx_string",
        ["param", "value_norm"],
        postgresql_ops={"value_norm": "varchar_pattern_ops"},
        postgresql_include=["res_pk"],
    )


def downgrade() -> None:
    op.drop_index("ix_idx_string_param_value_norm", table_name="idx_string")
    op.create_index(
        "ix_idx_string_param_value_norm",
        "idx_string",
        ["param", "value_norm"],
        postgresql_ops={"value_norm": "varchar_pattern_ops"},
    )
    op.drop_index("ix_idx_date_param_high", table_name="idx_date")
