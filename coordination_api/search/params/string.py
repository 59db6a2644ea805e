"""string parameters (R4 search.html#string): starts-with on the normalized value, ``:exact``,
``:contains``."""

from __future__ import annotations

from sqlalchemy import ColumnElement
from sqlalchemy.sql.expression import FromClause

from coordination_api.search.params.common import Context, check_modifier, on_index
from coordination_api.search.registry import SearchParam
from coordination_api.search.values import split_or
from coordination_api.storage.indexer import normalize

_MODIFIERS = frozenset({"", "exact", "contains"})


def ors(
    ctx: Context, table: FromClause, param: SearchParam, modifier: str, value: str
) -> list[ColumnElement[bool]]:
    check_modifier(param, modifier, _MODIFIERS)
    return [_match(ctx, table, modifier, raw) for raw in split_or(value)]


def _match(ctx: Context, table: FromClause, modifier: str, raw: str) -> ColumnElement[bool]:
    if modifier == "exact":
        return table.c.value_exact == raw
    if modifier == "contains":
        return table.c.value_norm.contains(normalize(raw), autoescape=True)
    return ctx.prefix(table.c.value_norm, normalize(raw))


build = on_index(ors)
