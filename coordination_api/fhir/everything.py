"""Patient/[id]/$everything and Encounter/[id]/$everything.

R4 patient-operation-everything.html and encounter-operation-everything.html: a searchset Bundle of
the focal resource and every resource of its compartment (compartmentdefinition-patient.html,
compartmentdefinition-encounter.html), with the resources they reference that support the record
(practitioners, organizations, locations, medications…) as ``include`` entries.

A page's candidates come from one indexed statement: the compartment's resource keys from
``idx_compartment`` (Patient) or ``idx_reference`` (Encounter), a keyset on ``resource.pk`` under the
snapshot bound of the first page (as search paging), ``_type``/``_since``/``start``/``end`` on the
index tables. Referenced supporting resources are one more lookup from the page's keys.

The access policy (``access.visibility``) is then applied to the page's keys, in SQL. Not in the same
statement: for a practitioner's token PostgreSQL plans it there as a hash anti-join over every
``idx_compartment`` row of the database (it charges the policy's hashed subplans again on each loop
of a nested loop, and so never picks one): 80-120 ms at 200k resources and growing with the database,
against 0.3 ms for index probes from 100 keys. So the policy statements run from a list of keys with
hash and merge joins (and JIT, which the inflated costs trigger) off for this transaction only
(``SET LOCAL``). A page can then hold fewer than ``_count`` resources when some are hidden from the
caller; its ``next`` link goes on from the last key it looked at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlencode

import orjson
from flask import Blueprint, Response, request
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    and_,
    any_,
    bindparam,
    exists,
    false,
    literal,
    or_,
    select,
    union,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection

import fhir_profiles
from coordination_api.errors import Category, FhirError
from coordination_api.fhir import access
from coordination_api.fhir.context import services
from coordination_api.fhir.operation_input import parameters_body
from coordination_api.fhir.resources import supported_types
from coordination_api.search.dates import InvalidDateError, parse_range
from coordination_api.search.executor import reference_targets, snapshot_pk
from coordination_api.search.paging import PageToken
from coordination_api.search.registry import SearchRegistry
from coordination_api.storage.engine import is_postgres
from coordination_api.storage.repository import CURRENT_COLS, Stored
from coordination_api.storage.schema import idx_compartment, idx_date, idx_reference, resource
from coordination_api.web.http import base_url, fhir_json_response

# The care date each type's ``start``/``end`` apply to (the operation leaves it to the server): R4's
# clinical ``date`` parameter where the type has one, otherwise the date the record names as when the
# care happened or was ordered. Types without an entry, or whose resource has no such date, are
# returned whatever ``start``/``end`` say (a record without a care date cannot be out of range).
CARE_DATE = {
    "AllergyIntolerance": "date",
    "Appointment": "date",
    "CarePlan": "date",
    "CareTeam": "date",
    "Claim": "created",
    "ClinicalImpression": "date",
    "Communication": "sent",
    "CommunicationRequest": "authored",
    "Composition": "date",
    "Condition": "onset-date",
    "Consent": "date",
    "DiagnosticReport": "date",
    "DocumentReference": "date",
    "Encounter": "date",
    "EpisodeOfCare": "date",
    "FamilyMemberHistory": "date",
    "Flag": "date",
    "Goal": "start-date",
    "Immunization": "date",
    "List": "date",
    "MedicationAdministration": "effective-time",
    "MedicationRequest": "authoredon",
    "MedicationStatement": "effective",
    "Observation": "date",
    "Procedure": "date",
    "QuestionnaireResponse": "authored",
    "RiskAssessment": "date",
    "ServiceRequest": "authored",
    "SupplyRequest": "date",
    "Task": "authored-on",
}

# Types returned as ``include`` entries when a compartment resource references them ("the server
# also returns whatever resources are needed to support the records", R4).
SUPPORTING_TYPES = (
    "Device",
    "Endpoint",
    "HealthcareService",
    "Location",
    "Medication",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Substance",
)

_HTTP_ONLY = {"_format", "_pretty"}
_KEYS_PER_STATEMENT = 1000
_FROM_KEYS = ("enable_hashjoin", "enable_mergejoin", "jit")
_PARAMS = {"start", "end", "_since", "_type", "_count", "_page"}


@dataclass(frozen=True)
class Options:
    """The operation's parameters, parsed."""

    start: int | None = None  # care dates on or after (epoch µs)
    end: int | None = None  # care dates on or before
    since: int | None = None  # meta.lastUpdated on or after
    types: tuple[str, ...] | None = None
    count: int = 50


