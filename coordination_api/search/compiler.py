"""Compile FHIR search parameters into SQL over the index tables (R4 search.html).

Nothing here reads resource JSON: every criterion is a semi-join on an index table, so the
database plans it with its indexes whatever the number of stored resources.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FromClause
from sqlalchemy.sql.functions import FunctionElement

from coordination_api.errors import Category, FhirError, Issue
from coordination_api.search.dates import MAX_US, MIN_US, InvalidDateError, parse_range
from coordination_api.search.registry import CONTROL_PARAMS, SearchParam, SearchRegistry
from coordination_api.search.terminology import subsumed, value_set_codes
from coordination_api.search.values import (
    parse_number,
    parse_quantity,
    parse_token,
    split_keeping_escapes,
    split_or,
    split_prefix,
    split_unescaped,
    unescape,
)
from coordination_api.storage.indexer import (
    URL_LIMIT,
    component_param,
    cut,
    normalize,
    of_type_param,
    parse_reference,
)
from coordination_api.storage.schema import INDEX_TABLES, idx_reference, resource

SUMMARY_VALUES = {"true", "false", "text", "data", "count"}
TOTAL_VALUES = {"none", "estimate", "accurate"}
MAX_CHAIN_DEPTH = 4


@dataclass(frozen=True)
class Cols:
    """The columns of the resource rows a criterion applies to (the searched type, or a chain hop)."""

    pk: ColumnElement[Any]
    res_type: ColumnElement[Any]
    res_id: ColumnElement[Any]
    last_updated: ColumnElement[Any]


MAIN = Cols(resource.c.pk, resource.c.res_type, resource.c.res_id, resource.c.last_updated)


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

    def _filters(self) -> list[ColumnElement[bool]]:
        res_type: ColumnElement[Any] = resource.c.res_type
        if self.sqlite and self.where:
            # SQLite would otherwise walk every row of the type through the res_type index; with the
            # term made unindexable it drives from the index-table subqueries and looks up by pk.
            res_type = res_type + ""
        filters = [res_type == self.resource_type, resource.c.deleted == false(), *self.where, *self.access]
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


class _CodepointOrder(FunctionElement[str]):
    """A text sort key ordered by code point on every database, whatever PostgreSQL's collation."""

    type = String()
    inherit_cache = True
    name = "codepoint_order"


@compiles(_CodepointOrder)
def _codepoint_order(element: _CodepointOrder, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))  # SQLite compares text as BINARY


@compiles(_CodepointOrder, "postgresql")
def _codepoint_order_pg(element: _CodepointOrder, compiler: SQLCompiler, **kw: Any) -> str:
    return f'({compiler.process(element.clauses, **kw)}) COLLATE "C"'


def _bad(param: str, message: str) -> FhirError:
    return FhirError(Category.INVALID, f"Search parameter '{param}': {message}")


def _absent(table: Any, cols: Cols, where: tuple[ColumnElement[bool], ...]) -> ColumnElement[bool]:
    """No index row of this resource matches: a correlated NOT EXISTS (an anti-join on the res_pk
    index; ``pk NOT IN (all matching rows)`` made PostgreSQL hash every row of the type)."""
    return ~exists(select(literal(1)).where(table.c.res_pk == cols.pk, *where))


# (hop resource type, its pk column) -> the access filters of the hop; raises to refuse it.
HopGuard = Callable[[str, ColumnElement[Any]], list[ColumnElement[bool]]]


