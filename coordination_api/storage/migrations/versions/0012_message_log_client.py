"""message senders bound to clients: message_log keyed by (client, sender, message id);
oauth_client_sender lists the senders each client may send as (issue 16)

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_client_sender",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("sender", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "sender", name=op.f("pk_oauth_client_sender")),
    )
    # Rows written before: their client is unknown (''), so that a client's message with the same
    # sender and id is processed again rather than swallowed.
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot change a primary key in place: copy into a new table.
        op.rename_table("message_log", "message_log_0011")
        _create()
        op.execute(
            "INSERT INTO message_log (client, sender, message_id, kind, received_us, outcome) "
            "SELECT '', sender, message_id, kind, received_us, outcome FROM message_log_0011"
        )
        op.drop_table("message_log_0011")
    else:
        op.add_column(
            "message_log", sa.Column("client", sa.String(length=255), nullable=False, server_default="")
        )
        op.alter_column("message_log", "client", server_default=None)
        op.drop_constraint("pk_message_log", "message_log", type_="primary")
        op.create_primary_key("pk_message_log", "message_log", ["client", "sender", "message_id"])


def _create() -> None:
    op.create_table(
        "message_log",
        sa.Column("client", sa.String(length=255), nullable=False),
        sa.Column("sender", sa.String(length=255), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("received_us", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("client", "sender", "message_id", name=op.f("pk_message_log")),
    )


def downgrade() -> None:
    op.drop_table("oauth_client_sender")
    op.drop_table("message_log")
    op.create_table(
        "message_log",
        sa.Column("sender", sa.String(length=255), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("received_us", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("sender", "message_id", name=op.f("pk_message_log")),
    )
