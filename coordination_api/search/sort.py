"""``_sort`` (R4 search.html#sort): per-resource sort keys, text ordered by code point everywhere."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from coordination_api.search.params.common import bad
from coordination_api.search.query import SortKey
from coordination_api.search.registry import SearchParam, SearchRegistry
from coordination_api.storage.schema import INDEX_TABLES, resource


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


_TEXTUAL = {"string", "token", "uri", "reference"}


def sort_keys(registry: SearchRegistry, resource_type: str, spec: str) -> list[SortKey]:
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
            param = registry.get(resource_type, code)
            if param is None:
                raise bad("_sort", f"unknown search parameter '{code}' for {resource_type}")
            column = _sort_value(param, descending)
        keys.append(SortKey(column, descending))
    return keys


def _sort_value(param: SearchParam, descending: bool) -> Any:
    table = INDEX_TABLES.get(param.type)
    if table is None:
        raise bad("_sort", f"cannot sort on '{param.code}' ({param.type})")
    # For a date, the end of its range in the sort's direction.
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
    textual = param.type in _TEXTUAL
    value: Any = _CodepointOrder(table.c[column]) if textual else table.c[column]
    key = (
        select(agg(value))
        .where(table.c.res_pk == resource.c.pk, table.c.param == param.code)
        .scalar_subquery()
    )
    return _CodepointOrder(key) if textual else key