class SearchCompiler:
    """Turns (name, value) pairs into a :class:`SearchQuery` for one resource type."""

    def __init__(
        self, registry: SearchRegistry, *, default_count: int = 20, max_count: int = 1000, dialect: str = ""
    ) -> None:
        self.registry = registry
        self.default_count = default_count
        self.max_count = max_count
        self.sqlite = dialect == "sqlite"
        self._hop_guard: HopGuard | None = None

    def _hop(self, resource_type: str, pk: ColumnElement[Any]) -> list[ColumnElement[bool]]:
        return [] if self._hop_guard is None else self._hop_guard(resource_type, pk)

    def _prefix(self, column: ColumnElement[Any], prefix: str) -> ColumnElement[bool]:
        """Starts-with on a normalized column, in the form each database can answer from its index."""
        if not self.sqlite or not prefix:
            return column.startswith(prefix, autoescape=True)
        # SQLite cannot use an index for LIKE ? || '%' (and LIKE is case-insensitive there); its
        # binary collation makes a half-open range the exact prefix test.
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1) if ord(prefix[-1]) < 0x10FFFF else None
        return and_(column >= prefix, column < upper) if upper is not None else column >= prefix

    # -- entry point ---------------------------------------------------------------------------

    def compile(
        self,
        resource_type: str,
        params: list[tuple[str, str]],
        *,
        base_url: str = "",
        strict: bool = False,
        hop_guard: HopGuard | None = None,
    ) -> SearchQuery:
        """``hop_guard`` is asked for every resource a chain or ``_has`` reads on the way (its type and
        pk column): it raises to refuse the hop, or returns the access filters the hop must meet, the
        same as the caller's own search of that type (issue 16: no oracle through a hop)."""
        if hop_guard is not None and self._hop_guard is not hop_guard:
            guarded = copy.copy(self)
            guarded._hop_guard = hop_guard
            return guarded.compile(resource_type, params, base_url=base_url, strict=strict)
        query = SearchQuery(resource_type, count=self.default_count, sqlite=self.sqlite)
        sort_spec: str | None = None
        for name, value in params:
            if "\x00" in name or "\x00" in value:  # no database stores NUL in text
                raise _bad(name.replace("\x00", ""), "parameters must not contain NUL characters")
            if name in CONTROL_PARAMS or name.startswith(("_include", "_revinclude")):
                if name == "_sort":
                    sort_spec = value
                    query.used.append((name, value))
                else:
                    self._control(query, name, value)
                continue
            try:
                condition = self._criterion(resource_type, MAIN, name, value, base_url, depth=0)
            except _UnknownParamError as exc:
                if strict:
                    raise FhirError(Category.INVALID, str(exc)) from exc
                query.issues.append(Issue("warning", "not-supported", f"{exc}; it was ignored"))
                continue
            query.where.append(condition)
            query.used.append((name, value))
        if sort_spec:
            query.sort_keys = self._sort(resource_type, sort_spec)
        return query

    # -- control parameters ----------------------------------------------------------------------

    def _control(self, query: SearchQuery, name: str, value: str) -> None:
        if name == "_count":
            try:
                count = int(value)
            except ValueError as exc:
                raise _bad(name, f"'{value}' is not a whole number") from exc
            if count < 0:
                raise _bad(name, "must not be negative")
            query.count = min(count, self.max_count)
        elif name == "_summary":
            if value not in SUMMARY_VALUES:
                raise _bad(name, f"'{value}' is not one of {sorted(SUMMARY_VALUES)}")
            query.summary = value
        elif name == "_total":
            if value not in TOTAL_VALUES:
                raise _bad(name, f"'{value}' is not one of {sorted(TOTAL_VALUES)}")
            query.total = value
        elif name == "_elements":
            query.elements = [e.strip() for e in value.split(",") if e.strip()]
        elif name.startswith("_include") or name.startswith("_revinclude"):
            self._include(query, name, value)
        elif name in {"_contained", "_containedType"}:
            if value not in {"false", "resource"}:
                raise FhirError(Category.NOT_SUPPORTED, f"Search parameter '{name}={value}' is not supported")
        else:
            return  # _format, _pretty, _page: handled by the HTTP layer
        query.used.append((name, value))

    def _include(self, query: SearchQuery, name: str, value: str) -> None:
        base, _, modifier = name.partition(":")
        if base not in {"_include", "_revinclude"}:
            raise _bad(name, "unknown parameter")
        if modifier not in {"", "iterate", "recurse"}:
            raise _bad(name, f"unknown modifier ':{modifier}'")
        iterate = modifier in {"iterate", "recurse"}
        if value == "*":
            include = Include("*", "*", None, iterate)
        else:
            parts = value.split(":")
            if len(parts) not in (2, 3):
                raise _bad(name, f"'{value}' must be SourceType:searchParam[:TargetType]")
            source, code = parts[0], parts[1]
            target = parts[2] if len(parts) == 3 else None
            param = self.registry.get(source, code)
            if param is None or param.type != "reference":
                raise _bad(name, f"'{source}:{code}' is not a reference search parameter")
            if target is not None and param.targets and target not in param.targets:
                raise _bad(name, f"'{target}' is not a target of {source}:{code}")
            include = Include(source, code, target, iterate)
        (query.includes if base == "_include" else query.revincludes).append(include)

    def _sort(self, resource_type: str, spec: str) -> list[SortKey]:
        keys: list[SortKey] = []
        for raw in (s.strip() for s in spec.split(",")):
            if not raw:
                continue
            descending = raw.startswith("-")
            code = raw.lstrip("-")
            if code == "_id":
                column: Any = _CodepointOrder(resource.c.res_id)
            elif code == "_lastUpdated":
                column = resource.c.last_updated
            else:
                param = self.registry.get(resource_type, code)
                if param is None:
                    raise _bad("_sort", f"unknown search parameter '{code}' for {resource_type}")
                column = self._sort_value(param, descending)
            keys.append(SortKey(column, descending))
        return keys

    def _sort_value(self, param: SearchParam, descending: bool) -> Any:
        table = INDEX_TABLES.get(param.type)
        if table is None:
            raise _bad("_sort", f"cannot sort on '{param.code}' ({param.type})")
        column = {
            "string": "value_norm",
            "token": "code",
            "date": "high" if descending else "low",
            "number": "value",
            "quantity": "value",
            "uri": "value",
            "reference": "target_id",
        }[param.type]
        agg = func.max if descending else func.min
        textual = param.type in {"string", "token", "uri", "reference"}
        value: Any = _CodepointOrder(table.c[column]) if textual else table.c[column]
        key = (
            select(agg(value))
            .where(table.c.res_pk == resource.c.pk, table.c.param == param.code)
            .scalar_subquery()
        )
        return _CodepointOrder(key) if textual else key

    # -- criteria --------------------------------------------------------------------------------

    def _criterion(
        self, resource_type: str, cols: Cols, name: str, value: str, base_url: str, depth: int
    ) -> ColumnElement[bool]:
        if depth > MAX_CHAIN_DEPTH:
            raise _bad(name, f"chains deeper than {MAX_CHAIN_DEPTH} are not supported")
        if name.startswith("_has:"):
            return self._has(resource_type, cols, name, value, base_url, depth)
        head, dot, rest = name.partition(".")
        code, _, modifier = head.partition(":")
        param = self.registry.get(resource_type, code)
        if param is None:
            if code in {"_text", "_content", "_list", "_query", "_filter", "_type"}:
                raise _UnknownParamError(f"Search parameter '{code}' is not supported")
            raise _UnknownParamError(f"Unknown search parameter '{code}' for resource type {resource_type}")
        if dot:
            return self._chain(resource_type, cols, param, modifier, rest, value, base_url, depth)
        if modifier == "missing":
            return self._missing(resource_type, cols, param, value)
        if code == "_id":
            return self._id(cols, modifier, value)
        if code == "_lastUpdated":
            if modifier:
                raise _bad(name, f"modifier ':{modifier}' is not supported")
            return or_(*(self._date_point(cols.last_updated, code, v) for v in split_or(value)))
        builder = getattr(self, f"_{param.type}", None)
        if builder is None:  # e.g. special (Location near): ignored and reported, or 400 when strict
            raise _UnknownParamError(f"Search parameter '{code}' of type {param.type} is not supported")
        condition: ColumnElement[bool] = builder(resource_type, cols, param, modifier, value, base_url)
        return condition

    def _indexed(
        self,
        resource_type: str,
        cols: Cols,
        param: SearchParam,
        ors: list[ColumnElement[bool]],
        negate: bool = False,
    ) -> ColumnElement[bool]:
        table = INDEX_TABLES[param.type]
        where = (table.c.param == param.code, table.c.res_type == resource_type, or_(*ors))
        if negate:
            return _absent(table, cols, where)
        return cols.pk.in_(select(table.c.res_pk).where(*where))

    def _missing(self, resource_type: str, cols: Cols, param: SearchParam, value: str) -> ColumnElement[bool]:
        if value not in {"true", "false"}:
            raise _bad(f"{param.code}:missing", "value must be 'true' or 'false'")
        if param.code == "_id" or param.code == "_lastUpdated":
            return false() if value == "true" else true()
        if param.type == "composite":  # present: some element has every component (see the indexer)
            table = INDEX_TABLES[param.components[0].type]
            where = (table.c.param == component_param(param.code, 0), table.c.res_type == resource_type)
        else:
            table = INDEX_TABLES[param.type]
            where = (table.c.param == param.code, table.c.res_type == resource_type)
        if value == "true":
            return _absent(table, cols, where)
        return cols.pk.in_(select(table.c.res_pk).where(*where))

    def _id(self, cols: Cols, modifier: str, value: str) -> ColumnElement[bool]:
        ids = [v for v in split_or(value) if v]
        if not ids:
            raise _bad("_id", "a value is required")
        if modifier == "not":
            return cols.res_id.not_in(ids)
        if modifier:
            raise _bad("_id", f"modifier ':{modifier}' is not supported")
        return cols.res_id.in_(ids)

    # composite ------------------------------------------------------------------------------
    def _composite(
        self, rtype: str, cols: Cols, param: SearchParam, modifier: str, value: str, base_url: str
    ) -> ColumnElement[bool]:
        """``code-value-quantity=http://loinc.org|8480-6$gt100``: every component matches a value of
        the same element (R4 search.html#composite), i.e. index rows with the same ``elem``."""
        if modifier:
            raise _bad(f"{param.code}:{modifier}", "modifiers are not supported on a composite parameter")
        components = param.components
        tables = [INDEX_TABLES[c.type].alias() for c in components]
        as_params = [
            SearchParam(param.code, c.type, param.url, c.expression, c.targets, resource_type=rtype)
            for c in components
        ]
        alternatives: list[ColumnElement[bool]] = []
        for raw in split_or(value, keep_escapes=True):
            pieces = split_keeping_escapes(raw, "$")
            if len(pieces) != len(components):
                raise _bad(
                    param.code,
                    f"'{unescape(raw)}' must have {len(components)} components separated by '$'",
                )
            alternatives.append(
                and_(
                    *(
                        or_(*self._component_ors(table, sub, piece, base_url))
                        for table, sub, piece in zip(tables, as_params, pieces, strict=True)
                    )
                )
            )
        first = tables[0]
        joined: Any = first
        for index, table in enumerate(tables[1:], start=1):
            joined = joined.join(
                table,
                and_(
                    table.c.res_pk == first.c.res_pk,
                    table.c.elem == first.c.elem,
                    table.c.param == component_param(param.code, index),
                ),
            )
        sub = (
            select(first.c.res_pk)
            .select_from(joined)
            .where(
                first.c.param == component_param(param.code, 0),
                first.c.res_type == rtype,
                or_(*alternatives),
            )
        )
        return cols.pk.in_(sub)

    def _component_ors(
        self, table: FromClause, param: SearchParam, piece: str, base_url: str
    ) -> list[ColumnElement[bool]]:
        if not piece:
            raise _bad(param.code, "every component of a composite value needs a value")
        match param.type:
            case "token":
                return self._token_ors(table, param, piece)
            case "quantity":
                return self._quantity_ors(table, param, piece)
            case "date":
                return self._date_ors(table, param, piece)
            case "number":
                return self._number_ors(table, param, piece)
            case "string":
                return self._string_ors(table, param, "", piece, base_url)
            case "uri":
                return self._uri_ors(table, param, "", piece)
            case _:
                return self._reference_ors(table, param, "", piece, base_url)

    # string ---------------------------------------------------------------------------------
    def _string(
        self, rtype: str, cols: Cols, param: SearchParam, modifier: str, value: str, base_url: str
    ) -> ColumnElement[bool]:
        ors = self._string_ors(INDEX_TABLES["string"], param, modifier, value, base_url)
        return self._indexed(rtype, cols, param, ors)

    def _string_ors(
        self, table: FromClause, param: SearchParam, modifier: str, value: str, base_url: str
    ) -> list[ColumnElement[bool]]:
        ors: list[ColumnElement[bool]] = []
        for raw in split_or(value):
            if modifier == "exact":
                ors.append(table.c.value_exact == raw)
            elif modifier == "contains":
                ors.append(table.c.value_norm.contains(normalize(raw), autoescape=True))
            elif modifier == "":
                ors.append(self._prefix(table.c.value_norm, normalize(raw)))
            else:
                raise _bad(f"{param.code}:{modifier}", "modifier not supported on a string parameter")
        return ors

    # token ----------------------------------------------------------------------------------
    def _token(
        self, rtype: str, cols: Cols, param: SearchParam, modifier: str, value: str, base_url: str
    ) -> ColumnElement[bool]:
        table = INDEX_TABLES["token"]
        if modifier == "text":
            ors = [self._prefix(table.c.text_norm, normalize(raw)) for raw in split_or(value)]
            return self._indexed(rtype, cols, param, ors)
        if modifier in {"in", "not-in"}:
            ors = [clause for url in split_or(value) for clause in self._in_value_set(table, param, url)]
            return self._indexed(rtype, cols, param, ors, negate=modifier == "not-in")
        if modifier in {"above", "below"}:
            ors = []
            for raw in split_or(value, keep_escapes=True):
                token = parse_token(raw)
                codes = subsumed(token.system, token.code, modifier, param.code)
                ors.append(and_(table.c.system == cut(token.system), table.c.code.in_(sorted(codes))))
            return self._indexed(rtype, cols, param, ors)
        if modifier == "of-type":
            return self._of_type(rtype, cols, param, value)
        if modifier not in {"", "not"}:
            raise _bad(f"{param.code}:{modifier}", f"unknown modifier ':{modifier}' on a token parameter")
        ors = self._token_ors(table, param, value)
        return self._indexed(rtype, cols, param, ors, negate=modifier == "not")

    @staticmethod
    def _in_value_set(table: FromClause, param: SearchParam, url: str) -> list[ColumnElement[bool]]:
        """The token is one of the codes of the value set (R4 search.html#token ``:in``); a token
        without a system (an element of type ``code``, whose system is implicit) matches on its code."""
        by_system: dict[str | None, set[str]] = {}
        for system, code in value_set_codes(url, f"{param.code}:in"):
            by_system.setdefault(system, set()).add(cut(code) or "")
        out: list[ColumnElement[bool]] = []
        for system, codes in sorted(by_system.items(), key=lambda item: item[0] or ""):
            if system is None:
                out.append(table.c.code.in_(sorted(codes)))
            else:
                system_matches = or_(table.c.system == cut(system), table.c.system.is_(None))
                out.append(and_(table.c.code.in_(sorted(codes)), system_matches))
        return out or [false()]

    def _of_type(self, rtype: str, cols: Cols, param: SearchParam, value: str) -> ColumnElement[bool]:
        """``identifier:of-type=system|code|value``: an Identifier whose type has that coding and whose
        value is that value (R4 search.html#token); the type and value rows share ``elem``."""
        kind = INDEX_TABLES["token"].alias()
        ident = INDEX_TABLES["token"].alias()
        ors: list[ColumnElement[bool]] = []
        for raw in split_or(value, keep_escapes=True):
            parts = split_unescaped(raw, "|")
            if len(parts) != 3 or not all(parts):
                raise _bad(f"{param.code}:of-type", f"'{unescape(raw)}' must be system|code|value")
            ors.append(
                and_(
                    kind.c.system == cut(parts[0]),
                    kind.c.code == cut(parts[1]),
                    ident.c.code == cut(parts[2]),
                )
            )
        sub = (
            select(kind.c.res_pk)
            .select_from(
                kind.join(
                    ident,
                    and_(
                        ident.c.res_pk == kind.c.res_pk,
                        ident.c.elem == kind.c.elem,
                        ident.c.param == of_type_param(param.code, 1),
                    ),
                )
            )
            .where(kind.c.param == of_type_param(param.code, 0), kind.c.res_type == rtype, or_(*ors))
        )
        return cols.pk.in_(sub)

    def _token_ors(self, table: FromClause, param: SearchParam, value: str) -> list[ColumnElement[bool]]:
        ors: list[ColumnElement[bool]] = []
        for raw in split_or(value, keep_escapes=True):
            token = parse_token(raw)
            clauses: list[ColumnElement[bool]] = []
            if token.code is not None:
                clauses.append(table.c.code == cut(token.code))
            if token.system == "":
                clauses.append(table.c.system.is_(None))
            elif token.system is not None:
                clauses.append(table.c.system == cut(token.system))
            if token.code is None and not token.system:
                raise _bad(param.code, f"'{raw}' has neither a system nor a code")
            ors.append(and_(*clauses))
        return ors

    # date -----------------------------------------------------------------------------------
    def _date(
        self, rtype: str, cols: Cols, param: SearchParam, modifier: str, value: str, base_url: str
    ) -> ColumnElement[bool]:
        if modifier:
            raise _bad(f"{param.code}:{modifier}", "modifier not supported on a date parameter")
        ors = self._date_ors(INDEX_TABLES["date"], param, value)
        return self._indexed(rtype, cols, param, ors)

    def _date_ors(self, table: FromClause, param: SearchParam, value: str) -> list[ColumnElement[bool]]:
        return [self._date_range(table.c.low, table.c.high, param.code, raw) for raw in split_or(value)]

    def _date_point(self, column: ColumnElement[Any], code: str, raw: str) -> ColumnElement[bool]:
        return self._date_range(column, column, code, raw)

    @staticmethod
    def _date_range(
        low: ColumnElement[Any], high: ColumnElement[Any], code: str, raw: str
    ) -> ColumnElement[bool]:
        prefix, text = split_prefix(raw)
        try:
            s_low, s_high = parse_range(text)
        except InvalidDateError as exc:
            raise _bad(code, str(exc)) from exc
        # R4 search.html#prefix, range semantics: the search value and the target value are both
        # ranges; ge is "gt or eq" and le is "lt or eq", to the letter.
        # low <= s_high is implied (low <= high) but bounds the index range scan on (param, low).
        contained = and_(low >= s_low, low <= s_high, high <= s_high)
        match prefix:
            case "eq":
                return contained
            case "ne":
                return not_(contained)
            case "gt":
                return high > s_high
            case "lt":
                return low < s_low
            case "ge":
                return or_(high > s_high, contained)
            case "le":
                return or_(low < s_low, contained)
            case "sa":
                return low > s_high
            case "eb":
                return high < s_low
            case _:  # "ap": within 10 % of the distance to now (R4 search.html#prefix)
                now = time.time_ns() // 1000
                gap = max(abs(now - s_low), abs(now - s_high)) // 10
                return and_(low <= min(s_high + gap, MAX_US), high >= max(s_low - gap, MIN_US))

    # number / quantity ---------------------------------------------------------------------
    @staticmethod
    def _numeric(
        column: ColumnElement[Any], prefix: str, low: float, high: float, value: float
    ) -> ColumnElement[bool]:
        match prefix:
            case "eq":
                return and_(column >= low, column < high)
            case "ne":
                return or_(column < low, column >= high)
            case "gt" | "sa":
                return column > value
            case "lt" | "eb":
                return column < value
            case "ge":
                return column >= value
            case "le":
                return column <= value
            case _:  # ap: +/- 10 %
                margin = abs(value) * 0.1
                return and_(column >= value - margin, column <= value + margin)

    def _number(
        self, rtype: str, cols: Cols, param: SearchParam, modifier: str, value: str, base_url: str
    ) -> ColumnElement[bool]:
        if modifier:
            raise _bad(f"{param.code}:{modifier}", "modifier not supported on a number parameter")
        return self._indexed(rtype, cols, param, self._number_ors(INDEX_TABLES["number"], param, value))

    def _number_ors(self, table: FromClause, param: SearchParam, value: str) -> list[ColumnElement[bool]]:
        ors = []
        for raw in split_or(value):
            prefix, text = split_prefix(raw)
            number = parse_number(text, param.code)
            ors.append(self._numeric(table.c.value, prefix, number.low, number.high, number.value))
        return ors

    def _quantity(
        self, rtype: str, cols: Cols, param: SearchParam, modifier: str, value: str, base_url: str
    ) -> ColumnElement[bool]:
        if modifier:
            raise _bad(f"{param.code}:{modifier}", "modifier not supported on a quantity parameter")
        ors = self._quantity_ors(INDEX_TABLES["quantity"], param, value)
        return self._indexed(rtype, cols, param, ors)

    def _quantity_ors(self, table: FromClause, param: SearchParam, value: str) -> list[ColumnElement[bool]]:
        ors = []
        for raw in split_or(value, keep_escapes=True):
            quantity = parse_quantity(raw, param.code)
            number = quantity.number
            clauses = [self._numeric(table.c.value, quantity.prefix, number.low, number.high, number.value)]
            code = cut(quantity.code)
            if quantity.system is not None:
                clauses.append(table.c.system == cut(quantity.system))
            if code is not None:
                if quantity.system is None:
                    clauses.append(or_(table.c.code == code, table.c.unit == code))
                else:
                    clauses.append(table.c.code == code)
            ors.append(and_(*clauses))
        return ors

    # uri ------------------------------------------------------------------------------------
    def _uri(
        self, rtype: str, cols: Cols, param: SearchParam, modifier: str, value: str, base_url: str
    ) -> ColumnElement[bool]:
        return self._indexed(rtype, cols, param, self._uri_ors(INDEX_TABLES["uri"], param, modifier, value))

    def _uri_ors(
        self, table: FromClause, param: SearchParam, modifier: str, value: str
    ) -> list[ColumnElement[bool]]:
        ors: list[ColumnElement[bool]] = []
        for raw in split_or(value):
            if modifier == "":
                ors.append(table.c.value == raw[:URL_LIMIT])
            elif modifier == "below":
                ors.append(table.c.value.startswith(raw[:URL_LIMIT], autoescape=True))
            elif modifier == "above":
                # The value itself and every ancestor path, with or without the trailing "/".
                cuts = [i for i, c in enumerate(raw) if c == "/" and i > raw.find("://") + 2]
                prefixes = {raw[:i] for i in cuts} | {raw[: i + 1] for i in cuts} | {raw[:URL_LIMIT]}
                ors.append(table.c.value.in_(sorted(prefixes)))
            else:
                raise _bad(f"{param.code}:{modifier}", "modifier not supported on a uri parameter")
        return ors

    # reference ------------------------------------------------------------------------------
    def _reference(
        self, rtype: str, cols: Cols, param: SearchParam, modifier: str, value: str, base_url: str
    ) -> ColumnElement[bool]:
        ors = self._reference_ors(idx_reference, param, modifier, value, base_url)
        return self._indexed(rtype, cols, param, ors)

    def _reference_ors(
        self, table: FromClause, param: SearchParam, modifier: str, value: str, base_url: str
    ) -> list[ColumnElement[bool]]:
        ors: list[ColumnElement[bool]] = []
        type_modifier = self._type_modifier(param, modifier)
        for raw in split_or(value, keep_escapes=True):
            if not raw:
                raise _bad(param.code, "a reference value is required")
            if modifier == "identifier":
                token = parse_token(raw)
                clauses = []
                if token.code is not None:
                    clauses.append(table.c.identifier_value == cut(token.code))
                if token.system:
                    clauses.append(table.c.identifier_system == cut(token.system))
                ors.append(and_(*clauses) if clauses else false())
                continue
            ors.append(self._reference_value(table, param, type_modifier, raw, base_url))
        return ors

    def _type_modifier(self, param: SearchParam, modifier: str) -> str | None:
        if modifier in {"", "identifier"}:
            return None
        if modifier in {"above", "below"}:
            raise FhirError(
                Category.NOT_SUPPORTED, f"Modifier ':{modifier}' is not supported on '{param.code}'"
            )
        if param.targets and modifier not in param.targets:
            raise _bad(f"{param.code}:{modifier}", f"'{modifier}' is not a target type of this parameter")
        if modifier[:1].islower():
            raise _bad(f"{param.code}:{modifier}", "unknown modifier")
        return modifier

    @staticmethod
    def _reference_value(
        table: FromClause, param: SearchParam, type_modifier: str | None, raw: str, base_url: str
    ) -> ColumnElement[bool]:
        text = raw
        if base_url and text.startswith(base_url + "/"):
            text = text[len(base_url) + 1 :]
        if "://" in text or text.startswith("urn:"):
            return table.c.target_url == split_unescaped(text, "|")[0][:URL_LIMIT]
        text = unescape(text)
        ref_type, ref_id, _url = parse_reference(text)
        if ref_type is not None:
            if type_modifier and ref_type != type_modifier:
                return false()
            local = and_(table.c.target_type == ref_type, table.c.target_id == ref_id)
            if not base_url:
                return local
            # A stored absolute reference to our own base is the same local reference.
            return or_(local, table.c.target_url == f"{base_url}/{ref_type}/{ref_id}")
        if "/" in text or not text:
            raise _bad(param.code, f"'{raw}' is not a valid reference")
        types = [type_modifier] if type_modifier else list(param.targets)
        clause = table.c.target_id == text
        if not types:
            return clause
        local = and_(clause, table.c.target_type.in_(types))
        if not base_url:
            return local
        return or_(local, table.c.target_url.in_([f"{base_url}/{t}/{text}" for t in types]))

    def _chain(
        self,
        rtype: str,
        cols: Cols,
        param: SearchParam,
        modifier: str,
        rest: str,
        value: str,
        base_url: str,
        depth: int,
    ) -> ColumnElement[bool]:
        if param.type != "reference":
            raise _bad(param.code, "only reference parameters can be chained")
        chained_code = rest.split(".")[0].split(":")[0]
        candidates = [self._type_modifier(param, modifier)] if modifier else list(param.targets)
        targets = [t for t in candidates if t and self.registry.get(t, chained_code) is not None]
        if not targets:
            raise _bad(
                f"{param.code}.{rest}", f"no target type of '{param.code}' has a parameter '{chained_code}'"
            )
        target = resource.alias(f"chain{depth}")
        hop = Cols(target.c.pk, target.c.res_type, target.c.res_id, target.c.last_updated)
        per_type = [
            and_(
                target.c.res_type == t,
                self._criterion(t, hop, rest, value, base_url, depth + 1),
                *self._hop(t, target.c.pk),
            )
            for t in targets
        ]
        sub = (
            select(idx_reference.c.res_pk)
            .select_from(
                idx_reference.join(
                    target,
                    and_(
                        target.c.res_type == idx_reference.c.target_type,
                        target.c.res_id == idx_reference.c.target_id,
                    ),
                )
            )
            .where(
                idx_reference.c.param == param.code,
                idx_reference.c.res_type == rtype,
                target.c.deleted == false(),
                or_(*per_type),
            )
        )
        return cols.pk.in_(sub)

    def _has(
        self, rtype: str, cols: Cols, name: str, value: str, base_url: str, depth: int
    ) -> ColumnElement[bool]:
        # _has:Type:referenceParam:criterion (R4 search.html#has); the criterion may itself be _has.
        parts = name.split(":", 3)
        if len(parts) != 4 or not all(parts[1:]):
            raise _bad(name, "expected _has:Type:referenceParam:parameter")
        _, source_type, ref_code, criterion = parts
        if source_type not in self.registry.resource_types:
            raise _bad(name, f"unknown resource type '{source_type}'")
        ref_param = self.registry.get(source_type, ref_code)
        if ref_param is None or ref_param.type != "reference":
            raise _bad(name, f"'{ref_code}' is not a reference parameter of {source_type}")
        source = resource.alias(f"has{depth}")
        hop = Cols(source.c.pk, source.c.res_type, source.c.res_id, source.c.last_updated)
        inner = self._criterion(source_type, hop, criterion, value, base_url, depth + 1)
        sub = (
            select(literal(1))
            .select_from(idx_reference.join(source, source.c.pk == idx_reference.c.res_pk))
            .where(
                idx_reference.c.res_type == source_type,
                idx_reference.c.param == ref_code,
                idx_reference.c.target_type == cols.res_type,
                idx_reference.c.target_id == cols.res_id,
                source.c.deleted == false(),
                inner,
                *self._hop(source_type, source.c.pk),
            )
        )
        return sub.exists()


class _UnknownParamError(Exception):
    """A parameter the server does not know: ignored (lenient) or refused (strict)."""
