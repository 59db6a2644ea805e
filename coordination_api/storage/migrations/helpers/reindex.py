"""Re-indexing for migrations (0014, 0015, 0016): the one loop that rewrites a resource type's index rows
for the resources stored before a revision.

Index rows are what the current code searches, so the rows come from the current indexer (the
``rows_of`` a migration passes) and the registry of the official R4 search parameters: legitimately
live code. What is frozen is the rest: the loop, the index tables' names, and the columns written,
which are those of the tables as they are in the database at the migration's revision (reflected), so
that a column the indexer gains later (and the migration that adds it) does not break this one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson
import sqlalchemy as sa

from coordination_api.search.registry import SearchRegistry

BATCH = 500

# Search-parameter index kinds and their tables (compartment rows do not depend on search parameters).
INDEX_TABLE_NAMES = {
    "string": "idx_string",
    "token": "idx_token",
    "date": "idx_date",
    "reference": "idx_reference",
    "number": "idx_number",
    "quantity": "idx_quantity",
    "uri": "idx_uri",
}

RowsOf = Callable[[SearchRegistry, str, dict[str, Any]], Mapping[str, list[dict[str, Any]]]]


def reflected(conn: sa.Connection, name: str) -> sa.Table:
    """The table as it is in the database now, at the running migration's revision."""
    return sa.Table(name, sa.MetaData(), autoload_with=conn)


def index_tables(conn: sa.Connection) -> dict[str, sa.Table]:
    return {kind: reflected(conn, name) for kind, name in INDEX_TABLE_NAMES.items()}


def insert_rows(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows``, keeping the columns ``table`` has (the indexer may know newer ones)."""
    if not rows:
        return
    columns = set(table.c.keys())
    conn.execute(sa.insert(table), [{k: v for k, v in row.items() if k in columns} for row in rows])


def stored_types(conn: sa.Connection) -> list[str]:
    """The resource types of the current, not deleted resources (the only ones with index rows)."""
    return list(
        conn.execute(
            sa.text("SELECT DISTINCT res_type FROM resource WHERE deleted = :f ORDER BY res_type"),
            {"f": False},
        ).scalars()
    )


def registry_for(res_type: str) -> SearchRegistry:
    """The search parameters of one type (a type's parameters do not depend on the other types)."""
    return SearchRegistry.default(frozenset({res_type}))


def reindex(
    conn: sa.Connection,
    tables: Mapping[str, sa.Table],
    registry: SearchRegistry,
    res_type: str,
    rows_of: RowsOf,
    *,
    replace: bool,
    containing: tuple[str, ...] = (),
) -> None:
    """Write the index rows ``rows_of`` makes for every current ``res_type`` resource, in batches;
    with ``replace``, their search-parameter rows are deleted first (as a write of them would).
    ``containing``: only the resources whose stored JSON holds one of these strings."""
    last = 0
    only = " OR ".join(f"content LIKE :c{i}" for i in range(len(containing)))
    likes = {f"c{i}": f"%{text}%" for i, text in enumerate(containing)}
    while True:
        chunk = conn.execute(
            sa.text(
                "SELECT pk, content FROM resource WHERE res_type = :t AND deleted = :f AND pk > :last "
                + (f"AND ({only}) " if only else "")
                + "ORDER BY pk LIMIT :n"
            ),
            {"t": res_type, "f": False, "last": last, "n": BATCH, **likes},
        ).all()
        if not chunk:
            return
        if replace:
            pks = [pk for pk, _content in chunk]
            for table in tables.values():
                conn.execute(sa.delete(table).where(table.c.res_pk.in_(pks)))
        batched: dict[str, list[dict[str, Any]]] = {}
        for pk, content in chunk:
            if content is None:
                continue
            for kind, rows in rows_of(registry, res_type, orjson.loads(content)).items():
                if kind in tables:
                    batched.setdefault(kind, []).extend({**row, "res_pk": pk} for row in rows)
        for kind, rows in batched.items():
            insert_rows(conn, tables[kind], rows)
        last = chunk[-1][0]
