"""reference parameters (R4 search.html#reference): ``[Type/]id`` or an absolute url, ``:Type`` and
``:identifier``; chains (``subject.name``, R4 search.html#chaining) and ``_has`` (#has), whose
criteria on the resources on the way go back through the dispatcher."""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, false, literal, or_, select
from sqlalchemy.sql.expression import FromClause

from coordination_api.errors import Category, FhirError
from coordination_api.search.params.common import Cols, Context, bad, on_index, points_to
from coordination_api.search.registry import SearchParam
from coordination_api.search.values import parse_token, split_or, split_value, unescape
from coordination_api.storage.indexer import URL_LIMIT, cut, parse_reference
from coordination_api.storage.schema import idx_reference, resource


def ors(
    ctx: Context, table: FromClause, param: SearchParam, modifier: str, value: str
) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    resource_type = type_modifier(param, modifier)
    wanted = _Wanted()
    for raw in split_or(value, keep_escapes=True):
        if not raw:
            raise bad(param.code, "a reference value is required")
        if modifier == "identifier":
            token = parse_token(raw)
            clauses = []
            if token.code is not None:
                clauses.append(table.c.identifier_value == cut(token.code))
            if token.system:
                clauses.append(table.c.identifier_system == cut(token.system))
            out.append(and_(*clauses) if clauses else false())
            continue
        _value(wanted, param, resource_type, raw, ctx.base_url)
    return out + wanted.clauses(table)


class _Wanted:
    """The references a value list names, grouped so that many values make a few index lookups
    (``encounter=Encounter/a,Encounter/b,…``: one ``target_id IN`` per type, one ``target_url IN``)."""

    def __init__(self) -> None:
        self.by_type: dict[str, list[str]] = {}
        self.bare: dict[tuple[str, ...], list[str]] = {}
        self.urls: list[str] = []
        self.nothing = False

    def clauses(self, table: FromClause) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        for ref_type, ids in self.by_type.items():
            out.append(and_(table.c.target_type == ref_type, _one_of(table.c.target_id, ids)))
        for types, ids in self.bare.items():
            on_id = _one_of(table.c.target_id, ids)
            out.append(and_(on_id, _one_of(table.c.target_type, list(types))) if types else on_id)
        if self.urls:
            out.append(_one_of(table.c.target_url, self.urls))
        if self.nothing and not out:
            out.append(false())
        return out


def _one_of(column: ColumnElement[str], values: list[str]) -> ColumnElement[bool]:
    unique = list(dict.fromkeys(values))
    return column == unique[0] if len(unique) == 1 else column.in_(unique)


build = on_index(ors)


def type_modifier(param: SearchParam, modifier: str) -> str | None:
    """The resource type a ``:Type`` modifier names; None for no modifier and ``:identifier``."""
    if modifier in {"", "identifier"}:
        return None
    if modifier in {"above", "below"}:
        raise FhirError(Category.NOT_SUPPORTED, f"Modifier ':{modifier}' is not supported on '{param.code}'")
    if param.targets and modifier not in param.targets:
        raise bad(f"{param.code}:{modifier}", f"'{modifier}' is not a target type of this parameter")
    if modifier[:1].islower():
        raise bad(f"{param.code}:{modifier}", "unknown modifier")
    return modifier


def _value(wanted: _Wanted, param: SearchParam, resource_type: str | None, raw: str, base_url: str) -> None:
    text = raw
    if base_url and text.startswith(base_url + "/"):
        text = text[len(base_url) + 1 :]
    if "://" in text or text.startswith("urn:"):
        wanted.urls.append(split_value(text, "|")[0][:URL_LIMIT])
        return
    text = unescape(text)
    ref_type, ref_id, _url = parse_reference(text)
    if ref_type is not None:
        if resource_type and ref_type != resource_type:
            wanted.nothing = True
            return
        wanted.by_type.setdefault(ref_type, []).append(str(ref_id))
        if base_url:  # a stored absolute reference to our own base is the same local reference
            wanted.urls.append(f"{base_url}/{ref_type}/{ref_id}")
        return
    if "/" in text or not text:
        raise bad(param.code, f"'{raw}' is not a valid reference")
    types = [resource_type] if resource_type else list(param.targets)
    if not types:
        wanted.bare.setdefault((), []).append(text)
        return
    wanted.bare.setdefault(tuple(types), []).append(text)
    if base_url:
        wanted.urls.extend(f"{base_url}/{t}/{text}" for t in types)


def chain(
    ctx: Context,
    rtype: str,
    cols: Cols,
    param: SearchParam,
    modifier: str,
    rest: str,
    value: str,
    depth: int,
) -> ColumnElement[bool]:
    """``param[:Type].rest=value``: the referenced resource (of a type that has the chained
    parameter) meets ``rest=value`` and the access filters of the hop."""
    if param.type != "reference":
        raise bad(param.code, "only reference parameters can be chained")
    chained_code = rest.split(".")[0].split(":")[0]
    candidates = [type_modifier(param, modifier)] if modifier else list(param.targets)
    targets = [t for t in candidates if t and ctx.registry.get(t, chained_code) is not None]
    if not targets:
        raise bad(
            f"{param.code}.{rest}", f"no target type of '{param.code}' has a parameter '{chained_code}'"
        )
    target = resource.alias(f"chain{depth}")
    hop = Cols.of(target)
    per_type = [
        and_(
            target.c.res_type == t,
            ctx.nested(t, hop, rest, value, depth + 1),
            *ctx.hop(t, target.c.pk),
        )
        for t in targets
    ]
    sub = (
        select(idx_reference.c.res_pk)
        .select_from(idx_reference.join(target, points_to(idx_reference, target)))
        .where(
            idx_reference.c.param == param.code,
            idx_reference.c.res_type == rtype,
            target.c.deleted == false(),
            or_(*per_type),
        )
    )
    return cols.pk.in_(sub)


def has(ctx: Context, rtype: str, cols: Cols, name: str, value: str, depth: int) -> ColumnElement[bool]:
    # _has:Type:referenceParam:criterion (R4 search.html#has); the criterion may itself be _has.
    parts = name.split(":", 3)
    if len(parts) != 4 or not all(parts[1:]):
        raise bad(name, "expected _has:Type:referenceParam:parameter")
    _, source_type, ref_code, criterion = parts
    if source_type not in ctx.registry.resource_types:
        raise bad(name, f"unknown resource type '{source_type}'")
    ref_param = ctx.registry.get(source_type, ref_code)
    if ref_param is None or ref_param.type != "reference":
        raise bad(name, f"'{ref_code}' is not a reference parameter of {source_type}")
    source = resource.alias(f"has{depth}")
    inner = ctx.nested(source_type, Cols.of(source), criterion, value, depth + 1)
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
            *ctx.hop(source_type, source.c.pk),
        )
    )
    return sub.exists()
