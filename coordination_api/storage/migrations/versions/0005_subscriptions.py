"""subscriptions: per-Subscription state (status, event counter) and the notification outbox

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "subscription_state",
        sa.Column("res_pk", PK, autoincrement=False, nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("topic", sa.String(length=512), nullable=True),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("heartbeat_s", sa.Integer(), nullable=True),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("handshake_due", sa.Boolean(), nullable=False),
        sa.Column("lease_until", sa.BigInteger(), nullable=True),
        sa.Column("last_sent_us", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("max_count", sa.Integer(), nullable=False),
        sa.Column("end_us", sa.BigInteger(), nullable=True),
        sa.Column("owner_client", sa.String(length=255), nullable=True),
        sa.Column("owner_practitioner", sa.String(length=64), nullable=True),
        sa.Column("owner_patient", sa.String(length=64), nullable=True),
        sa.Column("owner_scopes", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["res_pk"], ["resource.pk"], name=op.f("fk_subscription_state_res_pk"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("res_pk", name=op.f("pk_subscription_state")),
    )
    op.create_index(
        op.f("ix_subscription_state_status_resource_type"),
        "subscription_state",
        ["status", "resource_type"],
        unique=False,
    )
    op.create_table(
        "subscription_outbox",
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("sub_pk", PK, nullable=False),
        sa.Column("event_number", sa.BigInteger(), nullable=False),
        sa.Column("focus", sa.String(length=512), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_us", sa.BigInteger(), nullable=False),
        sa.Column("lease_until", sa.BigInteger(), nullable=True),
        sa.Column("first_failure_us", sa.BigInteger(), nullable=True),
        sa.Column("delivered_us", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["sub_pk"],
            ["subscription_state.res_pk"],
            name=op.f("fk_subscription_outbox_sub_pk"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_subscription_outbox")),
        sa.UniqueConstraint(
            "sub_pk", "event_number", name=op.f("uq_subscription_outbox_sub_pk_event_number")
        ),
    )
    op.create_index(
        op.f("ix_subscription_outbox_status_next_attempt_us"),
        "subscription_outbox",
        ["status", "next_attempt_us"],
        unique=False,
    )
    op.create_index(
        op.f("ix_subscription_outbox_sub_pk_status_event_number"),
        "subscription_outbox",
        ["sub_pk", "status", "event_number"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("subscription_outbox")
    op.drop_table("subscription_state")
