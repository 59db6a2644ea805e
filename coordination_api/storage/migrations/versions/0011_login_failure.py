"""login failure counters: per (username, address) and per username, for the login lockout backoff

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failure",
        sa.Column("username", sa.String(length=150), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("username", "address", name=op.f("pk_login_failure")),
    )
    op.create_index(op.f("ix_login_failure_updated_at"), "login_failure", ["updated_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_login_failure_updated_at"), table_name="login_failure")
    op.drop_table("login_failure")
