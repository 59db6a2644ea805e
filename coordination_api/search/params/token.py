"""token parameters (R4 search.html#token): ``[system]|[code]``, and the modifiers ``:not``, ``:text``,
``:in``/``:not-in``, ``:above``/``:below`` and ``:of-type``."""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, false, or_, select
from sqlalchemy.sql.expression import FromClause

from coordination_api.search.params.common import Cols, Context, bad, indexed
from coordination_api.search.registry import SearchParam
from coordination_api.search.terminology import subsumed, value_set_codes
from coordination_api.search.values import parse_token, split_or, split_value, unescape
from coordination_api.storage.indexer import cut, normalize, of_type_param
from coordination_api.storage.schema import INDEX_TABLES


def ors(
    ctx: Context, table: FromClause, param: SearchParam, modifier: str, value: str
) -> list[ColumnElement[bool]]:
    """The plain match (``:not`` is its negation, applied by the caller)."""
    out: list[ColumnElement[bool]] = []
    for raw in split_or(value, keep_escapes=True):
        token = parse_token(raw)
        clauses: list[ColumnElement[bool]] = []
        if token.code is not None:
            clauses.append(table.c.code == cut(token.code))
        if token.system == "":
            clauses.append(table.c.system.is_(None))
        elif token.system is not None:
            clauses.append(table.c.system == cut(token.system))
        if token.code is None and not token.system:
            raise bad(param.code, f"'{raw}' has neither a system nor a code")
        out.append(and_(*clauses))
    return out


def build(
    ctx: Context, rtype: str, cols: Cols, param: SearchParam, modifier: str, value: str
) -> ColumnElement[bool]:
    table = INDEX_TABLES["token"]
    if modifier == "text":
        text_ors = [ctx.prefix(table.c.text_norm, normalize(raw)) for raw in split_or(value)]
        return indexed(rtype, cols, param, text_ors)
    if modifier in {"in", "not-in"}:
        set_ors = _in_value_sets(table, param, split_or(value))
        return indexed(rtype, cols, param, set_ors, negate=modifier == "not-in")
    if modifier in {"above", "below"}:
        walked: list[ColumnElement[bool]] = []
        for raw in dict.fromkeys(split_or(value, keep_escapes=True)):
            token = parse_token(raw)
            codes = subsumed(token.system, token.code, modifier, param.code)
            walked.append(and_(table.c.system == cut(token.system), table.c.code.in_(sorted(codes))))
        return indexed(rtype, cols, param, walked)
    if modifier == "of-type":
        return _of_type(rtype, cols, param, value)
    if modifier not in {"", "not"}:
        raise bad(f"{param.code}:{modifier}", f"unknown modifier ':{modifier}' on a token parameter")
    return indexed(rtype, cols, param, ors(ctx, table, param, modifier, value), negate=modifier == "not")


def _in_value_sets(table: FromClause, param: SearchParam, urls: list[str]) -> list[ColumnElement[bool]]:
    """The token is one of the codes of one of the value sets (R4 search.html#token ``:in``); a token
    without a system (an element of type ``code``, whose system is implicit) matches on its code.
    The codes of all the value sets are bound once each (a value set repeated, or two sharing codes,
    would otherwise bind them again: review 20 F6)."""
    by_system: dict[str | None, set[str]] = {}
    for url in dict.fromkeys(urls):
        for system, code in value_set_codes(url, f"{param.code}:in"):
            by_system.setdefault(system, set()).add(cut(code) or "")
    out: list[ColumnElement[bool]] = []
    for system, codes in sorted(by_system.items(), key=lambda item: item[0] or ""):
        if system is None:
            out.append(table.c.code.in_(sorted(codes)))
        else:
            system_matches = or_(table.c.system == cut(system), table.c.system.is_(None))
            out.append(and_(table.c.code.in_(sorted(codes)), system_matches))
    return out or [false()]


def _of_type(rtype: str, cols: Cols, param: SearchParam, value: str) -> ColumnElement[bool]:
    """``identifier:of-type=system|code|value``: an Identifier whose type has that coding and whose
    value is that value (R4 search.html#token); the type and value rows share ``elem``."""
    kind = INDEX_TABLES["token"].alias()
    ident = INDEX_TABLES["token"].alias()
    alternatives: list[ColumnElement[bool]] = []
    for raw in split_or(value, keep_escapes=True):
        parts = split_value(raw, "|")
        if len(parts) != 3 or not all(parts):
            raise bad(f"{param.code}:of-type", f"'{unescape(raw)}' must be system|code|value")
        alternatives.append(
            and_(
                kind.c.system == cut(parts[0]),
                kind.c.code == cut(parts[1]),
                ident.c.code == cut(parts[2]),
            )
        )
    sub = (
        select(kind.c.res_pk)
        .select_from(
            kind.join(
                ident,
                and_(
                    ident.c.res_pk == kind.c.res_pk,
                    ident.c.elem == kind.c.elem,
                    ident.c.param == of_type_param(param.code, 1),
                ),
            )
        )
        .where(kind.c.param == of_type_param(param.code, 0), kind.c.res_type == rtype, or_(*alternatives))
    )
    return cols.pk.in_(sub)
