"""Security on the FHIR API: bearer authentication, SMART scopes, the care-team policy, the audit trail.

The one-write flow of ARCHITECTURE.md: token -> Principal (401/403) -> interaction -> policy in SQL
-> one transaction that also holds the AuditEvent. Reads are audited before the response leaves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import urlencode

from flask import Response, current_app, g, has_request_context, request
from sqlalchemy import ColumnElement, and_, exists, literal, or_, select, true
from sqlalchemy.engine import Connection

from auth import policy
from auth.audit import AuditRecord, AuditUnavailableError, AuditWriter, audit_row, write_audit
from auth.policy import PatientFilter, Principal
from auth.service import AuthService, UnauthenticatedError
from coordination_api.core import principal as core_principal
from coordination_api.core.principal import UNRESTRICTED
from coordination_api.errors import RETRY_AFTER_UNAVAILABLE, Category, FhirError
from coordination_api.search.compiler import SearchQuery
from coordination_api.storage.repository import Stored
from coordination_api.storage.schema import history_compartment, idx_compartment, resource, subscription_state
from coordination_api.web.errors import render as render_error
from coordination_api.web.http import settings

log = logging.getLogger(__name__)

BREAK_GLASS_HEADER = "X-Break-The-Glass"
MIN_REASON = 10  # a reason worth reading, not "x"
# Routes of the FHIR blueprint anyone may call (SMART conformance.html: discovery is public).
PUBLIC_ENDPOINTS = {"fhir.metadata"}
# Blueprints whose requests carry no token and act for the server itself: the login pages (auth/web,
# Pro Santé Connect first-login provisioning of the caller's own Practitioner).
SELF_AUTHORISED_DOORS = frozenset({"auth"})

# (endpoint, method) -> restful-interaction code, for the audit subtype.
_INTERACTIONS = {
    ("fhir.instance", "GET"): "read",
    ("fhir.instance", "HEAD"): "read",
    ("fhir.instance", "PUT"): "update",
    ("fhir.instance", "PATCH"): "patch",
    ("fhir.instance", "DELETE"): "delete",
    ("fhir.vread", "GET"): "vread",
    ("fhir.type_level", "GET"): "search-type",
    ("fhir.type_level", "HEAD"): "search-type",
    ("fhir.type_level", "POST"): "create",
    ("fhir.type_level", "PUT"): "update",
    ("fhir.type_level", "DELETE"): "delete",
    ("fhir.search_post", "POST"): "search-type",
    ("fhir.instance_history", "GET"): "history-instance",
    ("fhir.type_history", "GET"): "history-type",
    ("fhir.system_history", "GET"): "history-system",
    ("fhir.system", "POST"): "transaction",
    ("fhir.metadata", "GET"): "capabilities",
    ("fhir.process_message", "POST"): "operation",
}


def auth_service() -> AuthService:
    svc: AuthService = current_app.extensions["auth"]
    return svc


def principal() -> Principal:
    if not has_request_context():
        return UNRESTRICTED  # the operator's own commands (import, db upgrade) run outside HTTP
    p: Principal | None = g.get("principal")
    if p is None:
        if request.blueprint in SELF_AUTHORISED_DOORS:
            return UNRESTRICTED  # the server's own step of a login (first-login provisioning)
        # Deny by default: a request that was never authenticated reaches nothing.
        raise FhirError(Category.SECURITY, "Not authenticated", headers={"WWW-Authenticate": "Bearer"})
    return p


def _interaction() -> str:
    return _INTERACTIONS.get((request.endpoint or "", request.method), "operation")


def _criteria() -> str | None:
    """The search criteria a request carries, for the audit: its query string (GET, HEAD) and, for a
    POST _search (R4 http.html#search, form body), its form parameters too."""
    if request.method in {"GET", "HEAD"}:
        return request.query_string.decode("latin-1") or None
    if request.endpoint == "fhir.search_post":
        form = urlencode(list(request.form.items(multi=True)))
        query = request.query_string.decode("latin-1")
        return "&".join(part for part in (query, form) if part) or None
    return None


def authenticate() -> None:
    """before_request of the FHIR blueprint: every route but metadata needs a valid Bearer token."""
    g.audit = AuditRecord(
        subtype=_interaction(),
        method=request.method,
        path=request.path,
        address=request.remote_addr,
        request_id=g.get("request_id"),
        query=_criteria(),
    )
    if request.endpoint in PUBLIC_ENDPOINTS:
        g.audit = None
        return
    if settings().security_disabled:
        g.principal = UNRESTRICTED
        core_principal.enter(UNRESTRICTED)
        g.audit = None
        return
    try:
        who = auth_service().principal(request.headers.get("Authorization"))
    except UnauthenticatedError as exc:
        challenge = "Bearer" if exc.error is None else f'Bearer error="{exc.error}"'
        raise FhirError(Category.SECURITY, str(exc), headers={"WWW-Authenticate": challenge}) from None
    reason = request.headers.get(BREAK_GLASS_HEADER)
    if reason is not None:
        reason = " ".join(reason.split())
        if not who.is_user:
            raise FhirError(
                Category.FORBIDDEN, "Break-the-glass access is for practitioners' user tokens only"
            )
        if len(reason) < MIN_REASON:
            raise FhirError(
                Category.INVALID,
                f"{BREAK_GLASS_HEADER} must state the reason for emergency access ({MIN_REASON}+ characters)",
            )
        g.audit.break_glass_reason = reason[:500]
    g.principal = who
    core_principal.enter(who)  # the domain code this request runs reads it there (never flask.g)


def require(resource_type: str, permission: str) -> None:
    """SMART scopes: may this token do ``permission`` (c r u d s) on ``resource_type``? (403 if not)."""
    core_principal.require(principal(), resource_type, permission)


def require_system_history() -> None:
    """System history spans every type: only a token that may read every type (``*``) gets it."""
    require("*", "r")


def require_any(resource_type: str, permissions: str) -> None:
    """At least one of ``permissions`` (e.g. $validate before a create or an update)."""
    for permission in permissions[:-1]:
        try:
            require(resource_type, permission)
        except FhirError:
            continue
        return
    require(resource_type, permissions[-1])


def secure(query: SearchQuery) -> None:
    """A search sees only what the policy allows, its includes too (SMART: scopes per included type)."""
    query.access = visibility(resource.c.pk)
    if query.resource_type == "Subscription":
        query.access += subscription_owner_filter(resource.c.pk)
    who = principal()
    if who.unrestricted or not (query.includes or query.revincludes):
        return
    for inc in query.includes:
        if inc.target_type:
            require(inc.target_type, "r")
    for inc in query.revincludes:
        if inc.source_type != "*":
            require(inc.source_type, "r")
    contexts = ("user", "patient") if who.is_user else ("system",)
    if not who.scopes.allows("*", "r", contexts):
        query.include_types = frozenset(
            s.resource_type for s in who.scopes.scopes if s.context in contexts and "r" in s.permissions
        )


# -- Subscriptions belong to their owner ------------------------------------------------------------
# A Subscription's channel carries the subscriber's endpoint credentials (channel.header, the
# signature secret): only whoever configured it (the client of a system token, the practitioner of a
# user token; recorded in subscription_state) may read, search, change it or ask its $status/$events.
# One configured without a caller (CLI, security disabled) is open to every allowed reader.


def subscription_owner_filter(pk: Any) -> list[ColumnElement[bool]]:
    """SQL: keep the Subscriptions the caller owns (and those without an owner); the one form of the
    rule, for searches, history, reads, writes and $status/$events."""
    who = principal()
    if who.unrestricted:
        return []
    if who.is_user:
        return [owned_subscription(pk, practitioner_id=who.practitioner_id)]
    return [owned_subscription(pk, client_id=who.client_id)]


def owned_subscription(
    pk: Any, *, client_id: str | None = None, practitioner_id: str | None = None
) -> ColumnElement[bool]:
    """SQL: the Subscription ``pk`` (or a row that is no Subscription) is unowned, or owned by this
    backend client (``client_id``) or this practitioner (``practitioner_id``: a user token's). Usable
    outside a request (the bulk export worker)."""
    s = subscription_state.alias("owner")
    unowned = and_(s.c.owner_client.is_(None), s.c.owner_practitioner.is_(None))
    # NULL-safe: a row owned by a backend client (no practitioner) is not a practitioner's own.
    if client_id is None:
        mine = and_(s.c.owner_practitioner.is_not(None), s.c.owner_practitioner == practitioner_id)
    else:
        mine = and_(s.c.owner_practitioner.is_(None), s.c.owner_client == client_id)
    return ~exists(select(literal(1)).where(s.c.res_pk == pk, ~or_(unowned, mine)))


def check_subscription_owner(conn: Connection, stored: Stored) -> None:
    """404 for someone else's Subscription (as unknown as a missing one: no existence oracle)."""
    if stored.res_type != "Subscription" or not has_request_context() or g.get("principal") is None:
        return
    if conn.scalar(select(literal(1)).where(*subscription_owner_filter(literal(stored.pk)))) is None:
        raise FhirError(Category.NOT_FOUND, f"Subscription/{stored.res_id} is not known")


def hop_guard(resource_type: str, pk: Any) -> list[ColumnElement[bool]]:
    """A chain or ``_has`` hop reads resources of ``resource_type`` on the caller's behalf: her scopes
    must allow searching them, and only those the policy lets her see count (search.html#chaining,
    #has; issue 16: a hop is no yes/no oracle on data out of reach)."""
    require(resource_type, "s")
    rules = visibility(pk)
    if resource_type == "Subscription":
        rules += subscription_owner_filter(pk)
    return rules


def criteria_hop_guard(resource_type: str, pk: Any) -> list[ColumnElement[bool]]:
    """A chain or ``_has`` hop in a Subscription's criteria: evaluated at every write, for every
    patient, it would tell a practitioner about data beyond her care team, so her subscriptions may
    not use one; a system client needs the scope on the hop's type (issue 16)."""
    if principal().is_user:
        raise FhirError(
            Category.FORBIDDEN,
            "A practitioner's Subscription criteria may not use chained parameters or _has "
            "(they would be evaluated beyond the care team)",
        )
    require(resource_type, "s")
    return []


def readable(resource_type: str) -> bool:
    try:
        require(resource_type, "r")
    except FhirError:
        return False
    return True


def patient_filter() -> PatientFilter | None:
    """The patients this request may reach, or None when it is not limited by the care-team rule."""
    who = principal()
    if who.unrestricted or not who.is_user:
        return None
    cached: PatientFilter | None = g.get("patient_filter")
    if cached is not None:
        return cached
    now = int(time.time() * 1_000_000)
    result = policy.patient_filter(_actor_refs(now), now, _launch_patient(who), _break_glass())
    g.patient_filter = result
    return result


def _actor_refs(now: int) -> list[str]:
    """The caller's references (practitioner, roles, organizations), once per request."""
    cached: list[str] | None = g.get("actor_refs")
    if cached is None:
        who = principal()
        assert who.practitioner_id is not None
        engine = current_app.extensions["coordination"].repo.engine
        with engine.connect() as conn:
            cached = g.actor_refs = policy.actor_refs(conn, who.practitioner_id, now)
    return cached


def _launch_patient(who: Principal) -> str | None:
    # patient/ scopes confine the token to its launch patient (SMART scopes-and-launch-context); without
    # a launch patient they reach no one (fail closed, whatever the token endpoint granted).
    if "patient" not in who.scopes.contexts():
        return None
    return who.patient_id or policy.NO_PATIENT


def _break_glass() -> bool:
    return g.audit is not None and g.audit.break_glass_reason is not None


def visibility(pk: Any) -> list[ColumnElement[bool]]:
    """SQL filters that keep only resources this request may see (none for system clients)."""
    f = patient_filter()
    if f is None:
        return []
    # Built once per request and row column (SQLAlchemy builds this clause in milliseconds; a page
    # searches ten times): the same immutable clause serves each statement of the request.
    built: list[tuple[Any, list[ColumnElement[bool]]]] = g.setdefault("visibility_built", [])
    for column, clause in built:
        if column is pk:
            return list(clause)  # a copy: callers extend their own (secure, hop_guard)
    c = idx_compartment.alias()  # anonymous: a chain or _has hop nests its own
    clause = [
        ~exists(
            select(literal(1)).where(c.c.res_pk == pk, policy.out_of_reach(f, c.c.patient_id, c.c.res_type))
        )
    ]
    built.append((pk, clause))
    return list(clause)


def version_visibility(pk: Any, version: Any, res_type: Any) -> list[ColumnElement[bool]]:
    """``visibility`` for versions (history): each judged by the compartments it was in itself."""
    f = patient_filter()
    if f is None:
        return []
    c = history_compartment.alias()
    hidden = policy.out_of_reach(f, c.c.patient_id, res_type)
    return [~exists(select(literal(1)).where(c.c.res_pk == pk, c.c.version == version, hidden))]


def check_version(conn: Connection, stored: Stored) -> None:
    """A version read by vread: 403 unless every patient whose compartment held it is within reach."""
    if not has_request_context() or g.get("principal") is None:
        return
    check_subscription_owner(conn, stored)
    f = patient_filter()
    hc = history_compartment
    rows = conn.execute(
        select(hc.c.patient_id).where(hc.c.res_pk == stored.pk, hc.c.version == stored.version)
    ).scalars()
    patients = list(rows)
    decision = policy.decide(conn, f, stored.res_type, patients)
    check_reach(stored, list(decision.reach))


def _patients_of(conn: Connection, pks: list[int]) -> list[tuple[str, bool]]:
    """(patient, reachable) for each compartment the resources are in."""
    return _reach(conn, pks, patient_filter())


def _reach_of(conn: Connection, stored: list[Stored]) -> list[tuple[str, bool]]:
    """``_patients_of`` for written versions; a system client's reach is everything, so the
    compartments the write just indexed answer without a query."""
    f = patient_filter()
    if f is None and all(s.compartment is not None for s in stored):
        return [(p, True) for p in dict.fromkeys(p for s in stored for p in s.compartment or ())]
    return _reach(conn, [s.pk for s in stored], f)


def _reach(conn: Connection, pks: list[int], f: PatientFilter | None) -> list[tuple[str, bool]]:
    c = idx_compartment
    ok = true() if f is None else ~policy.out_of_reach(f, c.c.patient_id, c.c.res_type)
    rows = conn.execute(select(c.c.patient_id, ok).where(c.c.res_pk.in_(pks)).distinct()).all()
    return [(row[0], bool(row[1])) for row in rows]


def read_current(resource_type: str, res_id: str) -> tuple[Stored | None, list[tuple[str, bool]]]:
    """The current version and, in the same statement, each patient of its compartment and whether
    this request may reach them (the read-by-id hot path: one round trip for data and decision)."""
    repo = current_app.extensions["coordination"].repo
    who = g.get("principal")
    if who is None or who.unrestricted:
        return repo.read_current(resource_type, res_id), []
    if resource_type == "Subscription":
        with repo.engine.connect() as conn:
            current = repo.current(conn, resource_type, res_id)
            if current is not None:
                check_subscription_owner(conn, current)
        return current, []
    params: dict[str, Any] = {"type": resource_type, "id": res_id}
    if who.is_user:
        break_glass = _break_glass()
        launch = _launch_patient(who)
        case = policy.reach_case(break_glass, launch is not None)
        params.update(
            now=int(time.time() * 1_000_000), practitioner=who.agent, practitioner_id=who.practitioner_id
        )
        if launch is not None:
            params["launch"] = launch
    else:
        case = "1"
    rows = repo.raw_rows(
        "SELECT r.pk, r.res_type, r.res_id, r.version, r.last_updated, r.deleted, r.content, c.patient_id, "
        f"{case} FROM resource r LEFT JOIN idx_compartment c ON c.res_pk = r.pk "
        "WHERE r.res_type = :type AND r.res_id = :id",
        params,
    )
    if not rows:
        return None, []
    pk, rtype, rid, version, last_updated, deleted, content = rows[0][:7]
    stored = Stored(pk, rtype, rid, version, last_updated, bool(deleted), content)
    return stored, [(row[7], bool(row[8])) for row in rows if row[7] is not None]


class Found(Protocol):
    """What the audit notes of a search match: a stored resource or an index projection of one."""

    @property
    def pk(self) -> int: ...
    @property
    def res_type(self) -> str: ...
    @property
    def res_id(self) -> str: ...


def _note(stored: Iterable[Found], patients: Iterable[str]) -> None:
    record: AuditRecord | None = g.get("audit")
    if record is None:
        return
    for s in stored:
        record.add_entity(f"{s.res_type}/{s.res_id}")
    record.patients.update(patients)


def check_stored(conn: Connection, stored: Stored) -> None:
    """A resource read by id: 403 when it is in the compartment of a patient out of reach."""
    if not has_request_context() or g.get("principal") is None:
        return
    check_subscription_owner(conn, stored)
    # Whatever its type: a resource that names or follows a patient is in that patient's compartment.
    check_reach(stored, _patients_of(conn, [stored.pk]))


def check_record_reach(conn: Connection, patient_id: str) -> None:
    """403 unless this request reaches the patient's whole record (not only through a Task offer)."""
    f = patient_filter()
    if f is None:
        return
    if patient_id not in policy.reachable_among(conn, f, [patient_id]):
        raise FhirError(
            Category.FORBIDDEN, "This patient's record is shared only within the patient's care team"
        )


def check_reach(stored: Stored, reach: list[tuple[str, bool]]) -> None:
    """403 unless every patient whose compartment holds ``stored`` is within reach."""
    if not has_request_context() or g.get("principal") is None:
        return
    _note([stored], [p for p, _ok in reach])
    if any(not ok for _p, ok in reach):
        raise FhirError(
            Category.FORBIDDEN,
            "This patient's data is shared only within the patient's care team (or is opposed by the "
            f"patient); a practitioner may state an emergency reason in {BREAK_GLASS_HEADER}",
        )


def note_counted(conn: Connection, query: SearchQuery) -> None:
    """A search answered by a count only (``_summary=count``, ``_count=0``): the patients whose data
    was counted go to the audit record all the same (at most ``COUNTED_PATIENTS``)."""
    if g.get("audit") is None:
        return
    c = idx_compartment
    rows = conn.execute(
        select(c.c.patient_id).where(c.c.res_pk.in_(query.select_pks())).distinct().limit(COUNTED_PATIENTS)
    )
    g.audit.patients.update(r[0] for r in rows)


COUNTED_PATIENTS = 1000


def note_patients(patients: Iterable[str]) -> None:
    """Patients whose data a request counted or summed (e.g. a page's tally) go to the audit record."""
    _note([], patients)


def note_results(conn: Connection, stored: Sequence[Found]) -> None:
    """Search results: the patients they touch go to the audit record."""
    if not stored or g.get("audit") is None:
        return
    c = idx_compartment
    pks = [s.pk for s in stored]
    patients: set[str] = set()
    for start in range(0, len(pks), 500):
        rows = conn.execute(select(c.c.patient_id).where(c.c.res_pk.in_(pks[start : start + 500])).distinct())
        patients.update(r[0] for r in rows)
    _note(stored, patients)


def guard_write(conn: Connection, stored: list[Stored], phase: str) -> None:
    """Repository hook, inside the write transaction: the care-team rule on what is written.

    ``before``: the current version (one may not change or delete what one may not see);
    ``after``: the new version (one may not file data into an unreachable patient's record), judged on
    the access rows as they were before this request (``_snapshot_reach``): rows the write creates
    never count for it. A practitioner's change of who reaches a patient (``policy.reach_change``) is
    refused unless the policy allows it. A Patient created by this very request, and the patient of an
    offer accepted by it, are reachable by the caller for the rest of it.
    """
    if not has_request_context() or not stored:
        return
    who = g.get("principal")
    if who is None:
        if request.blueprint == "fhir":
            raise FhirError(Category.SECURITY, "Not authenticated", headers={"WWW-Authenticate": "Bearer"})
        return  # another door (e.g. HL7 v2 intake) authorises on its own
    if phase == "named":
        # The version an If-Match names, when the current one is out of reach: could the caller read
        # it? (Then a 412 tells her nothing new.) An offer made to her in it counts.
        now = int(time.time() * 1_000_000)
        if who.is_user and not who.unrestricted:
            for item in stored:
                if not (item.res_type == "Task" and policy.offered_to(item.json(), _actor_refs(now), now)):
                    check_version(conn, item)
        return
    if phase == "before":
        for item in stored:
            check_subscription_owner(conn, item)
    created: set[str] = g.setdefault("created_patients", set())
    if phase == "after":
        # (a no-op update of a version 1 creates nothing)
        created.update(
            s.res_id for s in stored if s.res_type == "Patient" and s.version == 1 and not s.unchanged
        )
    if not who.is_user or who.unrestricted:
        reach = _reach_of(conn, stored)
    else:
        priors: dict[int, dict[str, Any]] = g.setdefault("prior_versions", {})
        if phase == "before":
            for item in stored:
                if item.res_type in policy.DERIVED or item.res_type in policy.IDENTITY_TYPES:
                    priors[item.pk] = item.json()
        elif not policy.ENGINE_WRITE.get():
            _check_reach_changes(conn, stored, priors)
        stored = _offer_takes(stored, phase, priors)
        if not stored:
            return
        reach = _write_reach(conn, stored)
        created = created | g.setdefault("accepted_patients", set())
    _note(stored, [p for p, _ok in reach])
    if any(not ok and p not in created for p, ok in reach):
        raise FhirError(
            Category.FORBIDDEN,
            "Writing to this patient's record is reserved to the patient's care team",
        )


# -- writes by practitioners --------------------------------------------------------------------------
# An offer (Task.restriction.recipient) lets its recipient read the Task and the Patient, and take the
# Task: the one write it allows is the accept (owner = the taker, status accepted, ACCEPT_FIELDS only).


def _check_reach_changes(conn: Connection, stored: list[Stored], priors: dict[int, dict[str, Any]]) -> None:
    """403 when a practitioner's write changes who reaches a patient and the policy reserves it."""
    now = int(time.time() * 1_000_000)
    for item in stored:
        reason = policy.directory_refusal(item.res_type) or policy.identity_refusal(
            item.res_type, priors.get(item.pk), None if item.deleted else item.json()
        )
        if reason is not None:
            raise FhirError(Category.FORBIDDEN, reason)
        if item.res_type not in policy.DERIVED:
            continue
        new = None if item.deleted else item.json()
        change = policy.reach_change(item.res_type, priors.get(item.pk), new)
        if change is None:
            continue
        refs = _actor_refs(now)
        if item.pk in g.get("offer_takes", set()) and not any(r["member"] not in refs for r in change.added):
            continue  # the accept of an offer (its fields are checked in _offer_takes)
        dispatch = settings().dispatch
        with _snapshot() as snap:
            coordinated = policy.coordinated_patients(
                snap,
                refs,
                change.patients,
                now,
                coordinator=dispatch.coordinator,
                coordinator_role=dispatch.coordinator_role,
            )
        reason = policy.change_refusal(change, refs, coordinated)
        if reason is not None and policy.taken_already(priors.get(item.pk), refs):
            # Taking a Task someone else took meanwhile: the race was lost (409, as dispatch says).
            raise FhirError(Category.CONFLICT, "This Task is no longer requested: it was taken already")
        if reason is not None:
            raise FhirError(Category.FORBIDDEN, reason)


def _offer_takes(stored: list[Stored], phase: str, priors: dict[int, dict[str, Any]]) -> list[Stored]:
    """Set apart the offered Tasks the caller is taking; returns the rest, for the care-team rule."""
    now = int(time.time() * 1_000_000)
    takes: set[int] = g.setdefault("offer_takes", set())
    refs = _actor_refs(now)
    rest = []
    for item in stored:
        if item.res_type != "Task":
            rest.append(item)
            continue
        task = item.json()
        if phase == "before":
            if policy.offered_to(task, refs, now):
                takes.add(item.pk)  # decided on the new version (after)
            else:
                rest.append(item)
            continue
        owner = (task.get("owner") or {}).get("reference")
        if item.pk in takes and task.get("status") == "accepted" and owner in refs:
            reason = policy.accept_refusal(priors.get(item.pk, {}), task)
            if reason is not None:
                raise FhirError(Category.FORBIDDEN, reason)
            subject = policy.task_patient(task)
            if subject is not None:  # the accept's grant counts for the rest of the request
                g.setdefault("accepted_patients", set()).add(subject)
            continue
        rest.append(item)  # any other write: the care-team rule, offers not counted
    return rest


@contextmanager
def _snapshot() -> Iterator[Connection]:
    """A connection of its own: it sees the access rows as committed before this request's write."""
    engine = current_app.extensions["coordination"].repo.engine
    with engine.connect() as conn:
        yield conn


def _write_reach(conn: Connection, stored: list[Stored]) -> list[tuple[str, bool]]:
    """(patient, reachable) for each compartment of the written versions, reach judged on the access
    rows before this request (without offers: an offer lets one read and accept, not file data)."""
    c = idx_compartment
    patients: list[str] = []
    unknown = [s.pk for s in stored if s.compartment is None]
    for s in stored:
        patients.extend(s.compartment or ())
    if unknown:
        patients.extend(
            r[0] for r in conn.execute(select(c.c.patient_id).where(c.c.res_pk.in_(unknown)).distinct())
        )
    wanted = list(dict.fromkeys(patients))
    known: dict[str, bool] = g.setdefault("snapshot_reach", {})
    missing = [p for p in wanted if p not in known]
    if missing:
        who = principal()
        now = int(time.time() * 1_000_000)
        f = policy.write_filter(_actor_refs(now), now, _launch_patient(who), _break_glass(), ())
        with _snapshot() as snap:
            ok = policy.reachable_among(snap, f, missing)
        known.update((p, p in ok) for p in missing)
    return [(p, known[p]) for p in wanted]


def audit_in_transaction(conn: Connection) -> None:
    """Repository hook, just before a write transaction commits: its AuditEvent rides along."""
    if not has_request_context():
        return
    record: AuditRecord | None = g.get("audit")
    if record is None or g.get("principal") is None:
        return
    write_audit(conn, record, g.principal, 200, int(time.time() * 1_000_000))
    g.audit_written = (len(record.entities), len(record.patients))


def audit_response(response: Response) -> Response:
    """after_request: reads, searches and refused requests are audited before the response leaves."""
    record: AuditRecord | None = g.get("audit")
    if record is None:
        return response
    written = g.get("audit_written")
    if written == (len(record.entities), len(record.patients)) and response.status_code < 400:
        return response  # nothing was read after the write's own AuditEvent (e.g. a batch's reads)
    # The request's read connection goes back to the pool first: the writer thread may need it.
    release = current_app.extensions["coordination"].repo.before_write
    if release is not None:
        release()
    writer: AuditWriter = current_app.extensions["audit_writer"]
    try:
        writer.write(
            audit_row(record, g.get("principal"), response.status_code, int(time.time() * 1_000_000))
        )
    except AuditUnavailableError:
        log.exception("audit write failed, request_id=%s", record.request_id)
        return render_error(
            FhirError(
                Category.TRANSIENT,
                "The access could not be audited; retry later",
                headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE)},  # RFC 9110 section 10.2.3
            )
        )
    return response
