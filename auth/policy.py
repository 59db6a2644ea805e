"""Who may reach which patient's data: the care-team rule, the droit d'opposition, break-the-glass.

- Sharing within the care team (Code de la santé publique L.1110-4): a practitioner reaches a patient's
  compartment only while an *active* CareTeam of that patient lists them, directly, through one of their
  PractitionerRoles, or through an Organization they hold a role in, with periods covering now.
- Opposition (CSP L.1110-4 III, L.1111-8): an active Consent whose provision denies an actor wins over
  the care team, and over break-the-glass too (L.1111-17: emergency access unless the patient objected).
- Break-the-glass: a practitioner states a reason and reaches a patient outside the care team; flagged
  and audited, still limited by their scopes and by Consent denials.
- Task dispatch (L.1110-4, professionals taking part in the care): a practitioner a requested Task is
  offered to (``Task.restriction.recipient``) sees, while the offer stands, only what deciding needs:
  the patient's Patient resource and Tasks (``OFFER_TYPES``), not the rest of the record; the owner of
  an open Task takes part in the care and reaches the patient while they own it. Consent denials
  still win.

The rules are evaluated in SQL on every request (CareTeams change after login) from rows derived from
CareTeam, Consent, PractitionerRole and Task at write time; this module derives the rows and builds the
SQL.

Writes cannot widen the writer's reach (docs/security.md):

- A practitioner's write is judged on the state before it and on the state it would produce, and the
  second judgment uses the access rows as they were *before the request* (``snapshot``): rows the write
  itself creates never count for it.
- Changing who reaches a patient (``reach_change``) is reserved: CareTeam membership, status, period or
  subject to the patient's *coordinators* (a participant of an active CareTeam of the patient whose role
  has the configured code, by default ``coordinateur-parcours``, or the configured CPTS coordinator) and
  to system clients; PractitionerRole affiliations (practitioner, organization, period, active) to
  system clients only (directory data); lifting a Consent denial to coordinators and system clients
  (recording an objection is open to whoever may write to the patient's record); giving another
  professional a Task grant (owner, offer) to coordinators, the dispatch engine and system clients. The
  one grant a practitioner gives herself is the accept of a Task offered to her, which may change only
  ``ACCEPT_FIELDS``.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Collection, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    CompoundSelect,
    Select,
    Table,
    and_,
    bindparam,
    exists,
    false,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.engine import Connection

from auth.schema import care_team_access, consent_deny, practitioner_affiliation, task_access
from auth.scopes import ScopeSet

# Writes the server's own engines make on behalf of the rule (dispatch stages offering a Task), inside a
# caller's request: judged as the engine's, not as the caller's own change of reach.
ENGINE_WRITE: ContextVar[bool] = ContextVar("policy_engine_write", default=False)

# Member/actor types whose references grant or deny (others, e.g. RelatedPerson, grant nothing here).
ACTOR_TYPES = ("Practitioner", "PractitionerRole", "Organization")
# Relative references only: absolute ones to this server's base are stored relative (the repository),
# and an absolute one elsewhere names someone of another server, never one of ours.
_REF = re.compile(r"^(Practitioner|PractitionerRole|Organization|Patient)/([A-Za-z0-9\-.]{1,64})$")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a backend client (system), or a practitioner through an app (user)."""

    client_id: str | None
    scopes: ScopeSet
    practitioner_id: str | None = None
    username: str | None = None
    patient_id: str | None = None  # launch/patient context of a patient/ scoped token
    token_jti: str | None = None
    unrestricted: bool = False  # security disabled (loopback development only)

    @property
    def is_user(self) -> bool:
        return self.practitioner_id is not None

    @property
    def agent(self) -> str | None:
        return f"Practitioner/{self.practitioner_id}" if self.practitioner_id else None


def _ref(reference: Any) -> tuple[str, str] | None:
    if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
        return None
    match = _REF.search(reference["reference"].split("/_history/")[0])
    return (match.group(1), match.group(2)) if match else None


