"""date parameters (R4 search.html#date): the searched value and the stored one are both ranges."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import ColumnElement, and_, not_, or_
from sqlalchemy.sql.expression import FromClause

from coordination_api.search.dates import MAX_US, MIN_US, InvalidDateError, parse_range
from coordination_api.search.params.common import Context, bad, check_modifier, on_index
from coordination_api.search.registry import SearchParam
from coordination_api.search.values import split_or, split_prefix


def date_range(low: ColumnElement[Any], high: ColumnElement[Any], code: str, raw: str) -> ColumnElement[bool]:
    """``[prefix]date`` against stored ranges [low, high] (a point when both are the same column)."""
    prefix, text = split_prefix(raw)
    try:
        s_low, s_high = parse_range(text)
    except InvalidDateError as exc:
        raise bad(code, str(exc)) from exc
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


def ors(
    ctx: Context, table: FromClause, param: SearchParam, modifier: str, value: str
) -> list[ColumnElement[bool]]:
    check_modifier(param, modifier)
    return [date_range(table.c.low, table.c.high, param.code, raw) for raw in split_or(value)]


build = on_index(ors)
