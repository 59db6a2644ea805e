"""Composite search parameters (R4 search.html#composite) and ``:of-type``: index rows carry the ordinal
of the element they came from (``elem``); the rows of the composites' components and of typed
Identifiers are written for the resources stored before (issue 18)

Each resource of a type with composite or identifier parameters is read once: on a large store this
runs for a while (one pass, in batches).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from coordination_api.storage.indexer import composite_rows, identifier_param
from coordination_api.storage.migrations.helpers.reindex import (
    index_tables,
    registry_for,
    reindex,
    stored_types,
)

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TABLES = ("idx_string", "idx_token", "idx_date", "idx_reference", "idx_number", "idx_quantity", "idx_uri")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("elem", sa.Integer(), nullable=True))
    _backfill()


def _backfill() -> None:
    """The current indexer's composite and ``:of-type`` rows (a re-index: helpers/reindex.py)."""
    conn = op.get_bind()
    tables = index_tables(conn)
    for res_type in stored_types(conn):
        registry = registry_for(res_type)
        if any(p.type == "composite" or identifier_param(p) for p in registry.params(res_type).values()):
            reindex(conn, tables, registry, res_type, composite_rows, replace=False)


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DELETE FROM {table} WHERE elem IS NOT NULL")
        with op.batch_alter_table(table) as batch:
            batch.drop_column("elem")
