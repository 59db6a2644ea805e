"""``GET /app/``: the worklist of a CPTS coordinator and of the professionals (issue 22), and the Task
actions its buttons post.

Three tables, each from FHIR searches made for the signed-in user (``data.search``: what the API
returns to her, no more):

- « Sorties à suivre »: ``Encounter?status=finished&date=ge<14 days ago>`` (a discharge is the stay
  the intake finished, ``coordination/intake/discharge.py``) with its patient and establishment, the
  CarePlans and Tasks the discharge protocols started for it (``CarePlan?encounter=``,
  ``Task?encounter=``). Late: an open Task past ``restriction.period.end``. Sorted by urgency: late
  first, then not followed (no protocol, or no Task taken yet), then by the next due date.
- « Tâches à prendre »: the requested Tasks she may see (``Task?status=requested``) that dispatch
  offers her (``Task.restriction.recipient``, ``coordination/dispatch.py``), and, for the patients she
  coordinates (``auth/policy.coordinated_patients``), the unclaimed and the escalated ones.
- « Mes tâches »: ``Task?owner=<her Practitioner and PractitionerRoles>`` still open.

Actions are form POSTs (CSRF) that update the Task as the API's PUT with If-Match does: accepting an
offer (first to accept; the loser sees « Déjà prise par … », 409), assigning (coordinator),
completing, cancelling with a reason. After an action, 303 back to the worklist (its notice in the
session)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Response, current_app, redirect, request, session

from auth import policy
from coordination_api.config import DispatchSettings
from coordination_api.coordination.dispatch import DISPATCH_STATUS
from coordination_api.errors import Category, FhirError
from coordination_api.pages import data
from coordination_api.pages.blueprint import PageError, bp, current_user
from coordination_api.pages.render import age, instant, name_of, show
from coordination_api.search.dates import MAX_US
from coordination_api.search.projection import code_of, end_of, target_of

WINDOW_DAYS = 14  # discharges of the last two weeks (issue 22)
TABLE_ROWS = 50  # rows a table shows first (the most urgent); « Tout afficher » shows MAX_ROWS
MAX_ROWS = 200  # per table: a worklist, not an export
MAX_SCANNED = 1000  # stays of the window ranked (each as a few index values, not read whole)
PAGE = 1000  # the API's _count cap
BY_STAY = ("encounter", "Encounter")  # CarePlans and Tasks counted per stay
OPEN = ("requested", "received", "accepted", "ready", "in-progress", "on-hold")
TAKEN = frozenset({"accepted", "ready", "in-progress", "on-hold", "completed"})
NOT_COUNTED = frozenset({"cancelled", "rejected", "entered-in-error", "draft"})
FILTERS = {"toutes": "Toutes", "non-suivies": "Non suivies", "en-retard": "En retard"}
STATUS_FR = {
    "requested": "Demandée",
    "received": "Reçue",
    "accepted": "Acceptée",
    "ready": "Prête",
    "in-progress": "En cours",
    "on-hold": "En pause",
    "completed": "Terminée",
    "cancelled": "Annulée",
}
NOTICE = "pages_notice"  # the session key of the message shown after an action
MIN_REASON = 3


@dataclass
class Discharge:
    encounter_id: str
    patient_id: str | None
    discharged: datetime
    patient: str = ""
    age: int | None = None
    establishment: str = "—"
    protocols: list[str] = field(default_factory=list)
    planned: bool = False  # a protocol (CarePlan) was started for the stay
    done: int = 0
    total: int = 0
    next_due: datetime | None = None
    late: bool = False
    followed: bool = False

    def urgency(self) -> tuple[int, float, float]:
        rank = 0 if self.late else 1 if not self.followed else 2
        due = self.next_due.timestamp() if self.next_due else float("inf")
        return rank, due, -self.discharged.timestamp()


@dataclass
class TaskRow:
    task_id: str
    version: str
    title: str
    status: str
    patient_id: str | None
    patient: str
    due: datetime | None
    late: bool
    stage: str | None
    offered: bool = False
    candidates: list[tuple[str, str]] = field(default_factory=list)


def _ref(value: Any) -> str | None:
    reference = value.get("reference") if isinstance(value, dict) else None
    return reference if isinstance(reference, str) else None


def _id_of(reference: str | None, resource_type: str) -> str | None:
    if reference and reference.startswith(f"{resource_type}/"):
        return reference.split("/", 1)[1].split("/_history/")[0]
    return None


def _deadline(task: dict[str, Any]) -> datetime | None:
    restriction = task.get("restriction")
    period = restriction.get("period") if isinstance(restriction, dict) else None
    return instant(period.get("end")) if isinstance(period, dict) else None


def _stage(task: dict[str, Any]) -> str | None:
    concept = task.get("businessStatus")
    for coding in (concept or {}).get("coding") or [] if isinstance(concept, dict) else []:
        if isinstance(coding, dict) and coding.get("system") == DISPATCH_STATUS:
            code = coding.get("code")
            return code if isinstance(code, str) else None
    return None


def _title(task: dict[str, Any]) -> str:
    code = task.get("code")
    text = code.get("text") if isinstance(code, dict) else None
    if not text and isinstance(code, dict):
        text = next((c.get("display") for c in code.get("coding") or [] if c.get("display")), None)
    return str(text or task.get("description") or "Tâche")


def _patients(found: data.Found) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in found.included + found.matches if r.get("resourceType") == "Patient"}


def _patient_label(patient: dict[str, Any] | None, patient_id: str | None) -> str:
    return name_of(patient) or (f"Patient {patient_id}" if patient_id else "Patient inconnu")


# -- the three tables -----------------------------------------------------------------------------


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _moment(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, UTC)


def _window(now: datetime) -> dict[str, Discharge]:
    """The stays that ended in the window, from the index alone (``data.index_values``): a
    coordinator's window holds hundreds; only the rows shown are read whole (``_describe``)."""
    cutoff = now - timedelta(days=WINDOW_DAYS)
    stays = data.index_values(
        "Encounter",
        [("date", f"ge{_instant(cutoff)}"), ("_sort", "-date"), ("_count", str(MAX_SCANNED))],
        {"status": code_of("status"), "end": end_of("date"), "patient": target_of("subject", "Patient")},
    )
    rows: dict[str, Discharge] = {}
    for stay in stays.matches:
        # The date range drives the search; the status is checked here (with status=finished beside
        # it SQLite started from every finished stay of the CPTS; ongoing stays are the few inpatients).
        end = stay.values["end"]
        if stay.values["status"] != "finished" or end is None or end >= MAX_US or end < _us(cutoff):
            continue  # still in hospital, or a stay that overlaps the window but ended before it
        rows[stay.res_id] = Discharge(stay.res_id, stay.values["patient"], _moment(end))
    return rows


