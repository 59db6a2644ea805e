"""Run a compiled search: one page of matches, then ``_include``/``_revinclude`` lookups."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, and_, false, func, select
from sqlalchemy.engine import Connection

from coordination_api.search.compiler import Include, SearchQuery
from coordination_api.storage.repository import Repository, Stored
from coordination_api.storage.schema import idx_reference, resource

MAX_ITERATIONS = 3


@dataclass
class SearchResult:
    matches: list[Stored]
    included: list[Stored] = field(default_factory=list)
    total: int | None = None
    has_next: bool = False
    truncated_includes: bool = False


def snapshot_pk(conn: Connection) -> int:
    """Highest pk now: later pages never show resources created after the first page."""
    return int(conn.execute(select(func.coalesce(func.max(resource.c.pk), 0))).scalar_one())


def run_search(
    conn: Connection, repo: Repository, query: SearchQuery, max_includes: int = 1000
) -> SearchResult:
    result = SearchResult(matches=[])
    if query.count > 0 and query.summary != "count":
        stmt = query.select_pks().limit(query.count + 1)
        pks = [row[0] for row in conn.execute(stmt)]
        result.has_next = len(pks) > query.count
        pks = pks[: query.count]
        rows = repo.by_pks(conn, pks)
        result.matches = [rows[pk] for pk in pks if pk in rows]
    if query.total != "none" or query.summary == "count" or query.count == 0:
        if query.offset == 0 and not result.has_next and query.count > 0 and query.summary != "count":
            result.total = len(result.matches)
        else:
            result.total = int(conn.execute(query.select_count()).scalar_one())
    if result.matches and (query.includes or query.revincludes):
        _add_includes(conn, query, result, max_includes)
    return result


def _add_includes(conn: Connection, query: SearchQuery, result: SearchResult, limit: int) -> None:
    seen = {s.pk for s in result.matches}
    frontier = list(result.matches)
    first = True
    for _ in range(MAX_ITERATIONS):
        found: list[Stored] = []
        for inc in query.includes:
            if first or inc.iterate:
                found.extend(_forward(conn, inc, frontier))
        for inc in query.revincludes:
            if first or inc.iterate:
                found.extend(_reverse(conn, inc, frontier))
        fresh = []
        for stored in found:
            if stored.pk not in seen:
                seen.add(stored.pk)
                fresh.append(stored)
        if len(result.included) + len(fresh) > limit:
            fresh = fresh[: limit - len(result.included)]
            result.truncated_includes = True
        result.included.extend(fresh)
        if not fresh or result.truncated_includes:
            return
        frontier = fresh
        first = False


_COLS = (
    resource.c.pk,
    resource.c.res_type,
    resource.c.res_id,
    resource.c.version,
    resource.c.last_updated,
    resource.c.deleted,
    resource.c.content,
)


def _forward(conn: Connection, inc: Include, sources: list[Stored]) -> list[Stored]:
    pks = [s.pk for s in sources if inc.source_type in {"*", s.res_type}]
    if not pks:
        return []
    ref = idx_reference
    clauses: list[ColumnElement[bool]] = [ref.c.res_pk.in_(pks)]
    if inc.param != "*":
        clauses.append(ref.c.param == inc.param)
    if inc.target_type:
        clauses.append(ref.c.target_type == inc.target_type)
    stmt = (
        select(*_COLS)
        .distinct()
        .select_from(
            ref.join(
                resource, and_(resource.c.res_type == ref.c.target_type, resource.c.res_id == ref.c.target_id)
            )
        )
        .where(*clauses, resource.c.deleted == false())
    )
    return [Stored(*row) for row in conn.execute(stmt)]


def _reverse(conn: Connection, inc: Include, targets: list[Stored]) -> list[Stored]:
    by_type: dict[str, list[str]] = {}
    for stored in targets:
        by_type.setdefault(stored.res_type, []).append(stored.res_id)
    ref = idx_reference
    out: list[Stored] = []
    for target_type, ids in by_type.items():
        clauses: list[ColumnElement[bool]] = [ref.c.target_type == target_type, ref.c.target_id.in_(ids)]
        if inc.source_type != "*":
            clauses.append(ref.c.res_type == inc.source_type)
        if inc.param != "*":
            clauses.append(ref.c.param == inc.param)
        stmt = (
            select(*_COLS)
            .distinct()
            .select_from(ref.join(resource, resource.c.pk == ref.c.res_pk))
            .where(*clauses, resource.c.deleted == false())
        )
        out.extend(Stored(*row) for row in conn.execute(stmt))
    return out
