"""A compiled search and the SQL of its pages (R4 search.html#paging): filters, sort keys, keyset
cursors; what :mod:`coordination_api.search.compiler` produces and the executor runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    Table,
    and_,
    exists,
    false,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.sql import operators, visitors
from sqlalchemy.sql.elements import BinaryExpression
from sqlalchemy.sql.util import find_tables

from coordination_api.errors import Category, FhirError, Issue
from coordination_api.storage.schema import resource


@dataclass(frozen=True)
class Include:
    """``_include``/``_revinclude`` = source type : search param [: target type] (R4 search.html#include)."""

    source_type: str
    param: str
    target_type: str | None
    iterate: bool


@dataclass(frozen=True)
class SortKey:
    """One ``_sort`` key: a per-resource scalar expression and its direction (missing values last)."""

    expression: Any
    descending: bool


CursorValue = int | float | str | None


@dataclass
class SearchQuery:
    """A parsed search, ready to run.

    Pages after the first are found by keyset (``after``: the sort key values and pk of the row the
    page starts after, or ends before when ``backward``), so that resources created, deleted or
    updated between two pages neither shift nor repeat the others; ``max_pk`` hides resources
    created after the first page.
    """

    resource_type: str
    where: list[ColumnElement[bool]] = field(default_factory=list)
    sort_keys: list[SortKey] = field(default_factory=list)
    count: int = 20
    offset: int = 0
    max_pk: int | None = None
    after: list[CursorValue] | None = None
    backward: bool = False
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    # The access policy: filters on resource.pk (matches and included resources alike), and the
    # types included resources may have (None: any).
    access: list[ColumnElement[bool]] = field(default_factory=list)
    include_types: frozenset[str] | None = None
    summary: str | None = None
    elements: list[str] | None = None
    total: str = "accurate"
    issues: list[Issue] = field(default_factory=list)
    used: list[tuple[str, str]] = field(default_factory=list)
    sqlite: bool = False

    def set_cursor(self, values: list[Any] | None, backward: bool) -> None:
        """Page from a cursor taken from a page token; a cursor that does not fit is refused."""
        if values is not None:
            fits = len(values) == len(self.sort_keys) + 1 and type(values[-1]) is int
            if not fits or not all(v is None or type(v) in (int, float, str) for v in values):
                raise FhirError(Category.INVALID, "Invalid or corrupted _page token")
        self.after, self.backward = values, backward and values is not None

    def select_page(self, limit: int) -> Select[Any]:
        """pk and sort key values of the page's rows, in page order (reversed when ``backward``)."""
        reverse = self.backward
        order: list[Any] = []
        for key in self.sort_keys:
            descending = key.descending != reverse
            column = key.expression.desc() if descending else key.expression.asc()
            order.append(column.nulls_first() if reverse else column.nulls_last())
        order.append(resource.c.pk.desc() if reverse else resource.c.pk.asc())
        stmt = select(resource.c.pk, *(k.expression for k in self.sort_keys)).where(*self._filters())
        if self.after is not None:
            stmt = stmt.where(self._beyond(0, reverse))
        elif self.offset:
            stmt = stmt.offset(self.offset)
        return stmt.order_by(*order).limit(limit)

    def select_pks(self) -> Select[Any]:
        """The pks of every match (no paging), e.g. to audit whose data a count covered."""
        return select(resource.c.pk).where(*self._filters())

    def select_count(self) -> Select[Any]:
        return select(func.count()).select_from(resource).where(*self._filters())

    def conditions(self) -> list[ColumnElement[bool]]:
        """The WHERE of a match on the ``resource`` table: type, not deleted, criteria, access."""
        return self._filters()

    def _filters(self) -> list[ColumnElement[bool]]:
        res_type: ColumnElement[Any] = resource.c.res_type
        if self.sqlite and self.where and not _by_id(self.where):
            # SQLite would otherwise walk every row of the type through the res_type index; with the
            # term made unindexable it drives from the index-table subqueries and looks up by pk.
            # Not with ``_id``: (res_type, res_id) is the unique index that finds those rows.
            res_type = res_type + ""
        where = _one_driver(self.where) if self.sqlite else self.where
        filters = [res_type == self.resource_type, resource.c.deleted == false(), *where, *self.access]
        if self.max_pk is not None:
            filters.append(resource.c.pk <= self.max_pk)
        return filters

    def _beyond(self, index: int, before: bool) -> ColumnElement[bool]:
        """Rows strictly after (or before) the cursor in page order, from sort key ``index`` on."""
        assert self.after is not None
        value = self.after[index]
        if index == len(self.sort_keys):
            return resource.c.pk < value if before else resource.c.pk > value
        key = self.sort_keys[index]
        expr = key.expression
        # Missing values sort last in both directions.
        if value is None:
            past = expr.is_not(None) if before else false()
            same = expr.is_(None)
        else:
            lower = before != key.descending  # "beyond" means a smaller key
            past = expr < value if lower else expr > value
            if not before:
                past = or_(past, expr.is_(None))
            same = expr == value
        return or_(past, and_(same, self._beyond(index + 1, before)))


# How selective a criterion on each index table usually is (lower drives): a token with its system
# (an identifier) or a reference names a few rows, a name prefix some; a bare code (status=active,
# gender=female) and a date or number range a large share of the type.
_DRIVER_RANK = {"idx_token": 0, "idx_reference": 1, "idx_uri": 1, "idx_string": 2}
_BARE_CODE_RANK = 3
_OTHER_RANK = 4


def _by_id(where: list[ColumnElement[bool]]) -> bool:
    """A top-level ``res_id IN (...)`` or ``res_id = ...`` (the ``_id`` parameter)."""
    return any(
        isinstance(c, BinaryExpression)
        and c.left is resource.c.res_id
        and c.operator in (operators.in_op, operators.eq)
        for c in where
    )


def _rank(table: Table, where: ColumnElement[bool] | None) -> int:
    rank = _DRIVER_RANK.get(table.name, _OTHER_RANK)
    if table.name == "idx_token" and not _binds_system(table, where):
        return _BARE_CODE_RANK
    return rank


def _binds_system(table: Table, where: ColumnElement[bool] | None) -> bool:
    """The token criterion compares the system to a value (``system|code``), not only the code."""
    if where is None:
        return False
    return any(
        isinstance(node, BinaryExpression) and node.left is table.c.system and node.operator is operators.eq
        for node in visitors.iterate(where)
    )


def _semi_join(condition: ColumnElement[bool]) -> tuple[Table, ColumnElement[bool] | None] | None:
    """(index table, its WHERE) of a ``resource.pk IN (SELECT res_pk FROM <index table> WHERE ...)``
    criterion (search/params/common.indexed), else None."""
    if not (
        isinstance(condition, BinaryExpression)
        and condition.operator is operators.in_op
        and condition.left is resource.c.pk
    ):
        return None
    inner = getattr(condition.right, "element", None)
    if isinstance(inner, CompoundSelect):  # one SELECT per alternative (params/common.indexed)
        parts = [_on_index(part) for part in inner.selects if isinstance(part, Select)]
        if len(parts) != len(inner.selects) or any(p is None or p[1] is None for p in parts):
            return None
        tables = {p[0] for p in parts if p is not None}
        if len(tables) != 1:
            return None
        return tables.pop(), or_(*(p[1] for p in parts if p is not None and p[1] is not None))
    if not isinstance(inner, Select):
        return None
    return _on_index(inner)


def _on_index(inner: Select[Any]) -> tuple[Table, ColumnElement[bool] | None] | None:
    """(index table, WHERE) of ``SELECT res_pk FROM <index table> WHERE ...`` on that table alone."""
    # The selected column's table (get_final_froms() compiles the statement: milliseconds).
    froms = inner.columns_clause_froms
    columns = list(inner.selected_columns)
    if len(froms) != 1 or not isinstance(froms[0], Table) or len(columns) != 1:
        return None
    table = froms[0]
    if "res_pk" not in table.c or columns[0] is not table.c.res_pk:
        return None
    where = inner.whereclause
    # Only a criterion on its own index table: a chain or _has joins other rows (kept as it is).
    if where is not None and any(t is not table for t in find_tables(where, check_columns=True)):
        return None
    return table, where


def _one_driver(where: list[ColumnElement[bool]]) -> list[ColumnElement[bool]]:
    """SQLite materialises every ``pk IN (subquery)`` as a list before the first row: with
    ``name=...&birthdate=ge...`` it built the list of half the Patients on each search. The most
    selective semi-join stays the driver (rows looked up by pk); the others become correlated EXISTS
    probed through their res_pk index for the driver's few rows. PostgreSQL plans semi-joins itself."""
    if sum(isinstance(c, BinaryExpression) and c.operator is operators.in_op for c in where) < 2:
        return where
    semis = [(i, parts) for i, c in enumerate(where) if (parts := _semi_join(c)) is not None]
    if len(semis) < 2:
        return where
    driver = min(semis, key=lambda s: (_rank(*s[1]), s[0]))[0]
    out = list(where)
    for i, (table, clause) in semis:
        if i != driver:
            probe = select(literal(1)).select_from(table).where(table.c.res_pk == resource.c.pk)
            out[i] = exists(probe.where(clause) if clause is not None else probe)
    return out