def _follow_up(rows: dict[str, Discharge], now: datetime) -> None:
    """Protocols started and Tasks done / total, late and next due, per stay: counted by the
    database (``data.tally``), not read Task by Task."""
    now_us = _us(now)
    ids = list(rows)
    for plan in data.tally("CarePlan", BY_STAY, ids, "status"):
        if plan.target_id in rows and plan.code in {"active", "completed", "on-hold"}:
            rows[plan.target_id].planned = True
    for tasks in data.tally("Task", BY_STAY, ids, "status", "deadline"):
        row = rows.get(tasks.target_id)
        if row is None or tasks.code in NOT_COUNTED:
            continue
        row.total += tasks.count
        row.done += tasks.count if tasks.code == "completed" else 0
        row.followed = row.followed or tasks.code in TAKEN
        if tasks.code in OPEN and tasks.earliest is not None:
            row.late = row.late or tasks.earliest < now_us
            due = _moment(tasks.earliest)
            row.next_due = due if row.next_due is None else min(row.next_due, due)
    for row in rows.values():
        row.followed = row.followed and row.planned


def _describe(rows: list[Discharge], now: datetime) -> None:
    """What the shown rows display: patient, establishment, discharge instant, protocol titles."""
    ids = [r.encounter_id for r in rows]
    if not ids:
        return
    found = data.search(
        "Encounter",
        [
            ("_id", ",".join(ids)),
            ("_count", str(len(ids))),
            ("_include", "Encounter:subject"),
            ("_include", "Encounter:service-provider"),
        ],
    )
    stays = {r["id"]: r for r in found.matches}
    patients = _patients(found)
    organizations = {r["id"]: r for r in found.included if r.get("resourceType") == "Organization"}
    plans = data.search(
        "CarePlan", [("encounter", ",".join(f"Encounter/{i}" for i in ids)), ("_count", str(PAGE))]
    )
    titles: dict[str, list[str]] = {}
    for plan in plans.matches:
        if plan.get("status") in {"active", "completed", "on-hold"}:
            stay = _id_of(_ref(plan.get("encounter")), "Encounter") or ""
            titles.setdefault(stay, []).append(str(plan.get("title") or "Protocole"))
    for row in rows:
        encounter = stays.get(row.encounter_id, {})
        patient = patients.get(row.patient_id or "")
        provider = encounter.get("serviceProvider") or {}
        organization = organizations.get(_id_of(_ref(provider), "Organization") or "")
        row.patient = _patient_label(patient, row.patient_id)
        row.age = age((patient or {}).get("birthDate"), now.date())
        row.establishment = str((organization or {}).get("name") or provider.get("display") or "—")
        row.discharged = instant((encounter.get("period") or {}).get("end")) or row.discharged
        row.protocols = titles.get(row.encounter_id, [])


