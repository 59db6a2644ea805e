"""The parameters answered from the resource row itself (``_id``, ``_lastUpdated``, R4 search.html#all)
and ``:missing`` on any parameter (R4 search.html#modifiers)."""

from __future__ import annotations

from sqlalchemy import ColumnElement, false, or_, select, true

from coordination_api.search.params.common import Cols, absent, bad
from coordination_api.search.params.date import date_range
from coordination_api.search.registry import SearchParam
from coordination_api.search.values import split_or
from coordination_api.storage.indexer import component_param
from coordination_api.storage.schema import INDEX_TABLES


def missing(rtype: str, cols: Cols, param: SearchParam, value: str) -> ColumnElement[bool]:
    if value not in {"true", "false"}:
        raise bad(f"{param.code}:missing", "value must be 'true' or 'false'")
    if param.code == "_id" or param.code == "_lastUpdated":
        return false() if value == "true" else true()
    if param.type == "composite":  # present: some element has every component (see the indexer)
        table = INDEX_TABLES[param.components[0].type]
        where = (table.c.param == component_param(param.code, 0), table.c.res_type == rtype)
    else:
        table = INDEX_TABLES[param.type]
        where = (table.c.param == param.code, table.c.res_type == rtype)
    if value == "true":
        return absent(table, cols, where)
    return cols.pk.in_(select(table.c.res_pk).where(*where))


def resource_id(cols: Cols, modifier: str, value: str) -> ColumnElement[bool]:
    ids = [v for v in split_or(value) if v]
    if not ids:
        raise bad("_id", "a value is required")
    if modifier == "not":
        return cols.res_id.not_in(ids)
    if modifier:
        raise bad("_id", f"modifier ':{modifier}' is not supported")
    return cols.res_id.in_(ids)


def last_updated(cols: Cols, name: str, modifier: str, value: str) -> ColumnElement[bool]:
    if modifier:
        raise bad(name, f"modifier ':{modifier}' is not supported")
    return or_(
        *(date_range(cols.last_updated, cols.last_updated, "_lastUpdated", v) for v in split_or(value))
    )
