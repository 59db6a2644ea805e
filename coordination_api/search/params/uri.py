"""uri parameters (R4 search.html#uri): equality, ``:below`` (starts with), ``:above`` (an ancestor path)."""

from __future__ import annotations

from sqlalchemy import ColumnElement
from sqlalchemy.sql.expression import FromClause

from coordination_api.search.params.common import Context, check_modifier, on_index
from coordination_api.search.registry import SearchParam
from coordination_api.search.values import split_or
from coordination_api.storage.indexer import URL_LIMIT

_MODIFIERS = frozenset({"", "below", "above"})


def ors(
    ctx: Context, table: FromClause, param: SearchParam, modifier: str, value: str
) -> list[ColumnElement[bool]]:
    check_modifier(param, modifier, _MODIFIERS)
    return [_match(table, modifier, raw) for raw in split_or(value)]


def _match(table: FromClause, modifier: str, raw: str) -> ColumnElement[bool]:
    if modifier == "below":
        return table.c.value.startswith(raw[:URL_LIMIT], autoescape=True)
    if modifier == "above":
        # The value itself and every ancestor path, with or without the trailing "/".
        cuts = [i for i, c in enumerate(raw) if c == "/" and i > raw.find("://") + 2]
        prefixes = {raw[:i] for i in cuts} | {raw[: i + 1] for i in cuts} | {raw[:URL_LIMIT]}
        return table.c.value.in_(sorted(prefixes))
    return table.c.value == raw[:URL_LIMIT]


build = on_index(ors)
