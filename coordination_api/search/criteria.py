"""The dispatcher: one ``name[:modifier][.chain]=value`` pair to the SQL of its parameter type."""

from __future__ import annotations

from sqlalchemy import ColumnElement

from coordination_api.search.params import composite, date, number, reference, special, string, token, uri
from coordination_api.search.params.common import Builder, Cols, Context, HopGuard, UnknownParamError, bad
from coordination_api.search.registry import SearchRegistry

MAX_CHAIN_DEPTH = 4

# By SearchParameter.type; a type without one (special, e.g. Location near) is not supported.
BUILDERS: dict[str, Builder] = {
    "string": string.build,
    "token": token.build,
    "date": date.build,
    "number": number.build_number,
    "quantity": number.build_quantity,
    "uri": uri.build,
    "reference": reference.build,
    "composite": composite.build,
}

# Parameters for all resources (R4 search.html#all) that this server does not implement.
UNSUPPORTED = {"_text", "_content", "_list", "_query", "_filter", "_type"}


def context(registry: SearchRegistry, *, sqlite: bool, base_url: str, hop_guard: HopGuard | None) -> Context:
    return Context(registry, sqlite, base_url, hop_guard, criterion)


def criterion(
    ctx: Context, resource_type: str, cols: Cols, name: str, value: str, depth: int
) -> ColumnElement[bool]:
    """Raises :class:`UnknownParamError` for a parameter the server does not know or support."""
    if depth > MAX_CHAIN_DEPTH:
        raise bad(name, f"chains deeper than {MAX_CHAIN_DEPTH} are not supported")
    if name.startswith("_has:"):
        return reference.has(ctx, resource_type, cols, name, value, depth)
    head, dot, rest = name.partition(".")
    code, _, modifier = head.partition(":")
    param = ctx.registry.get(resource_type, code)
    if param is None:
        if code in UNSUPPORTED:
            raise UnknownParamError(f"Search parameter '{code}' is not supported")
        raise UnknownParamError(f"Unknown search parameter '{code}' for resource type {resource_type}")
    if dot:
        return reference.chain(ctx, resource_type, cols, param, modifier, rest, value, depth)
    if modifier == "missing":
        return special.missing(resource_type, cols, param, value)
    if code == "_id":
        return special.resource_id(cols, modifier, value)
    if code == "_lastUpdated":
        return special.last_updated(cols, name, modifier, value)
    builder = BUILDERS.get(param.type)
    if builder is None:  # ignored and reported, or 400 when strict
        raise UnknownParamError(f"Search parameter '{code}' of type {param.type} is not supported")
    return builder(ctx, resource_type, cols, param, modifier, value)
