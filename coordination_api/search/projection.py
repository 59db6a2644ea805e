"""A search's matches as a few of their index values, without reading the resources.

A worklist ranks hundreds of rows and shows a few dozen: reading (and parsing) every matching resource
to rank them was most of its time (issue 22: the coordinator's page read 1,300 resources to show 200
rows, then 3,000 Tasks to count them). The index tables already hold what a ranking needs (a status
code, a date range, a reference), written by the same indexer the search reads; the matches are the
compiled query's, access filters included, so a projection answers for exactly the resources the
search would return. Each is one statement: the database does the per-row work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, String, cast, distinct, func, null, select, union_all
from sqlalchemy.engine import Connection

from coordination_api.search.query import SearchQuery
from coordination_api.storage.schema import idx_compartment, idx_date, idx_reference, idx_token, resource


@dataclass(frozen=True)
class Projected:
    """One match: its identity and the values asked for, by name (None when not indexed)."""

    pk: int
    res_type: str
    res_id: str
    values: dict[str, Any]


@dataclass(frozen=True)
class Projection:
    """The first ``query.count`` matches in the query's sort order, and whether more matched."""

    matches: list[Projected]
    has_next: bool


@dataclass(frozen=True)
class Tally:
    """Of the matches pointing at one target: how many have one status, and their earliest date."""

    target_id: str
    code: str
    count: int
    earliest: int | None  # µs, the lowest ``low`` of the date parameter


def code_of(param: str) -> ColumnElement[Any]:
    """The match's code for a one-valued token parameter (a status)."""
    t = idx_token.alias()
    return select(func.min(t.c.code)).where(t.c.res_pk == resource.c.pk, t.c.param == param).scalar_subquery()


def end_of(param: str) -> ColumnElement[Any]:
    """The latest ``high`` (µs) of a date parameter."""
    d = idx_date.alias()
    return select(func.max(d.c.high)).where(d.c.res_pk == resource.c.pk, d.c.param == param).scalar_subquery()


def target_of(param: str, target_type: str) -> ColumnElement[Any]:
    """The id of the ``target_type`` resource a reference parameter points at."""
    r = idx_reference.alias()
    return (
        select(func.min(r.c.target_id))
        .where(r.c.res_pk == resource.c.pk, r.c.param == param, r.c.target_type == target_type)
        .scalar_subquery()
    )


def project(conn: Connection, query: SearchQuery, columns: dict[str, ColumnElement[Any]]) -> Projection:
    """The first page of ``query`` (its ``_count`` and ``_sort``), each match with ``columns``
    (``code_of``, ``end_of``, ``target_of``) evaluated on it."""
    page = [row[0] for row in conn.execute(query.select_page(query.count + 1))]
    has_next = len(page) > query.count
    page = page[: query.count]
    names = list(columns)
    rows: dict[int, Any] = {}
    for start in range(0, len(page), CHUNK):
        stmt = select(
            resource.c.pk, resource.c.res_type, resource.c.res_id, *(columns[n].label(n) for n in names)
        ).where(resource.c.pk.in_(page[start : start + CHUNK]))
        rows.update((row[0], row) for row in conn.execute(stmt))
    out = [
        Projected(pk, rows[pk][1], rows[pk][2], {n: rows[pk][3 + i] for i, n in enumerate(names)})
        for pk in page
        if pk in rows
    ]
    return Projection(out, has_next)


CHUNK = 500  # pks per IN list (well under every driver's bind limit)


def tally(
    conn: Connection,
    query: SearchQuery,
    by: tuple[str, str],
    targets: list[str],
    status: str,
    date: str | None = None,
) -> tuple[list[Tally], set[str]]:
    """The matches of ``query`` whose ``by = (reference parameter, target type)`` points at one of
    ``targets`` (ids), grouped by target and by the ``status`` token's code: how many, and the
    earliest ``date`` among them; and the patients whose data was counted (for the audit).

    One statement driven by the reference index (the targets are few, the type's rows many): the
    matches are found once (a CTE read twice), their patients listed below the counts."""
    ref = idx_reference.alias()
    matched = (
        select(ref.c.res_pk, ref.c.target_id)
        .select_from(ref.join(resource, resource.c.pk == ref.c.res_pk))
        .where(
            ref.c.param == by[0],
            ref.c.res_type == query.resource_type,
            ref.c.target_type == by[1],
            ref.c.target_id.in_(targets),
            *query.conditions(),
        )
        .cte("matched")
    )
    tok = idx_token.alias()
    source = matched.join(tok, (tok.c.res_pk == matched.c.res_pk) & (tok.c.param == status))
    earliest: ColumnElement[Any] = cast(null(), BigInteger)  # typed: PostgreSQL's UNION wants it
    if date is not None:
        d = idx_date.alias()
        source = source.outerjoin(d, (d.c.res_pk == matched.c.res_pk) & (d.c.param == date))
        earliest = func.min(d.c.low)
    counts = (
        select(
            matched.c.target_id,
            tok.c.code,
            func.count(distinct(matched.c.res_pk)),
            earliest,
            cast(null(), String).label("patient"),
        )
        .select_from(source)
        .group_by(matched.c.target_id, tok.c.code)
    )
    comp = idx_compartment
    patients = (
        select(
            cast(null(), String),
            cast(null(), String),
            cast(null(), BigInteger),
            cast(null(), BigInteger),
            comp.c.patient_id,
        )
        .where(comp.c.res_pk.in_(select(matched.c.res_pk)))
        .distinct()
    )
    tallies: list[Tally] = []
    seen: set[str] = set()
    for target, code, count, low, patient in conn.execute(union_all(counts, patients)):
        if patient is not None:
            seen.add(patient)
        elif target and code:
            tallies.append(Tally(target, code, int(count), low))
    return tallies, seen