def discharges(now: datetime, shown: str, limit: int) -> tuple[list[Discharge], int, int]:
    """The discharges of the window that ``shown`` keeps, most urgent first, at most ``limit`` of
    them described; how many ``shown`` keeps, and how many the window holds in all."""
    rows = _window(now)
    _follow_up(rows, now)
    ranked = sorted(rows.values(), key=Discharge.urgency)
    if shown == "non-suivies":
        ranked = [d for d in ranked if not d.followed]
    elif shown == "en-retard":
        ranked = [d for d in ranked if d.late]
    listed = ranked[:limit]
    _describe(listed, now)
    return listed, len(ranked), len(rows)


def _instant(moment: datetime) -> str:
    """A FHIR instant to the second, in UTC."""
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _task_row(task: dict[str, Any], patients: dict[str, dict[str, Any]], now: datetime) -> TaskRow:
    patient_id = _id_of(_ref(task.get("for")), "Patient")
    due = _deadline(task)
    return TaskRow(
        task_id=task["id"],
        version=str((task.get("meta") or {}).get("versionId") or ""),
        title=_title(task),
        status=str(task.get("status")),
        patient_id=patient_id,
        patient=_patient_label(patients.get(patient_id or ""), patient_id),
        due=due,
        late=due is not None and due < now and task.get("status") in OPEN,
        stage=_stage(task),
    )


def _dispatch_settings() -> DispatchSettings:
    settings: DispatchSettings = current_app.extensions["coordination"].settings.dispatch
    return settings


def to_take(refs: list[str], now: datetime, limit: int) -> tuple[list[TaskRow], bool]:
    """Offers made to her, and the unclaimed or escalated Tasks of the patients she coordinates,
    among the ``limit`` requested Tasks she may see that are due first; and whether more are."""
    found = data.search(
        "Task",
        [
            ("status", "requested"),
            ("_sort", "deadline"),
            ("_count", str(limit)),
            ("_include", "Task:patient"),
        ],
    )
    patients = _patients(found)
    now_us = _us(now)
    mine = set(refs)
    candidates = [t for t in found.matches if not policy.offered_to(t, refs, now_us)]
    wanted = {p for p in (_id_of(_ref(t.get("for")), "Patient") for t in candidates) if p}
    coordinated = data.coordinated(refs, wanted, now_us, _dispatch_settings())
    rows: list[TaskRow] = []
    assignable: list[TaskRow] = []
    for task in found.matches:
        row = _task_row(task, patients, now)
        owner = _ref(task.get("owner"))
        if policy.offered_to(task, refs, now_us):
            row.offered = True
            rows.append(row)
        elif row.patient_id in coordinated and (
            owner is None or (owner in mine and row.stage == "escalated")
        ):
            rows.append(row)
            assignable.append(row)
    if assignable:
        _add_candidates(assignable)
    return rows, found.more


def _add_candidates(rows: list[TaskRow]) -> None:
    """The professionals a coordinator may give a Task to: the patient's care team (active)."""
    ids = sorted({r.patient_id for r in rows if r.patient_id})
    members: dict[str, list[tuple[str, str]]] = {}
    found = data.search(
        "CareTeam",
        [
            ("patient", ",".join(ids)),
            ("status", "active"),
            ("_count", "1000"),
            ("_include", "CareTeam:participant"),
        ],
    )
    people = {
        f"{r['resourceType']}/{r['id']}": r
        for r in found.included
        if r.get("resourceType") in {"Practitioner", "PractitionerRole"}
    }
    now = datetime.now(UTC)
    for team in found.matches:
        patient_id = _id_of(_ref(team.get("subject")), "Patient")
        for participant in team.get("participant") or []:
            member = _ref(participant.get("member"))
            if not member or not member.startswith(("Practitioner/", "PractitionerRole/")):
                continue
            if not _current(participant.get("period"), now):  # a former member is no candidate
                continue
            roles = [
                str(c.get("display") or c.get("code"))
                for role in participant.get("role") or []
                for c in role.get("coding") or []
                if c.get("code")
            ]
            label = name_of(people.get(member)) or member
            if roles:
                label = f"{label} ({', '.join(roles)})"
            listed = members.setdefault(patient_id or "", [])
            if member not in {m for m, _l in listed}:
                listed.append((member, label))
    for row in rows:
        row.candidates = sorted(members.get(row.patient_id or "", []), key=lambda m: m[1])