# A bound that is present but cannot be read fails closed: a grant's start is "never", its end is
# "already over"; a denial's bounds are "always" (never looser than what was written).
_NEVER = 2**62
_LONG_AGO = -(2**62)
_LEAP_SECOND = re.compile(r"(T\d{2}:\d{2}):60(\.\d+)?")


class _UnreadableDateError(ValueError):
    """A date bound is present but is not a FHIR date/dateTime we can read."""


def _instant(text: Any, *, end: bool) -> int | None:
    """Epoch microseconds of a FHIR date/dateTime; an end bound covers the whole partial date.
    None when absent; _UnreadableDateError when present but not readable."""
    if text is None:
        return None
    if not isinstance(text, str) or not text:
        raise _UnreadableDateError(repr(text))
    # R4 datatypes.html#dateTime allows second 60 (a leap second): the last instant of that minute.
    text = _LEAP_SECOND.sub(r"\1:59.999999", text)
    try:
        if len(text) == 4:
            low, step = datetime(int(text), 1, 1, tzinfo=UTC), "year"
        elif len(text) == 7:
            low, step = datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC), "month"
        elif len(text) == 10:
            low, step = datetime.fromisoformat(text).replace(tzinfo=UTC), "day"
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return int(moment.timestamp() * 1_000_000)
    except (ValueError, OverflowError) as exc:
        raise _UnreadableDateError(text) from exc
    start = int(low.timestamp() * 1_000_000)
    if not end:
        return start
    # The end of the partial date as start + its length: datetime arithmetic past 9999-12-31 overflows.

    if step == "year":
        days = 366 if calendar.isleap(low.year) else 365
    elif step == "month":
        days = calendar.monthrange(low.year, low.month)[1]
    else:
        days = 1
    return start + days * 86_400_000_000 - 1


def _period(period: Any, *, grant: bool = True) -> tuple[int | None, int | None]:
    """The bounds of a Period; unreadable ones fail closed (see _NEVER): for a ``grant`` the period is
    then empty, for a denial (``grant=False``) unbounded."""
    if not isinstance(period, dict):
        return None, None
    bounds: list[int | None] = []
    for key, end in (("start", False), ("end", True)):
        try:
            bounds.append(_instant(period.get(key), end=end))
        except _UnreadableDateError:
            if not grant:
                bounds.append(None)
            else:
                bounds.append(_LONG_AGO if end else _NEVER)
    return bounds[0], bounds[1]


def _narrow(
    outer: tuple[int | None, int | None], inner: tuple[int | None, int | None]
) -> tuple[int | None, int | None]:
    starts = [v for v in (outer[0], inner[0]) if v is not None]
    ends = [v for v in (outer[1], inner[1]) if v is not None]
    return (max(starts) if starts else None, min(ends) if ends else None)


def _role_codes(participant: dict[str, Any]) -> tuple[str, ...]:
    return tuple(
        sorted(
            {
                f"{c.get('system') or ''}|{c.get('code') or ''}"
                for concept in participant.get("role") or []
                if isinstance(concept, dict)
                for c in concept.get("coding") or []
                if isinstance(c, dict)
            }
        )
    )


def care_team_rows(careteam: dict[str, Any], *, roles: bool = False) -> list[dict[str, Any]]:
    """One row per participant that grants access; none unless the CareTeam is active. With
    ``roles``, each row also carries the participant's role codes: the coordinator role is a grant
    (coordinated_patients), so a change of roles is a change of reach (reach_change)."""
    if careteam.get("status") != "active":
        return []
    subject = _ref(careteam.get("subject"))
    if subject is None or subject[0] != "Patient":
        return []
    team_period = _period(careteam.get("period"))
    rows = []
    for participant in careteam.get("participant") or []:
        member = _ref(participant.get("member")) if isinstance(participant, dict) else None
        if member is None or member[0] not in ACTOR_TYPES:
            continue
        start, end = _narrow(team_period, _period(participant.get("period")))
        row: dict[str, Any] = {
            "patient_id": subject[1],
            "member": f"{member[0]}/{member[1]}",
            "start_us": start,
            "end_us": end,
        }
        if roles:
            row["roles"] = _role_codes(participant)
        rows.append(row)
    return rows


