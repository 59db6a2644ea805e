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

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TABLES = ("idx_string", "idx_token", "idx_date", "idx_reference", "idx_number", "idx_quantity", "idx_uri")
BATCH = 500


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("elem", sa.Integer(), nullable=True))
    _backfill()


def _backfill() -> None:
    import orjson

    from coordination_api.fhir.resources import supported_types
    from coordination_api.search.registry import SearchRegistry
    from coordination_api.storage.indexer import composite_rows, identifier_param
    from coordination_api.storage.schema import INDEX_TABLES

    registry = SearchRegistry.default(supported_types())
    conn = op.get_bind()
    for res_type in sorted(registry.resource_types):
        if not any(p.type == "composite" or identifier_param(p) for p in registry.params(res_type).values()):
            continue
        last = 0
        while True:
            chunk = conn.execute(
                sa.text(
                    "SELECT pk, content FROM resource WHERE res_type = :t AND deleted = :f AND pk > :last "
                    "ORDER BY pk LIMIT :n"
                ),
                {"t": res_type, "f": False, "last": last, "n": BATCH},
            ).all()
            if not chunk:
                break
            batched: dict[str, list[dict[str, object]]] = {}
            for pk, content in chunk:
                if content is None:
                    continue
                for kind, rows in composite_rows(registry, res_type, orjson.loads(content)).items():
                    batched.setdefault(kind, []).extend({**row, "res_pk": pk} for row in rows)
            for kind, rows in batched.items():
                conn.execute(sa.insert(INDEX_TABLES[kind]), rows)
            last = chunk[-1][0]


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DELETE FROM {table} WHERE elem IS NOT NULL")
        with op.batch_alter_table(table) as batch:
            batch.drop_column("elem")