def _current(period: Any, now: datetime) -> bool:
    """The participant's period (if any) covers now, as the care-team rule reckons membership."""
    if not isinstance(period, dict):
        return True
    start, end = instant(period.get("start")), instant(period.get("end"))
    return (start is None or start <= now) and (end is None or end >= now)


def my_tasks(refs: list[str], now: datetime, limit: int) -> tuple[list[TaskRow], bool]:
    """Open Tasks she owns, herself or through one of her PractitionerRoles (not her organizations'),
    the ``limit`` due first, and whether she has more; those escalated to her as the patient's
    coordinator wait in « Tâches à prendre » (to assign)."""
    people = [r for r in refs if r.startswith(("Practitioner/", "PractitionerRole/"))]
    found = data.search(
        "Task",
        [
            ("owner", ",".join(people)),
            ("status", ",".join(OPEN)),
            ("_sort", "deadline"),
            ("_count", str(limit)),
            ("_include", "Task:patient"),
        ],
    )
    patients = _patients(found)
    rows = [_task_row(t, patients, now) for t in found.matches]
    escalated = {
        r.patient_id for r in rows if r.status == "requested" and r.stage == "escalated" and r.patient_id
    }
    now_us = _us(now)
    coordinated = data.coordinated(refs, escalated, now_us, _dispatch_settings())
    return [
        r
        for r in rows
        if not (r.status == "requested" and r.stage == "escalated" and r.patient_id in coordinated)
    ], found.more


@bp.get("/")
def worklist() -> Response:
    now = datetime.now(UTC)
    shown = request.args.get("filtre", "toutes")
    if shown not in FILTERS:
        shown = "toutes"
    every = request.args.get("tout") == "1"
    limit = MAX_ROWS if every else TABLE_ROWS
    refs = data.my_refs()
    listed, kept, discharge_count = discharges(now, shown, limit)
    offers, more_offers = to_take(refs, now, limit)
    mine, more_mine = my_tasks(refs, now, limit)
    return show(
        "pages_worklist.html",
        discharges=listed,
        discharge_count=discharge_count,
        offers=offers,
        mine=mine,
        # « Tout afficher » when a table shows its first rows only.
        more=not every and (len(listed) < kept or more_offers or more_mine),
        limit=limit,
        more_offers=more_offers,
        more_mine=more_mine,
        filters=FILTERS,
        shown=shown,
        notice=session.pop(NOTICE, None),
        statuses=STATUS_FR,
    )


# -- actions --------------------------------------------------------------------------------------


def _back(notice: str) -> Response:
    session[NOTICE] = notice
    return redirect("/app/", code=303)  # type: ignore[return-value]


def _taken_by(task: dict[str, Any] | None) -> str:
    owner = (task or {}).get("owner")
    if isinstance(owner, dict) and owner.get("display"):
        return str(owner["display"])
    return "un autre professionnel"


def _write(task_id: str, body: dict[str, Any], version: str, conflict: str) -> None:
    try:
        data.update("Task", task_id, body, version)
    except FhirError as exc:
        if exc.status in {409, 412}:
            raise PageError(Category.CONFLICT, conflict) from exc
        raise


def _now_instant() -> str:
    """Now as a FHIR instant to the second (Task.lastModified of a page action)."""
    return _instant(datetime.now(UTC))


def _form_version() -> str:
    return request.form.get("version", "").strip()