@cache
def _compartment(name: str) -> dict[str, tuple[str, ...]]:
    """Resource type -> the parameters of a shipped CompartmentDefinition (fhir_profiles/data)."""
    with (fhir_profiles.DATA_DIR / f"compartment-{name}.json").open(encoding="utf-8") as handle:
        definition = json.load(handle)
    return {e["code"]: tuple(e["param"]) for e in definition.get("resource", []) if e.get("param")}


def _bad(message: str) -> FhirError:
    return FhirError(Category.INVALID, f"$everything: {message}")


def _date(name: str, value: str, *, high: bool) -> int:
    try:
        low_us, high_us = parse_range(value)
    except InvalidDateError as exc:
        raise _bad(f"'{name}': {exc}") from exc
    return high_us if high else low_us


def parse_options(params: list[tuple[str, str]], default_count: int, max_count: int) -> Options:
    """``start``, ``end``, ``_since``, ``_type``, ``_count``; anything else is refused (400)."""
    values: dict[str, str] = {}
    for name, value in params:
        if name not in _PARAMS:
            raise _bad(f"unknown parameter '{name}'")
        if name in values:
            raise _bad(f"parameter '{name}' is repeated")
        values[name] = value
    start = _date("start", values["start"], high=False) if "start" in values else None
    end = _date("end", values["end"], high=True) if "end" in values else None
    if start is not None and end is not None and start > end:
        raise _bad("'start' is after 'end'")
    since = _date("_since", values["_since"], high=False) if "_since" in values else None
    types: tuple[str, ...] | None = None
    if "_type" in values:
        types = tuple(sorted({t.strip() for t in values["_type"].split(",") if t.strip()}))
        unknown = [t for t in types if t not in supported_types()]
        if unknown or not types:
            raise _bad(f"'_type' names unknown resource types: {', '.join(unknown) or '(none)'}")
    count = default_count
    if "_count" in values:
        try:
            count = int(values["_count"])
        except ValueError as exc:
            raise _bad(f"'_count' must be a whole number, not '{values['_count']}'") from exc
        if count < 1:
            raise _bad("'_count' must be at least 1")
    return Options(start, end, since, types, min(count, max_count))


def _request_params() -> list[tuple[str, str]]:
    """The query string, plus a Parameters body or a form on POST (R4 operations.html#request)."""
    params = [(k, v) for k, v in request.args.items(multi=True) if k not in _HTTP_ONLY]
    if request.method != "POST" or not request.get_data(cache=True):
        return params
    if (request.mimetype or "").lower() == "application/x-www-form-urlencoded":
        return params + [(k, v) for k, v in request.form.items(multi=True) if k not in _HTTP_ONLY]
    for index, param in enumerate(parameters_body()):
        values = [v for k, v in param.items() if k.startswith("value")]
        if len(values) != 1 or not isinstance(param.get("name"), str):
            raise FhirError(
                Category.INVALID,
                "$everything: each parameter needs a name and one primitive value",
                expression=f"Parameters.parameter[{index}]",
            )
        value = values[0]
        params.append((param["name"], str(value).lower() if isinstance(value, bool) else str(value)))
    return params


# -- the compartments ----------------------------------------------------------------------------


def patient_members(patient_id: str) -> Select[Any]:
    """Keys of the Patient compartment, the Patient included (``idx_compartment``, indexed by patient).

    Our compartment-patient.json adds Task (by ``patient``) to R4's list: see its description."""
    c = idx_compartment
    return select(c.c.res_pk).where(c.c.patient_id == patient_id)


def encounter_members(registry: SearchRegistry, encounter_id: str) -> Select[Any]:
    """Keys of the Encounter compartment: the Encounter and what points at it by the listed params."""
    ref = idx_reference
    pairs = [
        and_(ref.c.res_type == source, ref.c.param.in_(params))
        for source, params in sorted(_compartment("encounter").items())
        if source != "Encounter" and any(registry.get(source, p) is not None for p in params)
    ]
    itself = select(resource.c.pk).where(
        resource.c.res_type == "Encounter", resource.c.res_id == encounter_id
    )
    pointing = select(ref.c.res_pk).where(
        ref.c.target_type == "Encounter", ref.c.target_id == encounter_id, or_(*pairs)
    )
    return select(union(itself, pointing).subquery().c[0])


# -- the query -----------------------------------------------------------------------------------


