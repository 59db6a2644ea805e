"""The audit trail as FHIR: search and read of the AuditEvents the server wrote (R4 auditevent.html).

Events live in their own tables (``audit_event``, ``audit_patient``), not in the resource store:
they are written in the transaction of the access they record and never change. Newest first.
Who may read: a token with an explicit AuditEvent scope (``access.require``). A system client sees
every event; a practitioner's user token sees only its own accesses (least privilege), and with a
``patient/`` scope only those about its launch patient.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from flask import Response
from sqlalchemy import ColumnElement, and_, exists, func, literal, or_, select
from sqlalchemy.engine import Connection

from auth import policy
from auth.schema import audit_event, audit_patient
from coordination_api.errors import Category, FhirError, Issue, operation_outcome
from coordination_api.fhir import access
from coordination_api.fhir.context import services
from coordination_api.fhir.search import request_params
from coordination_api.search.paging import PageToken
from coordination_api.search.params.date import date_range
from coordination_api.search.values import split_or
from coordination_api.web.http import base_url, fhir_json_response, prefer, version_headers

TYPE = "AuditEvent"
CLIENT_SYSTEM = "urn:coordination:client"  # agent.who.identifier.system of client applications
_IGNORED_CONTROLS = {"_summary", "_elements"}  # accepted, whole events are returned
ae = audit_event


def _bad(param: str, message: str) -> FhirError:
    return FhirError(Category.INVALID, f"Search parameter '{param}': {message}")


def _local_ref(param: str, value: str, default_type: str | None) -> str:
    """``Patient/1``, ``1`` (with a default type) or ``[base]/Patient/1`` → ``Patient/1``."""
    base = base_url() + "/"
    if value.startswith(base):
        value = value[len(base) :]
    parts = value.split("/")
    if len(parts) == 1 and default_type and value:
        return f"{default_type}/{value}"
    if len(parts) == 2 and all(parts):
        return value
    raise _bad(param, f"'{value}' is not a reference of the form Type/id")


def _token_code(param: str, value: str, system: str) -> str:
    if "|" in value:
        sys, code = value.split("|", 1)
        if sys and sys != system:
            return "\x00"  # another code system: nothing matches
        value = code
    if not value:
        raise _bad(param, "a code is required")
    return value


def _criterion(name: str, value: str) -> ColumnElement[bool] | None:
    """One search parameter as SQL; None when the parameter is unknown."""
    code, _, modifier = name.partition(":")
    values = split_or(value)
    if not values:
        raise _bad(name, "a value is required")
    if modifier and (code, modifier) not in {("agent", "identifier"), ("subtype", "not"), ("outcome", "not")}:
        raise _bad(name, f"modifier ':{modifier}' is not supported here")
    match code:
        case "_id":
            return ae.c.event_id.in_(values)
        case "date":
            ors = [date_range(ae.c.recorded_us, ae.c.recorded_us, "date", v) for v in values]
            return or_(*ors)
        case "subtype":
            codes = [_token_code(name, v, "http://hl7.org/fhir/restful-interaction") for v in values]
            return ae.c.subtype.not_in(codes) if modifier == "not" else ae.c.subtype.in_(codes)
        case "outcome":
            codes = [_token_code(name, v, "http://hl7.org/fhir/audit-event-outcome") for v in values]
            return ae.c.outcome.not_in(codes) if modifier == "not" else ae.c.outcome.in_(codes)
        case "agent" if modifier == "identifier":
            ids = [_token_code(name, v, CLIENT_SYSTEM) for v in values]
            return ae.c.client_id.in_(ids)
        case "agent":
            return ae.c.agent.in_([_local_ref(name, v, "Practitioner") for v in values])
        case "entity":
            return ae.c.entity.in_([_local_ref(name, v, None) for v in values])
        case "patient":
            ids = [_local_ref(name, v, "Patient").split("/", 1)[1] for v in values]
            p = audit_patient
            rules = [p.c.audit_pk == ae.c.pk, p.c.patient_id.in_(ids)]
            f = access.patient_filter()
            if f is not None:  # a practitioner: only patients she reaches now (no oracle on a guess)
                rules.append(~policy.out_of_reach(f, p.c.patient_id, literal("Patient")))
            return exists(select(literal(1)).where(*rules))
    return None


def _scope_filters() -> list[ColumnElement[bool]]:
    """What this token may see of the trail (see the module docstring)."""
    who = access.principal()
    if who.unrestricted or not who.is_user:
        return []
    filters: list[ColumnElement[bool]] = [ae.c.agent == who.agent]
    if "patient" in who.scopes.contexts() and not who.scopes.allows(TYPE, "r", ("user",)):
        p = audit_patient
        filters.append(
            exists(select(literal(1)).where(p.c.audit_pk == ae.c.pk, p.c.patient_id == who.patient_id))
        )
    return filters


def _count(params: list[tuple[str, str]]) -> int:
    settings = services().settings
    count = settings.default_page_size
    for key, value in params:
        if key == "_count":
            if not value.isdigit():
                raise _bad("_count", f"'{value}' is not a whole number")
            count = min(int(value), settings.max_page_size)
    return count


def _compile(params: list[tuple[str, str]], strict: bool) -> tuple[list[ColumnElement[bool]], list[Issue]]:
    where: list[ColumnElement[bool]] = []
    issues: list[Issue] = []
    for name, value in params:
        if "\x00" in name or "\x00" in value:
            raise _bad(name.replace("\x00", ""), "parameters must not contain NUL characters")
        if name in {"_count", "_total"} | _IGNORED_CONTROLS:
            continue
        if name == "_sort":
            if value not in {"-date", "-_lastUpdated"}:
                raise _bad("_sort", "the audit trail is sorted newest first only (-date)")
            continue
        condition = _criterion(name, value)
        if condition is None:
            message = f"Unknown or unsupported search parameter '{name}' for {TYPE}"
            if strict:
                raise FhirError(Category.INVALID, message)
            issues.append(Issue("warning", "not-supported", f"{message}; it was ignored"))
            continue
        where.append(condition)
    return where, issues


def search() -> Response:
    access.require(TYPE, "s")
    params = request_params()
    page = next((v for k, v in params if k == "_page"), None)
    if page is not None:
        token = PageToken.decode(page)
    else:
        params = [p for p in params if p[0] != "_page"]
        token = PageToken(params, 0, _count(params), 0)
    where, issues = _compile(token.params, prefer("handling") == "strict")
    where += _scope_filters()
    with services().repo.reading() as conn:
        bound = token.bound or int(conn.execute(select(func.coalesce(func.max(ae.c.pk), 0))).scalar_one())
        where.append(ae.c.pk <= bound)
        rows = _page_rows(conn, where, token)
        total = None
        if any(k == "_total" and v == "accurate" for k, v in token.params):
            total = int(conn.execute(select(func.count()).select_from(ae).where(*where)).scalar_one())
    has_next = len(rows) > token.count
    rows = rows[: token.count]
    link_base = f"{base_url()}/{TYPE}"
    links = [{"relation": "self", "url": _link(link_base, token, page is not None)}]
    if has_next:
        last = rows[-1]
        nxt = PageToken(token.params, token.offset + token.count, token.count, bound, [last[0], last[1]])
        links.append({"relation": "next", "url": f"{link_base}?{urlencode([('_page', nxt.encode())])}"})
    with services().repo.reading() as conn:
        contents = [_redacted(conn, content) for _recorded, _pk, _event_id, content in rows]
    entries = [
        f'{{"fullUrl":{orjson.dumps(f"{link_base}/{row[2]}").decode()},'
        f'"resource":{content},"search":{{"mode":"match"}}}}'
        for row, content in zip(rows, contents, strict=True)
    ]
    if issues:
        outcome = orjson.dumps(operation_outcome(issues)).decode()
        entries.append(f'{{"resource":{outcome},"search":{{"mode":"outcome"}}}}')
    head: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        head["total"] = total
    head_json = orjson.dumps({**head, "link": links}).decode()
    body = head_json if not entries else head_json[:-1] + ',"entry":[' + ",".join(entries) + "]}"
    return fhir_json_response(body)


def _page_rows(conn: Connection, where: list[ColumnElement[bool]], token: PageToken) -> list[Any]:
    if token.after is not None:
        if len(token.after) != 2 or not all(type(v) is int for v in token.after):
            raise FhirError(Category.INVALID, "Invalid or corrupted _page token")
        recorded, pk = token.after
        where = [*where, or_(ae.c.recorded_us < recorded, and_(ae.c.recorded_us == recorded, ae.c.pk < pk))]
    stmt = (
        select(ae.c.recorded_us, ae.c.pk, ae.c.event_id, ae.c.content)
        .where(*where)
        .order_by(ae.c.recorded_us.desc(), ae.c.pk.desc())
        .limit(token.count + 1)
    )
    return list(conn.execute(stmt).all())


def _link(link_base: str, token: PageToken, later: bool) -> str:
    if later:
        return f"{link_base}?{urlencode([('_page', token.encode())])}"
    return f"{link_base}?{urlencode(token.params)}" if token.params else link_base


def read(event_id: str, version_id: str | None = None) -> Response:
    access.require(TYPE, "r")
    with services().repo.reading() as conn:
        row = conn.execute(
            select(ae.c.pk, ae.c.content, ae.c.recorded_us).where(ae.c.event_id == event_id)
        ).first()
        if row is None or version_id not in {None, "1"}:
            raise FhirError(Category.NOT_FOUND, f"{TYPE}/{event_id} is not known")
        filters = _scope_filters()
        if filters and conn.execute(select(ae.c.pk).where(ae.c.pk == row[0], *filters)).first() is None:
            raise FhirError(Category.FORBIDDEN, "A practitioner may read only the audit of its own accesses")
        content = _redacted(conn, row[1])
    return fhir_json_response(content, 200, version_headers(1, row[2]))


def _redacted(conn: Connection, content: str) -> str:
    """An event as a practitioner may see it: the patients she does not reach now are left out (her
    refused request must not tell her whose record an id belongs to; issue 16)."""
    f = access.patient_filter()
    if f is None:
        return content
    event = orjson.loads(content)
    named = [
        str(e["what"]["reference"]).split("/", 1)[1]
        for e in event.get("entity") or []
        if str((e.get("what") or {}).get("reference", "")).startswith("Patient/")
    ]
    if not named:
        return content
    reach = dict(policy.decide(conn, f, "Patient", named).reach)
    event["entity"] = [
        e
        for e in event.get("entity") or []
        if not str((e.get("what") or {}).get("reference", "")).startswith("Patient/")
        or reach.get(str(e["what"]["reference"]).split("/", 1)[1], False)
    ]
    return orjson.dumps(event).decode()


def history() -> Response:
    raise FhirError(
        Category.NOT_SUPPORTED,
        "AuditEvents are never updated, so they have no history; search AuditEvent instead",
    )
