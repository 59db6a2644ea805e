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

WINDOW_DAYS = 14  # discharges of the last two weeks (issue 22)
MAX_ROWS = 200  # per table: a worklist, not an export
MAX_SCANNED = 1000  # stays of the window read to find MAX_ROWS discharges among them
ENCOUNTERS_PER_SEARCH = 100  # ids in one ``encounter=`` OR list
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
    patient: str
    age: int | None
    establishment: str
    discharged: datetime
    protocols: list[str] = field(default_factory=list)
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


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# -- the three tables -----------------------------------------------------------------------------


def discharges(now: datetime) -> list[Discharge]:
    since = (now - timedelta(days=WINDOW_DAYS)).date().isoformat()
    # The date range drives the search; the status is checked on its rows (with status=finished
    # beside it SQLite started from every finished stay of the CPTS; ongoing stays in the window
    # are few: the current inpatients).
    found = data.search(
        "Encounter",
        [
            ("date", f"ge{since}"),
            ("_sort", "-date"),
            ("_count", str(MAX_SCANNED)),
            ("_include", "Encounter:subject"),
            ("_include", "Encounter:service-provider"),
        ],
    )
    patients = _patients(found)
    organizations = {r["id"]: r for r in found.included if r.get("resourceType") == "Organization"}
    cutoff = now - timedelta(days=WINDOW_DAYS)
    rows: dict[str, Discharge] = {}
    for encounter in found.matches:
        if encounter.get("status") != "finished" or len(rows) >= MAX_ROWS:
            continue
        ended = instant((encounter.get("period") or {}).get("end"))
        if ended is None or ended < cutoff:
            continue  # still in hospital, or a stay that overlaps the window but ended before it
        patient_id = _id_of(_ref(encounter.get("subject")), "Patient")
        patient = patients.get(patient_id or "")
        provider = encounter.get("serviceProvider") or {}
        organization = organizations.get(_id_of(_ref(provider), "Organization") or "")
        rows[encounter["id"]] = Discharge(
            encounter_id=encounter["id"],
            patient_id=patient_id,
            patient=_patient_label(patient, patient_id),
            age=age((patient or {}).get("birthDate"), now.date()),
            establishment=str((organization or {}).get("name") or provider.get("display") or "—"),
            discharged=ended,
        )
    for ids in _chunks([f"Encounter/{i}" for i in rows], ENCOUNTERS_PER_SEARCH):
        criteria = [("encounter", ",".join(ids)), ("_count", "1000")]
        for plan in data.search("CarePlan", criteria).matches:
            row = rows.get(_id_of(_ref(plan.get("encounter")), "Encounter") or "")
            if row is not None and plan.get("status") in {"active", "completed", "on-hold"}:
                row.protocols.append(str(plan.get("title") or "Protocole"))
        for task in data.search("Task", criteria).matches:
            row = rows.get(_id_of(_ref(task.get("encounter")), "Encounter") or "")
            status = task.get("status")
            if row is None or status in NOT_COUNTED:
                continue
            row.total += 1
            row.done += status == "completed"
            row.followed = row.followed or status in TAKEN
            due = _deadline(task)
            if status in OPEN and due is not None:
                row.late = row.late or due < now
                row.next_due = due if row.next_due is None else min(row.next_due, due)
    for row in rows.values():
        row.followed = row.followed and bool(row.protocols)
    return sorted(rows.values(), key=Discharge.urgency)


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


def to_take(refs: list[str], now: datetime) -> list[TaskRow]:
    """Offers made to her, and the unclaimed or escalated Tasks of the patients she coordinates."""
    found = data.search(
        "Task",
        [
            ("status", "requested"),
            ("_sort", "deadline"),
            ("_count", str(MAX_ROWS)),
            ("_include", "Task:patient"),
        ],
    )
    patients = _patients(found)
    now_us = int(now.timestamp() * 1_000_000)
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
    return rows


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


def my_tasks(refs: list[str], now: datetime) -> list[TaskRow]:
    """Open Tasks she owns, herself or through one of her PractitionerRoles (not her organizations');
    those escalated to her as the patient's coordinator wait in « Tâches à prendre » (to assign)."""
    people = [r for r in refs if r.startswith(("Practitioner/", "PractitionerRole/"))]
    found = data.search(
        "Task",
        [
            ("owner", ",".join(people)),
            ("status", ",".join(OPEN)),
            ("_sort", "deadline"),
            ("_count", str(MAX_ROWS)),
            ("_include", "Task:patient"),
        ],
    )
    patients = _patients(found)
    rows = [_task_row(t, patients, now) for t in found.matches]
    escalated = {
        r.patient_id for r in rows if r.status == "requested" and r.stage == "escalated" and r.patient_id
    }
    now_us = int(now.timestamp() * 1_000_000)
    coordinated = data.coordinated(refs, escalated, now_us, _dispatch_settings())
    return [
        r
        for r in rows
        if not (r.status == "requested" and r.stage == "escalated" and r.patient_id in coordinated)
    ]


@bp.get("/")
def worklist() -> Response:
    now = datetime.now(UTC)
    shown = request.args.get("filtre", "toutes")
    if shown not in FILTERS:
        shown = "toutes"
    refs = data.my_refs()
    all_discharges = discharges(now)
    listed = all_discharges
    if shown == "non-suivies":
        listed = [d for d in all_discharges if not d.followed]
    elif shown == "en-retard":
        listed = [d for d in all_discharges if d.late]
    offers = to_take(refs, now)
    mine = my_tasks(refs, now)
    return show(
        "pages_worklist.html",
        discharges=listed,
        discharge_count=len(all_discharges),
        offers=offers,
        mine=mine,
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
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