def _care_dates(registry: SearchRegistry, start: int | None, end: int | None) -> ColumnElement[bool]:
    """Resources whose care date overlaps [start, end], or that have none (see CARE_DATE)."""
    d = idx_date
    dated = sorted((t, p) for t, p in CARE_DATE.items() if getattr(registry.get(t, p), "type", "") == "date")
    bounds: list[ColumnElement[bool]] = []
    if start is not None:
        bounds.append(d.c.high >= start)
    if end is not None:
        bounds.append(d.c.low <= end)
    clauses = []
    for res_type, param in dated:

        def rows(*extra: ColumnElement[bool], p: str = param) -> ColumnElement[bool]:
            return exists(select(literal(1)).where(d.c.res_pk == resource.c.pk, d.c.param == p, *extra))

        clauses.append(and_(resource.c.res_type == res_type, or_(~rows(), rows(*bounds))))
    undated = resource.c.res_type.not_in([t for t, _p in dated])
    return or_(undated, *clauses)


def _filters(
    members: Select[Any], options: Options, bound: int, readable: frozenset[str] | None
) -> list[ColumnElement[bool]]:
    registry = services().repo.registry
    out: list[ColumnElement[bool]] = [
        resource.c.pk.in_(members),
        resource.c.deleted == false(),
        resource.c.pk <= bound,
    ]
    types = set(options.types) if options.types is not None else None
    if readable is not None:
        types = (types or set(readable)) & readable
    if types is not None:
        out.append(resource.c.res_type.in_(sorted(types)) if types else false())
    if options.since is not None:
        out.append(resource.c.last_updated >= options.since)
    if options.start is not None or options.end is not None:
        out.append(_care_dates(registry, options.start, options.end))
    return out


def _among(conn: Connection, column: ColumnElement[Any], keys: list[int]) -> ColumnElement[bool]:
    """``column IN keys``; on PostgreSQL one array parameter (psycopg would otherwise parse a
    statement text with one placeholder per key, ~0.1 ms a key)."""
    if is_postgres(conn):
        return column == any_(bindparam(None, keys, type_=ARRAY(BigInteger)))
    return column.in_(keys)


def _plan_from_keys(conn: Connection) -> None:
    """PostgreSQL, this transaction only: nested loops from the keys (see the module docstring)."""
    if is_postgres(conn) and access.patient_filter() is not None:
        settings = ", ".join(f"set_config('{name}', 'off', true)" for name in _FROM_KEYS)
        conn.exec_driver_sql(f"SELECT {settings}")


def _visible(conn: Connection, pks: list[int]) -> set[int]:
    """Those of ``pks`` the access policy lets the caller see (see the module docstring)."""
    rules = access.visibility(resource.c.pk)
    if not rules:
        return set(pks)
    out: set[int] = set()
    for start in range(0, len(pks), _KEYS_PER_STATEMENT):
        keys = pks[start : start + _KEYS_PER_STATEMENT]
        out.update(
            conn.execute(select(resource.c.pk).where(_among(conn, resource.c.pk, keys), *rules)).scalars()
        )
    return out


def _readable_types() -> frozenset[str] | None:
    """The types this token may read (SMART scopes); None when it may read every type."""
    who = access.principal()
    if who.unrestricted:
        return None
    contexts = ("user", "patient") if who.is_user else ("system",)
    if who.scopes.allows("*", "r", contexts):
        return None
    return frozenset(
        s.resource_type for s in who.scopes.scopes if s.context in contexts and "r" in s.permissions
    )


def _supporting(
    conn: Connection, page: list[Stored], bound: int, readable: frozenset[str] | None
) -> list[Stored]:
    """Resources of SUPPORTING_TYPES the page references (one indexed lookup)."""
    if not page:
        return []
    ref = idx_reference
    types = [t for t in SUPPORTING_TYPES if readable is None or t in readable]
    if not types:
        return []
    on_page = {s.pk for s in page}
    stmt = reference_targets().where(
        _among(conn, ref.c.res_pk, sorted(on_page)),
        ref.c.target_type.in_(types),
        resource.c.deleted == false(),
        resource.c.pk <= bound,
    )
    found = [Stored(*row) for row in conn.execute(stmt) if row[0] not in on_page]
    visible = _visible(conn, [s.pk for s in found])
    return sorted((s for s in found if s.pk in visible), key=lambda s: s.pk)


# -- the Bundle ----------------------------------------------------------------------------------


def _entry(stored: Stored, base: str, mode: str) -> str:
    full_url = orjson.dumps(f"{base}/{stored.res_type}/{stored.res_id}").decode()
    return f'{{"fullUrl":{full_url},"resource":{stored.content or "{}"},"search":{{"mode":"{mode}"}}}}'


