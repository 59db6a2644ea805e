"""Task dispatch: the first professional to accept takes it (soins non programmés, nurse orientation).

An open Task — status ``requested``, no ``owner``, a ``performerType``, ``for`` a Patient — enters
dispatch in the transaction that writes it, whatever the door (create, transaction, protocol engine):
a repository write hook, beside the subscriptions' one. Each stage is a new version of the Task written
through the repository (so subscriptions on ``Task?status=requested`` or the task topics see it), with
``Task.businessStatus`` from the CodeSystem ``DISPATCH_STATUS`` and the people it is offered to in
``Task.restriction.recipient`` (R4: "for requests targeted to more than one potential recipient"):

- ``offered-usual``: the patient's usual professional — a participant of an active CareTeam of the
  patient, now, whose ``role`` (or whose PractitionerRole's ``code``) matches the Task's performerType;
- ``offered-area`` after ``usual_seconds``: also every active PractitionerRole whose ``code`` matches and
  whose area covers the patient (``area_roles``);
- ``escalated`` after ``escalate_seconds`` from entry: also the CPTS coordinator, who becomes the owner
  (so the ``task-assigned`` topic tells them); a late acceptance by someone offered is still welcome;
- ``taken`` (the Task became accepted / in progress / completed) or ``closed`` (otherwise ended).

A stage that would offer the Task to nobody new is skipped. Accepting is a conditional update
(R4 http.html#concurrency: If-Match) setting ``owner`` and ``status``: the repository reads the version
under a row lock and checks it again in the UPDATE's WHERE, so of concurrent accepts exactly one wins
and the others get 412. A practitioner (user token) who makes themself the owner of a dispatched Task
must have been offered it (403) and it must still be requested (409). On the transition to taken, in
the same transaction, the requester gets a ``Communication`` (status completed, ``basedOn``/``about``
the Task). Timers run in ``tick``
(from ``coordination worker``): due rows are claimed with a lease (FOR UPDATE SKIP LOCKED on PostgreSQL,
BEGIN IMMEDIATE on SQLite), then each Task is advanced in its own transaction, resource row first and
dispatch row second, the same lock order as an accept's.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Table, and_, delete, insert, or_, select, update
from sqlalchemy.engine import Connection

from auth import policy
from auth.schema import care_team_access, consent_deny, practitioner_affiliation
from coordination_api.config import DispatchSettings
from coordination_api.core.principal import authenticated
from coordination_api.errors import Category, FhirError
from coordination_api.outbox import Queue, lease_end
from coordination_api.search.compiler import SearchCompiler
from coordination_api.search.dates import format_instant
from coordination_api.search.executor import run_search
from coordination_api.storage.repository import Repository, Stored, now_us
from coordination_api.storage.schema import task_dispatch

log = logging.getLogger(__name__)

DISPATCH_STATUS = "https://coordination.cpts.fr/fhir/CodeSystem/dispatch-status"
STAGES = {
    "offered-usual": "Proposée au professionnel habituel",
    "offered-area": "Proposée aux professionnels du secteur",
    "escalated": "Transmise au coordinateur de la CPTS",
    "taken": "Prise en charge",
    "closed": "Close sans prise en charge",
}
OPEN_STAGES = ("offered-usual", "offered-area", "escalated")
NEXT_STAGE = {None: "offered-usual", "offered-usual": "offered-area", "offered-area": "escalated"}
# Task statuses that mean someone took it (R4 task-status); "received" (under review) keeps it open.
TAKEN_STATUSES = frozenset({"accepted", "ready", "in-progress", "on-hold", "completed"})
INSEE_CODE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code"
# Care-circle roles (the CareTeam profile's CodeSystem, used by the protocol library as performerType)
# name a usual professional; in the area the same kind of professional is found by profession
# (NOS TRE_G15, PractitionerRole.code). Roles without a profession of their own are not mapped.
CARE_CIRCLE = "https://coordination.example.org/fhir/CodeSystem/cercle-de-soins-role"
PROFESSION = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
AREA_PROFESSIONS: dict[str, str] = {
    "infirmier-habituel": "60",
    "pharmacien-habituel": "21",
    "masseur-kinesitherapeute": "70",
    "sage-femme": "50",
    "chirurgien-dentiste": "40",
    "orthophoniste": "91",
}
# R4 Communication.sender's allowed types.
SENDER_TYPES = (
    "Device",
    "Organization",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "RelatedPerson",
    "HealthcareService",
)
US = 1_000_000
TIMERS = Queue(task_dispatch, key="task_pk")  # claimed by ``tick``

Coding = tuple[str | None, str]


def _ref(value: Any) -> str | None:
    """'Type/id' of a literal relative reference (no version), else None."""
    if not isinstance(value, dict) or not isinstance(value.get("reference"), str):
        return None
    parts = value["reference"].split("/_history/")[0].split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else None


def _refs(values: Any) -> list[str]:
    """``_ref`` of each Reference of a list, those that are one."""
    return [r for r in (_ref(x) for x in values or []) if r]


def _codings(concepts: Any) -> list[Coding]:
    """(system, code) of the codings of one CodeableConcept or of a list of them."""
    if isinstance(concepts, dict):
        concepts = [concepts]
    out: list[Coding] = []
    for concept in concepts if isinstance(concepts, list) else []:
        codings = concept.get("coding") if isinstance(concept, dict) else None
        for coding in codings if isinstance(codings, list) else []:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                out.append((coding.get("system"), coding["code"]))
    return out


def _matches(concepts: Any, wanted: list[Coding]) -> bool:
    """A coding of ``concepts`` has a wanted code, in the same system (or one side has none)."""
    return any(
        code == w_code and (system is None or w_system is None or system == w_system)
        for system, code in _codings(concepts)
        for w_system, w_code in wanted
    )


def _covers(table: Table, now: int) -> ColumnElement[bool]:
    return and_(
        or_(table.c.start_us.is_(None), table.c.start_us <= now),
        or_(table.c.end_us.is_(None), table.c.end_us >= now),
    )


def area_keys(address: Any) -> set[tuple[str, str]]:
    """What locates an address for coverage: its postal code and its INSEE commune code (FR Core
    address extension). City names are not used: they are ambiguous (Saint-Denis 93 / 974)."""
    if not isinstance(address, dict):
        return set()
    keys: set[tuple[str, str]] = set()
    if isinstance(address.get("postalCode"), str) and address["postalCode"].strip():
        keys.add(("postal", address["postalCode"].replace(" ", "")))
    for extension in address.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == INSEE_CODE:
            code = (extension.get("valueCoding") or {}).get("code")
            if isinstance(code, str) and code:
                keys.add(("insee", code))
    return keys


def _with_professions(wanted: list[Coding]) -> list[Coding]:
    """The wanted codes and the profession of each care-circle role among them (``AREA_PROFESSIONS``)."""
    return [
        *wanted,
        *((PROFESSION, AREA_PROFESSIONS[c]) for s, c in wanted if s == CARE_CIRCLE and c in AREA_PROFESSIONS),
    ]


def _token(system: str | None, code: str) -> str:
    escape = str.maketrans({"\\": "\\\\", ",": "\\,", "|": "\\|", "$": "\\$"})
    return f"{system.translate(escape)}|{code.translate(escape)}" if system else code.translate(escape)


class Dispatcher:
    """The write hook (entry, acceptance) and the timer (``tick``) of Task dispatch."""

    def __init__(self, repo: Repository, compiler: SearchCompiler, settings: DispatchSettings) -> None:
        self.repo = repo
        self.compiler = compiler
        self.settings = settings

    # -- the write hook -------------------------------------------------------------------------

    def on_written(self, conn: Connection, stored: list[Stored]) -> None:
        for item in stored:
            if item.res_type == "Task":
                self._task_written(conn, item)

    def _task_written(self, conn: Connection, item: Stored) -> None:
        td = task_dispatch
        row = conn.execute(select(td).where(td.c.task_pk == item.pk)).first()
        if item.deleted:
            if row is not None:
                conn.execute(delete(td).where(td.c.task_pk == item.pk))
            return
        task = item.json()
        status = task.get("status")
        if status == "requested" and task.get("owner") is None:
            if (row is None or row.stage not in OPEN_STAGES) and self._dispatchable(task):
                self._enter(conn, item, task, row is not None)
            return
        if row is None or policy.ENGINE_WRITE.get():
            return
        previous = self._previous(conn, item)
        self._check_taker(conn, previous, task)
        if row.stage not in OPEN_STAGES or status in ("requested", "received"):
            return
        now = now_us()
        stage = "taken" if status in TAKEN_STATUSES else "closed"
        conn.execute(
            update(td)
            .where(td.c.task_pk == item.pk)
            .values(stage=stage, stage_since_us=now, next_due_us=None, lease_until=None)
        )
        if stage == "taken" and (previous or {}).get("status") == "requested":
            self._notify_requester(conn, item, task, now)

    @staticmethod
    def _dispatchable(task: dict[str, Any]) -> bool:
        patient = _ref(task.get("for"))
        return bool(_codings(task.get("performerType"))) and bool(patient and patient.startswith("Patient/"))

    def _previous(self, conn: Connection, item: Stored) -> dict[str, Any] | None:
        if item.version <= 1:
            return None
        found = self.repo.version(conn, item.res_type, item.res_id, item.version - 1)
        return found.json() if found is not None and not found.deleted else None

    def _check_taker(self, conn: Connection, previous: dict[str, Any] | None, task: dict[str, Any]) -> None:
        """A practitioner who makes themself the owner of a dispatched Task: only while it is requested
        (409 after) and only if it was offered to them (403)."""
        who = authenticated()  # None outside a request (the worker's own writes)
        owner = _ref(task.get("owner"))
        if who is None or not who.is_user or owner is None or owner == _ref((previous or {}).get("owner")):
            return
        mine = policy.actor_refs(conn, str(who.practitioner_id), now_us())
        if owner not in mine:
            return  # assigning to someone else is not taking it (delegation)
        if previous is None or previous.get("status") != "requested":
            raise FhirError(Category.CONFLICT, "This Task is no longer requested: it was taken already")
        restriction = previous.get("restriction")
        offered = {
            _ref(r) for r in (restriction.get("recipient") or [] if isinstance(restriction, dict) else [])
        }
        offered.add(_ref(previous.get("owner")))
        if not offered.intersection(mine):
            raise FhirError(
                Category.FORBIDDEN, "This Task was not offered to you (Task.restriction.recipient)"
            )

    # -- entry and stages -----------------------------------------------------------------------

    def _enter(self, conn: Connection, item: Stored, task: dict[str, Any], again: bool) -> None:
        td = task_dispatch
        now = now_us()
        if again:  # handed back (requested, no owner) after it was taken or closed: dispatched anew
            conn.execute(delete(td).where(td.c.task_pk == item.pk))
        conn.execute(
            insert(td).values(
                task_pk=item.pk,
                task_id=item.res_id,
                stage="offered-usual",
                entered_us=now,
                stage_since_us=now,
                next_due_us=now,
                lease_until=None,
            )
        )
        self._advance(conn, item, task, None, now, now)

    def _advance(
        self, conn: Connection, item: Stored, task: dict[str, Any], stage: str | None, entered: int, now: int
    ) -> None:
        """Write the next stage that offers the Task to someone new (escalation always writes)."""
        patient = str(_ref(task.get("for"))).split("/", 1)[1]
        wanted = _codings(task.get("performerType"))
        restriction = dict(task.get("restriction") or {})
        listed = list(restriction.get("recipient") or [])
        recipients = [r for r in (_ref(x) for x in listed) if r is not None]
        denied = self._denied(conn, patient, now)
        owner: str | None = None
        due: int | None = None
        new: list[str] = []
        while True:
            stage = NEXT_STAGE[stage]
            if stage == "offered-usual":
                candidates = self.usual_professionals(conn, patient, wanted, now)
                due = entered + int(self.settings.usual_seconds * US)
            elif stage == "offered-area":
                # The usual professionals again (an edit of the Task may have dropped them), then the area.
                candidates = self.usual_professionals(conn, patient, wanted, now)
                candidates += self.area_roles(conn, patient, wanted, now)
                due = entered + int(self.settings.escalate_seconds * US)
            else:
                owner = self.coordinator(conn, patient, now)
                candidates, due = ([owner] if owner else []), None
            new = [] if "*" in denied else [c for c in dict.fromkeys(candidates) if c not in recipients]
            new = [c for c in new if c not in denied]
            if new or stage == "escalated":
                break
        body = dict(task)
        offered = [*listed, *({"reference": r} for r in new)]
        if offered:
            restriction["recipient"] = offered
        else:  # escalated to nobody: no empty array (R4 ele-1), the element is left out
            restriction.pop("recipient", None)
        if restriction:
            body["restriction"] = restriction
        else:
            body.pop("restriction", None)
        body["businessStatus"] = {
            "coding": [{"system": DISPATCH_STATUS, "code": stage, "display": STAGES[stage]}],
            "text": STAGES[stage],
        }
        if stage == "escalated" and owner is None:
            log.warning("task %s escalated, but no CPTS coordinator is configured or found", item.res_id)
        elif stage == "escalated" and body.get("owner") is None:
            body["owner"] = {"reference": owner}
        token = policy.ENGINE_WRITE.set(True)
        try:
            self.repo.update(conn, "Task", item.res_id, body, if_match=item.version)
        finally:
            policy.ENGINE_WRITE.reset(token)
        td = task_dispatch
        conn.execute(
            update(td)
            .where(td.c.task_pk == item.pk)
            .values(stage=stage, stage_since_us=now, next_due_us=due, lease_until=None)
        )

    def _denied(self, conn: Connection, patient: str, now: int) -> set[str]:
        """Actors the patient opposes now ("*": everyone): they are not offered the Task."""
        c = consent_deny
        return set(conn.scalars(select(c.c.actor).where(c.c.patient_id == patient, _covers(c, now))))

    def _team_members(self, conn: Connection, patient: str, now: int) -> list[tuple[dict[str, Any], str]]:
        """(participant, member) of the patient's care teams whose membership holds now."""
        t = care_team_access
        rows = conn.execute(
            select(t.c.res_pk, t.c.member).where(t.c.patient_id == patient, _covers(t, now))
        ).all()
        current: dict[int, set[str]] = {}
        for res_pk, member in rows:
            current.setdefault(res_pk, set()).add(member)
        out: list[tuple[dict[str, Any], str]] = []
        teams = self.repo.by_pks(conn, sorted(current))
        for pk in sorted(teams):
            for participant in teams[pk].json().get("participant") or []:
                member = _ref(participant.get("member")) if isinstance(participant, dict) else None
                if member is not None and member in current[pk]:
                    out.append((participant, member))
        return out

    def usual_professionals(
        self, conn: Connection, patient: str, wanted: list[Coding], now: int
    ) -> list[str]:
        """Members of the patient's active care teams whose role (participant.role, or their
        PractitionerRole's code) matches the performerType."""
        found: list[str] = []
        by_role: list[str] = []
        for participant, member in self._team_members(conn, patient, now):
            if not member.startswith(("Practitioner/", "PractitionerRole/")):
                continue
            if _matches(participant.get("role"), wanted):
                found.append(member)
            elif member.startswith("PractitionerRole/"):
                by_role.append(member)
        if by_role:
            roles = self.repo.current_many(conn, [("PractitionerRole", m.split("/", 1)[1]) for m in by_role])
            for member in by_role:
                role = roles.get(("PractitionerRole", member.split("/", 1)[1]))
                if role is not None and not role.deleted and _matches(role.json().get("code"), wanted):
                    found.append(member)
        return list(dict.fromkeys(found))

    def area_roles(self, conn: Connection, patient: str, wanted: list[Coding], now: int) -> list[str]:
        """Active PractitionerRoles whose code or specialty matches (a care-circle role through its
        profession, ``AREA_PROFESSIONS``) and whose area covers the patient: one of their
        Locations (PractitionerRole.location), or a Location their HealthcareService covers
        (HealthcareService.coverageArea), has the postal code or the INSEE commune code of one of the
        patient's current addresses (``area_keys``)."""
        keys = self._patient_area(conn, patient)
        if not keys:
            return []
        roles = self._matching_roles(conn, _with_professions(wanted), now)
        own = {role.res_id: set(_refs(role.json().get("location"))) for role in roles}
        services = {role.res_id: _refs(role.json().get("healthcareService")) for role in roles}
        coverage = self._service_coverage(conn, {ref for refs in services.values() for ref in refs})
        covering = self._covering(conn, set[str]().union(*own.values(), *coverage.values()), keys)
        return [
            f"PractitionerRole/{role.res_id}"
            for role in roles
            if (own[role.res_id] | {a for s in services[role.res_id] for a in coverage.get(s, [])}) & covering
        ]

    def _patient_area(self, conn: Connection, patient: str) -> set[tuple[str, str]]:
        """``area_keys`` of the patient's current addresses (all but ``use: old``)."""
        stored = self.repo.current(conn, "Patient", patient)
        if stored is None or stored.deleted:
            return set()
        keys: set[tuple[str, str]] = set()
        for address in stored.json().get("address") or []:
            if isinstance(address, dict) and address.get("use") != "old":
                keys |= area_keys(address)
        return keys

    def _matching_roles(self, conn: Connection, wanted: list[Coding], now: int) -> list[Stored]:
        """Active PractitionerRoles whose code or specialty is wanted and whose affiliation holds now,
        in storage order."""
        tokens = ",".join(_token(s, c) for s, c in wanted)
        found: dict[int, Stored] = {}
        for param in ("role", "specialty"):  # a profession (code) or a speciality (e.g. NOS TRE_R38)
            query = self.compiler.compile("PractitionerRole", [(param, tokens)], strict=True)
            query.count, query.total = self.settings.max_candidates, "none"
            found.update((r.pk, r) for r in run_search(conn, self.repo, query).matches)
        roles = [r for _pk, r in sorted(found.items()) if r.json().get("active") is not False]
        a = practitioner_affiliation
        affiliated = set(
            conn.scalars(
                select(a.c.role_id).where(a.c.role_id.in_([r.res_id for r in roles]), _covers(a, now))
            )
        )
        return [r for r in roles if r.res_id in affiliated]

    def _service_coverage(self, conn: Connection, refs: set[str]) -> dict[str, list[str]]:
        """'HealthcareService/id' -> the Locations of its coverageArea, for the active services among
        ``refs``."""
        ids = [ref.split("/", 1)[1] for ref in refs if ref.startswith("HealthcareService/")]
        coverage: dict[str, list[str]] = {}
        for (_t, sid), service in self.repo.current_many(
            conn, [("HealthcareService", i) for i in ids]
        ).items():
            body = service.json() if not service.deleted else {}
            if body and body.get("active") is not False:
                coverage[f"HealthcareService/{sid}"] = _refs(body.get("coverageArea"))
        return coverage

    def _covering(self, conn: Connection, refs: set[str], keys: set[tuple[str, str]]) -> set[str]:
        """The active Locations among ``refs`` whose address has one of ``keys``."""
        ids = [ref.split("/", 1)[1] for ref in refs if ref.startswith("Location/")]
        places = self.repo.current_many(conn, [("Location", i) for i in ids])
        return {
            f"Location/{lid}"
            for (_t, lid), place in places.items()
            if not place.deleted
            and place.json().get("status") in (None, "active")
            and area_keys(place.json().get("address")) & keys
        }

    def coordinator(self, conn: Connection, patient: str, now: int) -> str | None:
        """The configured CPTS coordinator, else the patient's care-team participant with that role."""
        if self.settings.coordinator:
            return self.settings.coordinator
        role = self.settings.coordinator_role
        for participant, member in self._team_members(conn, patient, now):
            if any(code == role for _s, code in _codings(participant.get("role"))):
                return member
        return None

    # -- the requester is told ------------------------------------------------------------------

    def _notify_requester(self, conn: Connection, item: Stored, task: dict[str, Any], now: int) -> None:
        """A Communication to Task.requester, in the accepting transaction (its subscriptions, e.g.
        ``Communication?recipient=…``, deliver it)."""
        requester = task.get("requester")
        if _ref(requester) is None:
            return
        owner = task.get("owner")
        if not isinstance(owner, dict):
            owner = {}
        who = owner.get("display") or _ref(owner) or "un professionnel"
        code = task.get("code")
        what = (code.get("text") if isinstance(code, dict) else None) or task.get("description")
        body: dict[str, Any] = {
            "resourceType": "Communication",
            "status": "completed",
            "category": [
                {"coding": [{"system": DISPATCH_STATUS, "code": "taken", "display": STAGES["taken"]}]}
            ],
            "basedOn": [{"reference": f"Task/{item.res_id}"}],
            "about": [{"reference": f"Task/{item.res_id}/_history/{item.version}"}],
            "subject": task.get("for"),
            "recipient": [requester],
            "sent": format_instant(now),
            "payload": [{"contentString": f"{what or 'Votre demande'} : prise en charge par {who}."}],
        }
        if (_ref(owner) or "").split("/")[0] in SENDER_TYPES:
            body["sender"] = {k: v for k, v in owner.items() if k in ("reference", "display")}
        self.repo.create(conn, "Communication", body)

    # -- the timer ------------------------------------------------------------------------------

    def tick(self, now: int | None = None) -> int:
        """Advance the Tasks whose stage is due at ``now`` (epoch microseconds; default: now).

        Safe with several workers: rows are claimed under a lease first (FOR UPDATE SKIP LOCKED on
        PostgreSQL; the claim runs in BEGIN IMMEDIATE on SQLite), then each Task is advanced in its own
        transaction, whose version-checked write fails (and is retried later) if the Task changed."""
        now = now_us() if now is None else now
        td = task_dispatch
        lease = lease_end(now, self.settings.lease_seconds)
        stmt = (
            select(td.c.task_pk)
            .where(td.c.next_due_us <= now, TIMERS.free(now))
            .order_by(td.c.next_due_us, td.c.task_pk)
            .limit(self.settings.batch_size)
        )
        with self.repo.writing() as conn:
            pks = [row.task_pk for row in TIMERS.claim(conn, stmt, lease)]
        for pk in pks:
            try:
                with self.repo.writing() as conn:
                    self._due(conn, pk, lease, now)
            except FhirError as exc:  # changed meanwhile (412): the next tick looks again
                log.info("dispatch of task pk %s deferred: %s", pk, exc.diagnostics)
                with self.repo.writing() as conn:
                    TIMERS.release(conn, [pk], lease)
        return len(pks)

    def _due(self, conn: Connection, pk: int, lease: int, now: int) -> None:
        td = task_dispatch
        row = conn.execute(select(td).where(td.c.task_pk == pk)).first()
        if row is None or row.lease_until != lease:
            return  # taken, closed or reclaimed meanwhile
        stored = self.repo.current(conn, "Task", row.task_id)
        task = stored.json() if stored is not None and not stored.deleted else {}
        ended = task.get("status") != "requested" or not self._dispatchable(task)
        if stored is None or row.stage not in NEXT_STAGE or ended:
            conn.execute(update(td).where(td.c.task_pk == pk).values(next_due_us=None, lease_until=None))
            return
        self._advance(conn, stored, task, row.stage, row.entered_us, now)


class App(Protocol):
    """What dispatch needs of the application (a Flask app): its extensions."""

    extensions: dict[str, Any]


def init_app(app: App, repo: Repository, settings: DispatchSettings) -> Dispatcher:
    """Attach the dispatch write hook (after the subscriptions' one); the dispatcher lives in
    ``app.extensions["dispatch"]``."""
    found: Dispatcher | None = app.extensions.get("dispatch")
    if found is not None:
        return found
    dispatcher = Dispatcher(repo, app.extensions["coordination"].compiler, settings)
    app.extensions["dispatch"] = dispatcher
    repo.on_written.append(dispatcher.on_written)
    return dispatcher


def run_due(app: App) -> int:
    """One tick of the app's dispatcher (the worker loop calls it); how many Tasks it looked at."""
    dispatcher: Dispatcher | None = app.extensions.get("dispatch")
    return dispatcher.tick() if dispatcher is not None else 0
