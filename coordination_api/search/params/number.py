"""number and quantity parameters (R4 search.html#number, #quantity): prefixes, and the implicit
range that the precision of the searched value gives for ``eq`` and ``ne``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.sql.expression import FromClause

from coordination_api.search.params.common import Context, check_modifier, on_index
from coordination_api.search.registry import SearchParam
from coordination_api.search.values import NumberValue, parse_number, parse_quantity, split_or, split_prefix
from coordination_api.storage.indexer import cut


def compare(column: ColumnElement[Any], prefix: str, number: NumberValue) -> ColumnElement[bool]:
    value, low, high = number.value, number.low, number.high
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


def number_ors(
    ctx: Context, table: FromClause, param: SearchParam, modifier: str, value: str
) -> list[ColumnElement[bool]]:
    check_modifier(param, modifier)
    out = []
    for raw in split_or(value):
        prefix, text = split_prefix(raw)
        out.append(compare(table.c.value, prefix, parse_number(text, param.code)))
    return out


def quantity_ors(
    ctx: Context, table: FromClause, param: SearchParam, modifier: str, value: str
) -> list[ColumnElement[bool]]:
    """``[prefix]number|system|code``; without a system the code may also be the unit as written."""
    check_modifier(param, modifier)
    out = []
    for raw in split_or(value, keep_escapes=True):
        quantity = parse_quantity(raw, param.code)
        clauses = [compare(table.c.value, quantity.prefix, quantity.number)]
        code = cut(quantity.code)
        if quantity.system is not None:
            clauses.append(table.c.system == cut(quantity.system))
        if code is not None:
            if quantity.system is None:
                clauses.append(or_(table.c.code == code, table.c.unit == code))
            else:
                clauses.append(table.c.code == code)
        out.append(and_(*clauses))
    return out


build_number = on_index(number_ors)
build_quantity = on_index(quantity_ors)
