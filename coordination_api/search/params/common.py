"""What every parameter type's compilation shares: the columns a criterion applies to, the context of
one search, and the semi-join (or anti-join) on an index table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, literal, or_, select, union
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BooleanClauseList
from sqlalchemy.sql.expression import FromClause

from coordination_api.errors import Category, FhirError
from coordination_api.search.registry import SearchParam, SearchRegistry
from coordination_api.storage.schema import INDEX_TABLES, resource


@dataclass(frozen=True)
class Cols:
    """The columns of the resource rows a criterion applies to (the searched type, or a chain hop)."""

    pk: ColumnElement[Any]
    res_type: ColumnElement[Any]
    res_id: ColumnElement[Any]
    last_updated: ColumnElement[Any]

    @classmethod
    def of(cls, table: FromClause) -> Cols:
        return cls(table.c.pk, table.c.res_type, table.c.res_id, table.c.last_updated)


MAIN = Cols.of(resource)

# (hop resource type, its pk column) -> the access filters of the hop; raises to refuse it.
HopGuard = Callable[[str, ColumnElement[Any]], list[ColumnElement[bool]]]

# (context, resource type, columns, parameter name with modifiers and chain, value, chain depth).
Criterion = Callable[["Context", str, Cols, str, str, int], ColumnElement[bool]]


class UnknownParamError(Exception):
    """A parameter the server does not know: ignored (lenient) or refused (strict)."""


@dataclass(frozen=True)
class Context:
    """One search being compiled: what its criteria need besides their own parameter and value."""

    registry: SearchRegistry
    sqlite: bool
    base_url: str
    hop_guard: HopGuard | None
    # The dispatcher, for the criteria a chain or ``_has`` applies to the resources on the way.
    criterion: Criterion

    def nested(
        self, resource_type: str, cols: Cols, name: str, value: str, depth: int
    ) -> ColumnElement[bool]:
        return self.criterion(self, resource_type, cols, name, value, depth)

    def hop(self, resource_type: str, pk: ColumnElement[Any]) -> list[ColumnElement[bool]]:
        return [] if self.hop_guard is None else self.hop_guard(resource_type, pk)

    def prefix(self, column: ColumnElement[Any], prefix: str) -> ColumnElement[bool]:
        """Starts-with on a normalized column, in the form each database can answer from its index."""
        if not self.sqlite or not prefix:
            return column.startswith(prefix, autoescape=True)
        # SQLite cannot use an index for LIKE ? || '%' (and LIKE is case-insensitive there); its
        # binary collation makes a half-open range the exact prefix test.
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1) if ord(prefix[-1]) < 0x10FFFF else None
        return and_(column >= prefix, column < upper) if upper is not None else column >= prefix


# The alternatives of a value as conditions on one index table (its own, or a composite's alias):
# (context, table, parameter, modifier, value).
Ors = Callable[[Context, FromClause, SearchParam, str, str], list[ColumnElement[bool]]]
# A whole criterion: (context, resource type, columns, parameter, modifier, value).
Builder = Callable[[Context, str, Cols, SearchParam, str, str], ColumnElement[bool]]


def bad(param: str, message: str) -> FhirError:
    return FhirError(Category.INVALID, f"Search parameter '{param}': {message}")


def check_modifier(param: SearchParam, modifier: str, allowed: frozenset[str] = frozenset({""})) -> None:
    if modifier not in allowed:
        raise bad(f"{param.code}:{modifier}", f"modifier not supported on a {param.type} parameter")


def points_to(ref: FromClause, target: FromClause) -> ColumnElement[bool]:
    """The resource row a reference index row names (its target type and id): the join of a chain,
    of ``_include`` and of $everything's supporting resources."""
    return and_(target.c.res_type == ref.c.target_type, target.c.res_id == ref.c.target_id)


def absent(table: Any, cols: Cols, where: tuple[ColumnElement[bool], ...]) -> ColumnElement[bool]:
    """No index row of this resource matches: a correlated NOT EXISTS (an anti-join on the res_pk
    index; ``pk NOT IN (all matching rows)`` made PostgreSQL hash every row of the type)."""
    return ~exists(select(literal(1)).where(table.c.res_pk == cols.pk, *where))


def indexed(
    resource_type: str,
    cols: Cols,
    param: SearchParam,
    ors: list[ColumnElement[bool]],
    negate: bool = False,
) -> ColumnElement[bool]:
    """The resources with (or, ``negate``, without) an index row of the parameter matching one of ``ors``."""
    table = INDEX_TABLES[param.type]
    where = (table.c.param == param.code, table.c.res_type == resource_type)
    alternatives = [leaf for clause in ors for leaf in _disjuncts(clause)]
    if negate:
        return absent(table, cols, (*where, or_(*alternatives)))
    if 1 < len(alternatives) <= UNION_MAX:
        # One SELECT per alternative, each through its own index: SQLite plans no OR-by-union here
        # and scanned every row of the parameter (``patient=`` is "type and id, or our own absolute
        # URL": 74 ms at 120k rows, 0.5 ms as a UNION; issue 22's patient page, issue 21).
        return cols.pk.in_(union(*(select(table.c.res_pk).where(*where, leaf) for leaf in alternatives)))
    return cols.pk.in_(select(table.c.res_pk).where(*where, or_(*alternatives)))


# Beyond this many alternatives one SELECT with their OR (a long list of values would repeat the
# parameter's binds, counted against compiler.MAX_SEARCH_VALUES).
UNION_MAX = 16


def _disjuncts(clause: ColumnElement[bool]) -> list[ColumnElement[bool]]:
    """The alternatives of an OR (nested ORs flattened), or the clause itself."""
    if isinstance(clause, BooleanClauseList) and clause.operator is operators.or_:
        return [leaf for inner in clause.clauses for leaf in _disjuncts(inner)]
    return [clause]


def on_index(ors: Ors) -> Builder:
    """The criterion of a type whose alternatives are all on its own index table."""

    def build(
        ctx: Context, resource_type: str, cols: Cols, param: SearchParam, modifier: str, value: str
    ) -> ColumnElement[bool]:
        return indexed(resource_type, cols, param, ors(ctx, INDEX_TABLES[param.type], param, modifier, value))

    return build