def consent_rows(consent: dict[str, Any]) -> list[dict[str, Any]]:
    """Denials of an active Consent: each ``deny`` provision (nested ones too) and its actors.

    A deny provision without actors is an opposition to everyone ("*")."""
    if consent.get("status") != "active":
        return []
    patient = _ref(consent.get("patient"))
    if patient is None or patient[0] != "Patient":
        return []
    rows: list[dict[str, Any]] = []

    def walk(provision: Any, inherited: str | None, bounds: tuple[int | None, int | None]) -> None:
        if not isinstance(provision, dict):
            return
        kind = provision.get("type") or inherited
        bounds = _narrow(bounds, _period(provision.get("period"), grant=False))
        if kind == "deny":
            actors = [_ref(a.get("reference")) for a in provision.get("actor") or [] if isinstance(a, dict)]
            names = [f"{a[0]}/{a[1]}" for a in actors if a is not None and a[0] in ACTOR_TYPES]
            if not provision.get("actor"):
                names = ["*"]
            for name in names:
                rows.append(
                    {"patient_id": patient[1], "actor": name, "start_us": bounds[0], "end_us": bounds[1]}
                )
        # Nested provisions are exceptions to their parent; only their own "deny" ones deny (a nested
        # "permit" under a blanket deny is not honoured: stricter than asked, never looser).
        for child in provision.get("provision") or []:
            walk(child, None, bounds)

    walk(consent.get("provision"), None, (None, None))
    return rows


def affiliation_rows(role: dict[str, Any]) -> list[dict[str, Any]]:
    """A PractitionerRole links a practitioner to the role and its organization (unless inactive)."""
    if role.get("active") is False:
        return []
    practitioner = _ref(role.get("practitioner"))
    if practitioner is None or practitioner[0] != "Practitioner":
        return []
    organization = _ref(role.get("organization"))
    start, end = _period(role.get("period"))
    return [
        {
            "practitioner_id": practitioner[1],
            "role_id": str(role.get("id", "")),
            "organization": f"Organization/{organization[1]}" if organization else None,
            "start_us": start,
            "end_us": end,
        }
    ]


# Task statuses during which the owner is taking part in the care (R4 task-status; the others are
# draft, or over: rejected, cancelled, failed, completed, entered-in-error).
OPEN_TASK_STATUSES = frozenset({"requested", "received", "accepted", "ready", "in-progress", "on-hold"})