@bp.post("/tasks/<task_id>/accept")
def accept(task_id: str) -> Response:
    """The first to accept takes it: If-Match on the version her page showed; dispatch's own checks
    (offered to her, still requested) run in the write."""
    try:
        task = data.read("Task", task_id)
    except FhirError as exc:
        if exc.status in {403, 404}:  # the offer ended with the take: she may not read it any more
            raise PageError(Category.CONFLICT, "Déjà prise par un autre professionnel.") from exc
        raise
    if task.get("status") != "requested":
        raise PageError(Category.CONFLICT, f"Déjà prise par {_taken_by(task)}.")
    user = current_user()
    refs = data.my_refs()
    offered = [_ref(r) for r in (task.get("restriction") or {}).get("recipient") or []]
    # Herself (or one of her PractitionerRoles), never an Organization she belongs to: an
    # organization as owner would open the patient to all its members and be nobody's task.
    people = [
        r
        for r in offered
        if r in refs and r is not None and r.startswith(("Practitioner/", "PractitionerRole/"))
    ]
    me = people[0] if people else f"Practitioner/{user.practitioner_id}"
    body = dict(task)
    body["status"] = "accepted"
    body["owner"] = {"reference": me, "display": data.practitioner_name() or user.username}
    body["lastModified"] = _now_instant()
    try:
        data.update("Task", task_id, body, _form_version())
    except FhirError as exc:
        if exc.status not in {409, 412}:
            raise
        try:
            now = data.read("Task", task_id)
        except FhirError:
            now = None
        raise PageError(Category.CONFLICT, f"Déjà prise par {_taken_by(now)}.") from exc
    return _back(f"Tâche acceptée : {_title(task)}.")


@bp.post("/tasks/<task_id>/assign")
def assign(task_id: str) -> Response:
    """A coordinator gives the Task to a member of the patient's care team (the care-team rule reserves
    it to the patient's coordinators). The assignment ends the offer: the Task is ``ready`` for its
    new owner, dispatch closes it as taken, and nobody it was offered to can take it back."""
    owner = request.form.get("owner", "")
    task = _read_task(task_id)
    if task.get("status") != "requested":  # the rows of « Tâches à prendre » only (review 24)
        raise PageError(Category.CONFLICT, f"Déjà prise par {_taken_by(task)}.")
    row = _task_row(task, {}, datetime.now(UTC))
    _add_candidates([row])
    labels = dict(row.candidates)
    if owner not in labels:  # the form lists the care team; anything else is refused here too
        raise PageError(Category.INVALID, "Choisissez un professionnel du cercle de soins du patient.")
    body = dict(task)
    body["status"] = "ready"
    body["owner"] = {"reference": owner, "display": labels[owner]}
    body["lastModified"] = _now_instant()
    _write(task_id, body, _form_version(), "La tâche a changé entre-temps ; rechargez la page.")
    return _back(f"Tâche attribuée : {_title(task)}.")


def _read_task(task_id: str) -> dict[str, Any]:
    """The Task an action names; one answer for unknown and out of reach (as the patient page)."""
    try:
        return data.read("Task", task_id)
    except FhirError as exc:
        if exc.status in {403, 404, 410}:
            raise PageError(Category.NOT_FOUND, "Tâche introuvable.") from exc
        raise


def _mine(task: dict[str, Any]) -> None:
    """« Terminer » and « Annuler » are the owner's, on an open Task (the rows of « Mes tâches »): the
    write guard alone would let any member of the care team close a Task offered to others or taken
    by someone else (review 24)."""
    people = {r for r in data.my_refs() if r.startswith(("Practitioner/", "PractitionerRole/"))}
    if _ref(task.get("owner")) not in people:
        raise PageError(Category.FORBIDDEN, "Seul le professionnel qui a pris la tâche peut la clore.")
    if task.get("status") not in OPEN:
        raise PageError(Category.CONFLICT, "Cette tâche est déjà close.")


def _finish(task_id: str, status: str, reason: str | None) -> dict[str, Any]:
    task = _read_task(task_id)
    _mine(task)
    body = dict(task)
    body["status"] = status
    body["lastModified"] = _now_instant()
    if reason:
        body["statusReason"] = {"text": reason}
    _write(task_id, body, _form_version(), "La tâche a changé entre-temps ; rechargez la page.")
    return task


@bp.post("/tasks/<task_id>/complete")
def complete(task_id: str) -> Response:
    task = _finish(task_id, "completed", None)
    return _back(f"Tâche terminée : {_title(task)}.")


@bp.post("/tasks/<task_id>/cancel")
def cancel(task_id: str) -> Response:
    reason = " ".join(request.form.get("reason", "").split())[:500]
    if len(reason) < MIN_REASON:
        raise PageError(Category.INVALID, "Indiquez le motif de l'annulation.")
    task = _finish(task_id, "cancelled", reason)
    return _back(f"Tâche annulée : {_title(task)}.")
