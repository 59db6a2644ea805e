"""Compile FHIR search parameters into SQL over the index tables (R4 search.html).

Nothing here reads resource JSON: every criterion is a semi-join on an index table, so the
database plans it with its indexes whatever the number of stored resources. This module handles the
result parameters (``_count``, ``_sort``, ``_include``…); :mod:`coordination_api.search.criteria`
sends each criterion to the module of its parameter type (``search/params/``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter

from coordination_api.errors import Category, FhirError, Issue
from coordination_api.search.criteria import context, criterion
from coordination_api.search.params.common import MAIN, HopGuard, UnknownParamError, bad
from coordination_api.search.query import CursorValue, Include, SearchQuery, SortKey
from coordination_api.search.registry import CONTROL_PARAMS, SearchRegistry
from coordination_api.search.sort import sort_keys

# What other modules import from here (the compiled query lives in search/query.py).
__all__ = ["CursorValue", "HopGuard", "Include", "SearchCompiler", "SearchQuery", "SortKey"]

# The values one search may bind (OR'ed values, the codes of ``:in`` value sets and of ``:above`` /
# ``:below``, ``_id`` lists, on every hop): the databases cap bound parameters per statement
# (PostgreSQL 65,535; SQLite 32,766 by default), and a search over that cap is refused as such
# (400), never sent to fail as "database unavailable" (review 20 F6). A c80 document type :in
# (6,401 codes) fits three times.
MAX_SEARCH_VALUES = 20_000

SUMMARY_VALUES = {"true", "false", "text", "data", "count"}
TOTAL_VALUES = {"none", "estimate", "accurate"}


class SearchCompiler:
    """Turns (name, value) pairs into a :class:`SearchQuery` for one resource type."""

    def __init__(
        self, registry: SearchRegistry, *, default_count: int = 20, max_count: int = 1000, dialect: str = ""
    ) -> None:
        self.registry = registry
        self.default_count = default_count
        self.max_count = max_count
        self.sqlite = dialect == "sqlite"

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
        ctx = context(self.registry, sqlite=self.sqlite, base_url=base_url, hop_guard=hop_guard)
        query = SearchQuery(resource_type, count=self.default_count, sqlite=self.sqlite)
        sort_spec: str | None = None
        bound = 0
        for name, value in params:
            if "\x00" in name or "\x00" in value:  # no database stores NUL in text
                raise bad(name.replace("\x00", ""), "parameters must not contain NUL characters")
            if value.count(",") >= MAX_SEARCH_VALUES:  # before building a clause per value
                raise _too_many_values(name)
            if name in CONTROL_PARAMS or name.startswith(("_include", "_revinclude")):
                if name == "_sort":
                    sort_spec = value
                    query.used.append((name, value))
                else:
                    self._control(query, name, value)
                continue
            try:
                condition = criterion(ctx, resource_type, MAIN, name, value, 0)
            except UnknownParamError as exc:
                if strict:
                    raise FhirError(Category.INVALID, str(exc)) from exc
                query.issues.append(Issue("warning", "not-supported", f"{exc}; it was ignored"))
                continue
            bound += bound_values(condition)
            if bound > MAX_SEARCH_VALUES:
                raise _too_many_values(name)
            query.where.append(condition)
            query.used.append((name, value))
        if sort_spec:
            query.sort_keys = sort_keys(self.registry, resource_type, sort_spec)
        return query

    # -- result parameters (R4 search.html#return) ------------------------------------------------

    def _control(self, query: SearchQuery, name: str, value: str) -> None:
        if name == "_count":
            try:
                count = int(value)
            except ValueError as exc:
                raise bad(name, f"'{value}' is not a whole number") from exc
            if count < 0:
                raise bad(name, "must not be negative")
            query.count = min(count, self.max_count)
        elif name == "_summary":
            if value not in SUMMARY_VALUES:
                raise bad(name, f"'{value}' is not one of {sorted(SUMMARY_VALUES)}")
            query.summary = value
        elif name == "_total":
            if value not in TOTAL_VALUES:
                raise bad(name, f"'{value}' is not one of {sorted(TOTAL_VALUES)}")
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
            raise bad(name, "unknown parameter")
        if modifier not in {"", "iterate", "recurse"}:
            raise bad(name, f"unknown modifier ':{modifier}'")
        iterate = modifier in {"iterate", "recurse"}
        if value == "*":
            include = Include("*", "*", None, iterate)
        else:
            parts = value.split(":")
            if len(parts) not in (2, 3):
                raise bad(name, f"'{value}' must be SourceType:searchParam[:TargetType]")
            source, code = parts[0], parts[1]
            target = parts[2] if len(parts) == 3 else None
            param = self.registry.get(source, code)
            if param is None or param.type != "reference":
                raise bad(name, f"'{source}:{code}' is not a reference search parameter")
            if target is not None and param.targets and target not in param.targets:
                raise bad(name, f"'{target}' is not a target of {source}:{code}")
            include = Include(source, code, target, iterate)
        (query.includes if base == "_include" else query.revincludes).append(include)


def bound_values(clause: ColumnElement[Any]) -> int:
    """The parameters ``clause`` binds once rendered: an expanding ``IN`` binds one per item."""
    count = 0
    for node in visitors.iterate(clause):
        if isinstance(node, BindParameter):
            value = node.value
            count += len(value) if node.expanding and isinstance(value, list | tuple) else 1
    return count


def _too_many_values(name: str) -> FhirError:
    return bad(
        name,
        f"the search binds more than {MAX_SEARCH_VALUES} values (OR'ed values and the codes of value sets "
        "or hierarchies, all parameters together); split it into several searches",
    )