def task_access_rows(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Offers (restriction.recipient of a requested Task, within restriction.period) and the owner of an
    open Task reach the Task's patient (``Task.for``)."""
    patient = _ref(task.get("for"))
    status = task.get("status")
    if patient is None or patient[0] != "Patient" or status not in OPEN_TASK_STATUSES:
        return []
    rows: list[dict[str, Any]] = []
    if status == "requested":
        restriction = task.get("restriction")
        if not isinstance(restriction, dict):
            restriction = {}
        start, end = _period(restriction.get("period"))
        for recipient in restriction.get("recipient") or []:
            actor = _ref(recipient)
            if actor is not None and actor[0] in ACTOR_TYPES:
                rows.append(
                    {
                        "patient_id": patient[1],
                        "member": f"{actor[0]}/{actor[1]}",
                        "kind": "offer",
                        "start_us": start,
                        "end_us": end,
                    }
                )
    owner = _ref(task.get("owner"))
    if owner is not None and owner[0] in ACTOR_TYPES:
        rows.append(
            {
                "patient_id": patient[1],
                "member": f"{owner[0]}/{owner[1]}",
                "kind": "owner",
                "start_us": None,
                "end_us": None,
            }
        )
    return rows


# Resource type -> (derived table, the function that derives its rows): the index hook create_app gives
# the repository, which keeps them in step with every write of these types, in the same transaction.
Derive = Callable[[dict[str, Any]], list[dict[str, Any]]]
DERIVED: dict[str, tuple[Table, Derive]] = {
    "CareTeam": (care_team_access, care_team_rows),
    "Consent": (consent_deny, consent_rows),
    "PractitionerRole": (practitioner_affiliation, affiliation_rows),
    "Task": (task_access, task_access_rows),
}


def _covers(table: Any, now_us: int) -> Any:
    return and_(
        or_(table.c.start_us.is_(None), table.c.start_us <= now_us),
        or_(table.c.end_us.is_(None), table.c.end_us >= now_us),
    )


def actor_refs(conn: Connection, practitioner_id: str, now_us: int) -> list[str]:
    """The references that stand for this practitioner: themself, their roles and organizations."""
    a = practitioner_affiliation
    refs = [f"Practitioner/{practitioner_id}"]
    rows = conn.execute(
        select(a.c.role_id, a.c.organization).where(
            a.c.practitioner_id == practitioner_id, _covers(a, now_us)
        )
    )
    for role_id, organization in rows:
        refs.append(f"PractitionerRole/{role_id}")
        if organization:
            refs.append(organization)
    return list(dict.fromkeys(refs))


def denied_patients(refs: Iterable[str], now_us: int) -> Select[Any]:
    """Patients who object to these actors (or to everyone)."""
    c = consent_deny
    return select(c.c.patient_id).where(c.c.actor.in_([*refs, "*"]), _covers(c, now_us))


# What a professional a Task is offered to may see of its patient (the rest waits for the accept).
OFFER_TYPES = ("Patient", "Task")


def care_team_patients(
    refs: Iterable[str], now_us: int, ignore_tasks: Collection[int] = ()
) -> CompoundSelect[Any]:
    """Patients whose care team lists these actors now, or whose open Tasks they own (not counting
    the Tasks ``ignore_tasks``: a write may not lean on the grant it gives itself)."""
    refs = list(refs)
    t, k = care_team_access, task_access
    team = select(t.c.patient_id).where(t.c.member.in_(refs), _covers(t, now_us))
    owned = select(k.c.patient_id).where(k.c.member.in_(refs), k.c.kind == "owner", _covers(k, now_us))
    if ignore_tasks:
        owned = owned.where(k.c.res_pk.not_in(list(ignore_tasks)))
    return team.union(owned)


def _reachable(reached: Any, refs: list[str], now_us: int, launch_patient: str | None) -> Select[Any]:
    stmt = select(reached.c.patient_id).where(reached.c.patient_id.not_in(denied_patients(refs, now_us)))
    if launch_patient is not None:
        stmt = stmt.where(reached.c.patient_id == launch_patient)
    return stmt


def allowed_patients(
    refs: list[str], now_us: int, launch_patient: str | None, ignore_tasks: Collection[int] = ()
) -> Select[Any]:
    """Patients this practitioner may reach now: care team and owned Tasks, minus denials, within the
    launch context."""
    reached = care_team_patients(refs, now_us, ignore_tasks).subquery()
    return _reachable(reached, refs, now_us, launch_patient)


def offered_patients(refs: list[str], now_us: int, launch_patient: str | None) -> Select[Any]:
    """Patients with a Task offered to this practitioner now (their ``OFFER_TYPES`` only), minus
    denials, within the launch context."""
    k = task_access
    offers = select(k.c.patient_id).where(k.c.member.in_(refs), k.c.kind == "offer", _covers(k, now_us))
    return _reachable(offers.subquery(), refs, now_us, launch_patient)


def _covers_sql(alias: str) -> str:
    return (
        f"({alias}.start_us IS NULL OR {alias}.start_us <= :now) "
        f"AND ({alias}.end_us IS NULL OR {alias}.end_us >= :now)"
    )


# actor_refs() as a subquery: the practitioner, their current roles and those roles' organizations.
_ACTORS = (
    "SELECT CAST(:practitioner AS VARCHAR(140)) AS ref UNION "
    "SELECT 'PractitionerRole/' || a.role_id FROM practitioner_affiliation a "
    f"WHERE a.practitioner_id = :practitioner_id AND {_covers_sql('a')} UNION "
    "SELECT a.organization FROM practitioner_affiliation a "
    f"WHERE a.practitioner_id = :practitioner_id AND a.organization IS NOT NULL AND {_covers_sql('a')}"
)


def reach_case(break_glass: bool, launch_patient: bool) -> str:
    """The rule of ``patient_filter`` for the patient in column ``c.patient_id``, as a plain SQL
    expression: 1 if this practitioner may reach them now, else 0.

    Parameters: ``now``, ``practitioner`` ("Practitioner/<id>"), ``practitioner_id`` and, with a launch
    context, ``launch``. The read-by-id hot path runs it in the statement that reads the resource.
    """
    team = (
        "1 = 1"
        if break_glass
        else "(EXISTS (SELECT 1 FROM care_team_access t WHERE t.patient_id = c.patient_id "
        f"AND t.member IN ({_ACTORS}) AND {_covers_sql('t')}) "
        "OR EXISTS (SELECT 1 FROM task_access k WHERE k.patient_id = c.patient_id "
        f"AND k.member IN ({_ACTORS}) AND {_covers_sql('k')} "
        f"AND (k.kind = 'owner' OR c.res_type IN ({', '.join(repr(t) for t in OFFER_TYPES)}))))"
    )
    denied = (
        "EXISTS (SELECT 1 FROM consent_deny d WHERE d.patient_id = c.patient_id "
        f"AND (d.actor = '*' OR d.actor IN ({_ACTORS})) AND {_covers_sql('d')})"
    )
    context = "c.patient_id = :launch" if launch_patient else "1 = 1"
    return f"CASE WHEN {team} AND NOT {denied} AND {context} THEN 1 ELSE 0 END"


@dataclass(frozen=True)
class Reach:
    """The grants behind an ``allowed`` filter, for the per-row form of ``out_of_reach``."""

    refs: tuple[str, ...]
    now_us: int
    launch_patient: str | None
    ignore_tasks: tuple[int, ...] = ()
    offers: bool = True  # offers count (reads), or not (writes)


@dataclass(frozen=True)
class PatientFilter:
    """The patients a request may reach, as SQL: either only ``allowed`` ones (and, for the
    ``OFFER_TYPES`` of their record, the ``offered`` ones), or all but ``denied`` ones; ``reach``
    holds the same rule's inputs when it is the care-team rule itself."""

    allowed: Select[Any] | None = None
    denied: Select[Any] | None = None
    offered: Select[Any] | None = None
    reach: Reach | None = None


# A launch context that names no patient (a patient/ scope without launch/patient): reaches no one.
NO_PATIENT = "#no-patient-context"


def out_of_reach(f: PatientFilter, patient: Any, res_type: Any) -> Any:
    """SQL: a compartment's patient (column or literal ``patient``) of a ``res_type`` resource is out
    of the filter's reach; offers count for ``OFFER_TYPES`` only."""
    if f.reach is not None:
        return ~_reached(f.reach, patient, res_type)
    if f.allowed is not None:
        outside = patient.not_in(f.allowed)
        if f.offered is not None:
            offered = and_(res_type.in_(OFFER_TYPES), patient.in_(f.offered))
            outside = and_(outside, ~offered)
        return outside
    assert f.denied is not None
    return patient.in_(f.denied)


def _probe(table: Table, *where: Any) -> Any:
    """EXISTS a row of ``table`` (the table itself, never correlated to an enclosing query's: no alias
    to build, each probe is its own subquery)."""
    return exists(select(literal(1)).select_from(table).where(*where).correlate_except(table))


def _reached(r: Reach, patient: Any, res_type: Any) -> Any:
    """``allowed_patients`` (or ``offered_patients`` for the ``OFFER_TYPES``) holds ``patient``, as
    probes of the access tables' (member, patient_id) and (patient_id, actor) indexes for the row at
    hand: ``patient NOT IN (allowed)`` built the whole list in every statement (9,000 patients for a
    coordinator: 10-20 ms each, ten times on her worklist; issue 22)."""
    t, k, d = care_team_access, task_access, consent_deny
    refs = list(r.refs)
    owner = [k.c.patient_id == patient, k.c.member.in_(refs), k.c.kind == "owner", _covers(k, r.now_us)]
    if r.ignore_tasks:
        owner.append(k.c.res_pk.not_in(list(r.ignore_tasks)))
    granted = or_(
        _probe(t, t.c.patient_id == patient, t.c.member.in_(refs), _covers(t, r.now_us)), _probe(k, *owner)
    )
    if r.offers:
        offered = _probe(
            k, k.c.patient_id == patient, k.c.member.in_(refs), k.c.kind == "offer", _covers(k, r.now_us)
        )
        granted = or_(granted, and_(res_type.in_(OFFER_TYPES), offered))
    denied = _probe(d, d.c.patient_id == patient, d.c.actor.in_([*refs, "*"]), _covers(d, r.now_us))
    context = [patient == r.launch_patient] if r.launch_patient is not None else []
    return and_(granted, ~denied, *context)


@dataclass(frozen=True)
class Decision:
    """The answer for one resource: each patient of its compartments, and whether it is reachable."""

    reach: tuple[tuple[str, bool], ...]

    @property
    def allowed(self) -> bool:
        return all(ok for _p, ok in self.reach)


def decide(conn: Connection, f: PatientFilter | None, res_type: str, patients: Collection[str]) -> Decision:
    """May the caller whose reach is ``f`` (None: not limited by the care-team rule, a system client)
    see a ``res_type`` resource held by these patients' compartments? (None of them: not patient data.)"""
    wanted = list(dict.fromkeys(patients))
    if f is None or not wanted:
        return Decision(tuple((p, True) for p in wanted))
    row = conn.execute(
        select(
            literal(1),
            *[(~out_of_reach(f, literal(p), literal(res_type))).label(f"p{i}") for i, p in enumerate(wanted)],
        )
    ).one()
    return Decision(tuple((p, bool(row[i + 1])) for i, p in enumerate(wanted)))


def write_filter(
    refs: list[str], now_us: int, launch_patient: str | None, break_glass: bool, ignore_tasks: Collection[int]
) -> PatientFilter:
    """The reach of a write: as ``patient_filter`` but without offers (an offer lets its recipient
    read and accept the Task, not file data) and without the owner grants of ``ignore_tasks``."""
    if break_glass:
        return patient_filter(refs, now_us, launch_patient, break_glass)
    return PatientFilter(
        allowed=allowed_patients(refs, now_us, launch_patient, ignore_tasks),
        reach=Reach(tuple(refs), now_us, launch_patient, tuple(ignore_tasks), offers=False),
    )


def task_patient(task: dict[str, Any]) -> str | None:
    """The patient id of ``Task.for`` (None unless it names a Patient)."""
    patient = _ref(task.get("for"))
    return patient[1] if patient is not None and patient[0] == "Patient" else None


def reachable_among(conn: Connection, f: PatientFilter, patients: Collection[str]) -> set[str]:
    """Of ``patients``, those the filter reaches (not counting offers)."""
    if not patients:
        return set()
    wanted = list(patients)
    if f.allowed is not None:
        sub = f.allowed.subquery()
        rows = conn.execute(select(sub.c.patient_id).where(sub.c.patient_id.in_(wanted))).all()
        return {r[0] for r in rows}
    assert f.denied is not None
    sub = f.denied.subquery()
    denied = {r[0] for r in conn.execute(select(sub.c.patient_id).where(sub.c.patient_id.in_(wanted)))}
    return set(wanted) - denied


def offered_to(task: dict[str, Any], refs: Iterable[str], now_us: int) -> bool:
    """Is this Task, as stored, a requested one offered to one of these actors now?"""
    if task.get("status") != "requested":
        return False
    rows = [r for r in task_access_rows(task) if r["kind"] == "offer"]
    mine = set(refs)
    return any(
        r["member"] in mine
        and (r["start_us"] is None or r["start_us"] <= now_us)
        and (r["end_us"] is None or r["end_us"] >= now_us)
        for r in rows
    )


def patient_filter(
    refs: list[str], now_us: int, launch_patient: str | None, break_glass: bool
) -> PatientFilter:
    """The reach of a request (reads). Row filters use its per-row form (``reach``): on both databases
    it was as fast or faster than the list form for a GP (~100 patients: PostgreSQL 204 vs 282 ms on
    her worklist) and 2-3x faster for a coordinator (9,000)."""
    if break_glass and launch_patient is None:
        return PatientFilter(denied=denied_patients(refs, now_us))
    if launch_patient == NO_PATIENT:
        return PatientFilter(allowed=select(literal(NO_PATIENT).label("patient_id")).where(false()))
    if break_glass:
        return PatientFilter(
            allowed=select(literal(launch_patient).label("patient_id")).where(
                literal(launch_patient).not_in(denied_patients(refs, now_us))
            )
        )
    return PatientFilter(
        allowed=allowed_patients(refs, now_us, launch_patient),
        offered=offered_patients(refs, now_us, launch_patient),
        reach=Reach(tuple(refs), now_us, launch_patient),
    )


# -- writes that change who reaches a patient ------------------------------------------------------

# What the accept of an offered Task may change besides ``meta`` (R4 Task: the taker sets the owner and
# the status, may note and schedule); never ``for``, ``focus``, ``encounter`` or anything else.
ACCEPT_FIELDS = frozenset({"status", "owner", "lastModified", "executionPeriod", "note"})


def _row_key(row: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, v) for k, v in row.items() if k not in {"res_pk", "role_id"}))


