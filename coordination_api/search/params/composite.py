"""composite parameters (R4 search.html#composite): ``code-value-quantity=http://loinc.org|8480-6$gt100``,
every component matching a value of the same element, i.e. index rows with the same ``elem``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.sql.expression import FromClause

from coordination_api.search.params import date, number, reference, string, token, uri
from coordination_api.search.params.common import Cols, Context, Ors, bad
from coordination_api.search.registry import SearchParam
from coordination_api.search.values import split_or, split_value, unescape
from coordination_api.storage.indexer import component_param
from coordination_api.storage.schema import INDEX_TABLES

# A component's alternatives, by its type (registry.COMPONENT_TYPES); anything else is a reference.
COMPONENT_ORS: dict[str, Ors] = {
    "token": token.ors,
    "quantity": number.quantity_ors,
    "date": date.ors,
    "number": number.number_ors,
    "string": string.ors,
    "uri": uri.ors,
}


def build(
    ctx: Context, rtype: str, cols: Cols, param: SearchParam, modifier: str, value: str
) -> ColumnElement[bool]:
    if modifier:
        raise bad(f"{param.code}:{modifier}", "modifiers are not supported on a composite parameter")
    components = param.components
    tables = [INDEX_TABLES[c.type].alias() for c in components]
    as_params = [
        SearchParam(param.code, c.type, param.url, c.expression, c.targets, resource_type=rtype)
        for c in components
    ]
    alternatives: list[ColumnElement[bool]] = []
    for raw in split_or(value, keep_escapes=True):
        pieces = split_value(raw, "$", keep_escapes=True)
        if len(pieces) != len(components):
            raise bad(
                param.code, f"'{unescape(raw)}' must have {len(components)} components separated by '$'"
            )
        alternatives.append(
            and_(
                *(
                    or_(*_component_ors(ctx, table, sub, piece))
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
    ctx: Context, table: FromClause, param: SearchParam, piece: str
) -> list[ColumnElement[bool]]:
    if not piece:
        raise bad(param.code, "every component of a composite value needs a value")
    return COMPONENT_ORS.get(param.type, reference.ors)(ctx, table, param, "", piece)