def _link(link_base: str, params: list[tuple[str, str]], token: PageToken | None) -> str:
    if token is not None:
        return f"{link_base}?{urlencode([('_page', token.encode())])}"
    return f"{link_base}?{urlencode(params)}" if params else link_base


def _bundle(
    matches: list[Stored],
    included: list[Stored],
    total: int,
    token: PageToken,
    next_after: int | None,
    link_base: str,
) -> str:
    """The searchset; ``next_after``: the pk the next page starts after (None: this is the last)."""
    base = base_url()
    later = token.after is not None
    links = [{"relation": "self", "url": _link(link_base, token.params, token if later else None)}]
    if next_after is not None or later:
        links.append({"relation": "first", "url": _link(link_base, token.params, None)})
    if next_after is not None:
        nxt = PageToken(token.params, token.offset + token.count, token.count, token.bound, [next_after])
        links.append({"relation": "next", "url": _link(link_base, [], nxt)})
    head = orjson.dumps(
        {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links}
    ).decode()
    entries = [_entry(s, base, "match") for s in matches] + [_entry(s, base, "include") for s in included]
    if not entries:
        return head
    return head[:-1] + ',"entry":[' + ",".join(entries) + "]}"


def _run(members: Select[Any], link_base: str) -> Response:
    """One page of the compartment whose resource keys ``members`` selects."""
    svc = services()
    params = _request_params()
    page = next((v for k, v in params if k == "_page"), None)
    with svc.repo.reading() as conn:
        if page is not None:
            token = PageToken.decode(page)
            options = parse_options(token.params, svc.compiler.default_count, svc.compiler.max_count)
            cursor = token.after
            if cursor is None or len(cursor) != 1 or type(cursor[0]) is not int:
                raise FhirError(Category.INVALID, "Invalid or corrupted _page token")
        else:
            options = parse_options(params, svc.compiler.default_count, svc.compiler.max_count)
            token = PageToken(params, 0, options.count, snapshot_pk(conn))
        readable = _readable_types()
        filters = _filters(members, options, token.bound, readable)
        stmt = select(*CURRENT_COLS).where(*filters)
        if token.after is not None:
            stmt = stmt.where(resource.c.pk > token.after[0])
        rows = conn.execute(stmt.order_by(resource.c.pk).limit(options.count + 1)).all()
        looked_at = [Stored(*row) for row in rows[: options.count]]
        has_next = len(rows) > options.count
        _plan_from_keys(conn)
        visible = _visible(conn, [s.pk for s in looked_at])
        matches = [s for s in looked_at if s.pk in visible]
        if token.after is None and not has_next:
            total = len(matches)
        else:
            every = list(conn.execute(select(resource.c.pk).where(*filters)).scalars())
            total = len(_visible(conn, every))
        included = _supporting(conn, matches, token.bound, readable)
        access.note_results(conn, matches + included)
    next_after = looked_at[-1].pk if has_next else None
    return fhir_json_response(_bundle(matches, included, total, token, next_after, link_base))


def _check_focus(resource_type: str, res_id: str) -> None:
    """The focal resource exists (404/410) and the caller may read it (403: the care-team rule)."""
    stored, reach = access.read_current(resource_type, res_id)
    if stored is None:
        raise FhirError(Category.NOT_FOUND, f"{resource_type}/{res_id} is not known")
    if stored.deleted:
        raise FhirError(Category.DELETED, f"{resource_type}/{res_id} was deleted")
    access.check_reach(stored, reach)


def patient_everything(res_id: str) -> Response:
    """GET|POST [base]/Patient/[id]/$everything."""
    access.require("Patient", "r")
    _check_focus("Patient", res_id)
    return _run(patient_members(res_id), f"{base_url()}/Patient/{res_id}/$everything")


def encounter_everything(res_id: str) -> Response:
    """GET|POST [base]/Encounter/[id]/$everything."""
    access.require("Encounter", "r")
    _check_focus("Encounter", res_id)
    members = encounter_members(services().repo.registry, res_id)
    return _run(members, f"{base_url()}/Encounter/{res_id}/$everything")


def register_routes(bp: Blueprint) -> None:
    """The two operations on the FHIR blueprint (static segments win over /<type>/<id>/…)."""
    methods = ["GET", "POST"]
    bp.add_url_rule(
        "/Patient/<res_id>/$everything", "patient_everything", patient_everything, methods=methods
    )
    bp.add_url_rule(
        "/Encounter/<res_id>/$everything", "encounter_everything", encounter_everything, methods=methods
    )