@dataclass(frozen=True)
class ReachChange:
    """The access rows a write adds and removes, and the patients whose reach they touch."""

    res_type: str
    added: tuple[dict[str, Any], ...]
    removed: tuple[dict[str, Any], ...]

    @property
    def patients(self) -> frozenset[str]:
        return frozenset(r["patient_id"] for r in (*self.added, *self.removed) if "patient_id" in r)


def _care_team_rows_with_roles(careteam: dict[str, Any]) -> list[dict[str, Any]]:
    return care_team_rows(careteam, roles=True)


def reach_change(res_type: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> ReachChange | None:
    """What replacing ``old`` by ``new`` (None: absent or deleted) changes in the access rows."""
    derived = DERIVED.get(res_type)
    if derived is None:
        return None
    rows_of: Derive = derived[1]
    if res_type == "CareTeam":
        rows_of = _care_team_rows_with_roles
    before = {_row_key(r): r for r in (rows_of(old) if old else [])}
    after = {_row_key(r): r for r in (rows_of(new) if new else [])}
    added = tuple(after[k] for k in after.keys() - before.keys())
    removed = tuple(before[k] for k in before.keys() - after.keys())
    if not added and not removed:
        return None
    return ReachChange(res_type, added, removed)


def change_refusal(change: ReachChange, refs: Collection[str], coordinated: Collection[str]) -> str | None:
    """Why a practitioner (whose references are ``refs``, coordinating the patients ``coordinated``)
    may not make this change, or None when she may."""
    if change.res_type == "PractitionerRole":
        return (
            "PractitionerRole affiliations (practitioner, organization, period, active) are directory "
            "data, changed by system clients only"
        )
    outside = sorted(change.patients - set(coordinated))
    if change.res_type == "CareTeam" and outside:
        return (
            "Changing a care team (members, their roles and periods, status, period, subject) is reserved "
            "to the patient's coordinators"
        )
    if change.res_type == "Consent" and any(r["patient_id"] in outside for r in change.removed):
        return "Lifting a patient's objection (Consent deny) is reserved to the patient's coordinators"
    if change.res_type == "Task" and any(r["patient_id"] in outside for r in change.added):
        # Herself too: an owner grant outlives her care-team membership and a break-the-glass reason;
        # she takes a Task by accepting an offer (dispatch), or a coordinator gives it to her.
        return (
            "Giving a Task to a professional (owner, restriction.recipient) is reserved to the patient's "
            "coordinators; open Tasks are offered by dispatch and taken by accepting the offer"
        )
    return None


# Directory data (Annuaire Santé, the CPTS's own): who works where and on what; dispatch offers Tasks
# from it (role codes, locations, services' areas), so a practitioner editing it could get herself
# offered any patient's Task. Written by system clients (the directory sync, an operator) only.
DIRECTORY_TYPES = frozenset({"PractitionerRole", "Location", "HealthcareService", "Organization", "Endpoint"})


def directory_refusal(res_type: str) -> str | None:
    if res_type in DIRECTORY_TYPES:
        return (
            f"{res_type} is directory data (who works where, on what): changed by system clients only "
            "(the directory sync, an operator)"
        )
    return None


def taken_already(old: dict[str, Any] | None, refs: Collection[str]) -> bool:
    """The Task was already taken by someone else (no longer requested, another owner)."""
    if old is None or old.get("status") == "requested":
        return False
    owner = _ref(old.get("owner"))
    return owner is not None and f"{owner[0]}/{owner[1]}" not in refs


def accept_refusal(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The accept of an offered Task changes ``ACCEPT_FIELDS`` only."""
    changed = sorted(
        k
        for k in (old.keys() | new.keys()) - ACCEPT_FIELDS - {"meta", "id", "resourceType"}
        if old.get(k) != new.get(k)
    )
    if changed:
        allowed = ", ".join(sorted(ACCEPT_FIELDS))
        return f"Accepting an offered Task may change only {allowed}; not {', '.join(changed)}"
    return None


def coordinated_patients(
    conn: Connection,
    refs: Collection[str],
    patients: Collection[str],
    now_us: int,
    *,
    coordinator: str,
    coordinator_role: str,
) -> set[str]:
    """Of ``patients``, those these actors coordinate now: the configured CPTS coordinator coordinates
    every patient; otherwise an active CareTeam of the patient lists them with the coordinator role."""
    if not patients:
        return set()
    if coordinator and coordinator in refs:
        return set(patients)
    t = care_team_access
    rows = conn.execute(
        select(t.c.res_pk, t.c.patient_id).where(
            t.c.patient_id.in_(list(patients)), t.c.member.in_(list(refs)), _covers(t, now_us)
        )
    ).all()
    if not rows:
        return set()
    # The role is on the CareTeam itself (participant.role), read from the stored resource.
    contents: dict[int, str | None] = dict(
        conn.execute(
            text("SELECT pk, content FROM resource WHERE pk IN :pks").bindparams(
                bindparam("pks", expanding=True)
            ),
            {"pks": sorted({r[0] for r in rows})},
        ).all()
    )
    out: set[str] = set()
    for pk, patient in rows:
        content = contents.get(pk)
        team = orjson.loads(content) if content else {}
        for participant in team.get("participant") or []:
            if not isinstance(participant, dict):
                continue
            member = _ref(participant.get("member"))
            if member is None or f"{member[0]}/{member[1]}" not in refs:
                continue
            codes = {
                c.get("code")
                for concept in participant.get("role") or []
                if isinstance(concept, dict)
                for c in concept.get("coding") or []
                if isinstance(c, dict)
            }
            start, end = _narrow(_period(team.get("period")), _period(participant.get("period")))
            if (
                coordinator_role in codes
                and (start is None or start <= now_us)
                and (end is None or end >= now_us)
            ):
                out.add(patient)
    return out


# Whose login a resource stands for: a login is bound to a Practitioner through its identifiers (RPPS,
# Pro Santé Connect's SubjectNameID), so a practitioner changing a Practitioner's identifiers could log
# in as someone else.
IDENTITY_TYPES = frozenset({"Practitioner"})


def identity_refusal(res_type: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> str | None:
    """Why a practitioner may not make this write to a Practitioner (None when she may): changing the
    identifiers of an existing one is reserved to system clients (the directory, an operator)."""
    if res_type not in IDENTITY_TYPES or old is None:
        return None
    if (new or {}).get("identifier") != old.get("identifier"):
        return (
            "Practitioner identifiers (RPPS, ADELI) bind logins and are directory data: changed by "
            "system clients only"
        )
    return None
