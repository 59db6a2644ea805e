"""Run a compiled search: one page of matches, then ``_include``/``_revinclude`` lookups."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, false, select
from sqlalchemy.engine import Connection

from coordination_api.search.params.common import points_to
from coordination_api.search.query import CursorValue, Include, SearchQuery
from coordination_api.storage.repository import CURRENT_COLS, Repository, Stored
from coordination_api.storage.schema import idx_reference, resource

# _include:iterate / _revinclude:iterate repeat until nothing new is found (R4 search.html#revinclude);
# this only guards against pathological depth, the result cap guards the size.
MAX_ITERATIONS = 100


@dataclass
class SearchResult:
    matches: list[Stored]
    included: list[Stored] = field(default_factory=list)
    total: int | None = None
    has_next: bool = False
    has_previous: bool = False
    # Keyset cursors (sort key values + pk) of the first and last match, for previous/next links.
    first_key: list[CursorValue] | None = None
    last_key: list[CursorValue] | None = None
    truncated_includes: bool = False


def snapshot_pk(conn: Connection) -> int:
    """Highest pk now: later pages never show resources created after the first page."""
    # Driver SQL: one statement of every first search page (issue 21: statement building was most
    # of its cost).
    return int(conn.exec_driver_sql("SELECT coalesce(max(pk), 0) FROM resource").scalar_one())


def run_search(
    conn: Connection, repo: Repository, query: SearchQuery, max_includes: int = 1000
) -> SearchResult:
    result = SearchResult(matches=[])
    first_page = query.after is None and query.offset == 0
    if query.count > 0 and query.summary != "count":
        page = [list(row) for row in conn.execute(query.select_page(query.count + 1))]
        more = len(page) > query.count
        page = page[: query.count]
        if query.backward:  # fetched from the cursor backwards: put it back in page order
            page.reverse()
            result.has_previous, result.has_next = more, True
        else:
            result.has_previous, result.has_next = not first_page, more
        if page:
            # A cursor is the row's sort key values then its pk (selected as pk, keys…).
            result.first_key = [*page[0][1:], page[0][0]]
            result.last_key = [*page[-1][1:], page[-1][0]]
        pks = [row[0] for row in page]
        rows = repo.by_pks(conn, pks)
        result.matches = [rows[pk] for pk in pks if pk in rows]
    if query.total != "none" or query.summary == "count" or query.count == 0:
        if first_page and not result.has_next and query.count > 0 and query.summary != "count":
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
        if not first and not any(inc.iterate for inc in (*query.includes, *query.revincludes)):
            return
        found: list[Stored] = []
        for inc in query.includes:
            if first or inc.iterate:
                found.extend(_forward(conn, inc, frontier, query))
        for inc in query.revincludes:
            if first or inc.iterate:
                found.extend(_reverse(conn, inc, frontier, query))
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
    result.truncated_includes = True  # still finding new resources after MAX_ITERATIONS rounds


def _policy(inc: Include, query: SearchQuery) -> list[ColumnElement[bool]]:
    """Included resources obey the same access policy as matches, and the token's types."""
    out = list(query.access)
    if query.include_types is not None:
        out.append(resource.c.res_type.in_(sorted(query.include_types)))
    return out


def reference_targets() -> Select[Any]:
    """The current rows that ``idx_reference`` rows name, each once; the caller adds the ``where``."""
    return (
        select(*CURRENT_COLS)
        .distinct()
        .select_from(idx_reference.join(resource, points_to(idx_reference, resource)))
    )


def _forward(conn: Connection, inc: Include, sources: list[Stored], query: SearchQuery) -> list[Stored]:
    pks = [s.pk for s in sources if inc.source_type in {"*", s.res_type}]
    if not pks:
        return []
    ref = idx_reference
    clauses: list[ColumnElement[bool]] = [ref.c.res_pk.in_(pks)]
    if inc.param != "*":
        clauses.append(ref.c.param == inc.param)
    if inc.target_type:
        clauses.append(ref.c.target_type == inc.target_type)
    stmt = reference_targets().where(*clauses, resource.c.deleted == false(), *_policy(inc, query))
    return [Stored(*row) for row in conn.execute(stmt)]


def _reverse(conn: Connection, inc: Include, targets: list[Stored], query: SearchQuery) -> list[Stored]:
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
            select(*CURRENT_COLS)
            .distinct()
            .select_from(ref.join(resource, resource.c.pk == ref.c.res_pk))
            .where(*clauses, resource.c.deleted == false(), *_policy(inc, query))
        )
        out.extend(Stored(*row) for row in conn.execute(stmt))
    return out
