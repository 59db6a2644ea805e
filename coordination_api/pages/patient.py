"""``GET /app/patients/<id>``: the patient's pathway on one page, and its documents' download (issue 22).

Every read goes through ``pages/data.py``, the FHIR API's own read and search core with the
signed-in user's Principal: scopes, the care-team rule (offers and objections included), includes,
and the audit record written as an API read's AuditEvent when the response leaves. What the user may
not see is simply not in the searches' results. A patient (or document) that is unknown, deleted or
out of the user's reach gets one and the same 404 page: the page tells nothing of its existence.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from typing import Any
from urllib.parse import quote

import orjson
from flask import Response, g

import fhir_profiles
from coordination_api.errors import Category, FhirError
from coordination_api.pages import data
from coordination_api.pages.blueprint import PageError, bp
from coordination_api.pages.render import age, show
from coordination_api.security import human_name
from coordination_api.web.http import base_url
from fhir_profiles.french_identifiers import INS_SYSTEMS, identity_statuses

# How many of each list the page shows (the newest first); the page says when there are more.
MAX_ENCOUNTERS = 10
MAX_DOCUMENTS = 20
MAX_TASKS = 200
MAX_PLANS = 20
MAX_CONSENTS = 20
MAX_TEAMS = 20

# fr-core-cs-v2-0445 (HL7 v2 table 0445 as FR Core uses it; Référentiel INS, identity statuses).
IDENTITY_STATUS = {
    "PROV": "Identité provisoire",
    "RECUP": "Identité récupérée",
    "VALI": "Identité validée",
    "QUAL": "Identité qualifiée",
}
_STATUS_RANK = ("QUAL", "VALI", "RECUP", "PROV")  # the strongest status wins when several are stated
GENDER = {"female": "Femme", "male": "Homme", "other": "Autre", "unknown": "Inconnu"}
# R4 task-status.
TASK_STATUS = {
    "draft": "Brouillon",
    "requested": "À prendre",
    "received": "Reçue",
    "accepted": "Acceptée",
    "rejected": "Refusée",
    "ready": "Prête",
    "cancelled": "Annulée",
    "in-progress": "En cours",
    "on-hold": "En attente",
    "failed": "Échouée",
    "completed": "Terminée",
    "entered-in-error": "Saisie erronée",
}
OPEN_TASK = frozenset({"requested", "received", "accepted", "ready", "in-progress", "on-hold"})
# R4 encounter-status and v3 ActEncounterCode (Encounter.class).
ENCOUNTER_STATUS = {
    "planned": "Prévu",
    "arrived": "Arrivé",
    "triaged": "Orienté",
    "in-progress": "En cours",
    "onleave": "Permission",
    "finished": "Terminé",
    "cancelled": "Annulé",
    "entered-in-error": "Saisie erronée",
    "unknown": "Inconnu",
}
ENCOUNTER_CLASS = {
    "IMP": "Hospitalisation",
    "ACUTE": "Hospitalisation",
    "NONAC": "Hospitalisation",
    "SS": "Hospitalisation de jour",
    "EMER": "Urgences",
    "AMB": "Consultation",
    "HH": "Hospitalisation à domicile",
    "VR": "Téléconsultation",
    "PRENC": "Pré-admission",
}
# R4 consent-state-codes.
CONSENT_STATUS = {
    "draft": "en préparation",
    "proposed": "proposé",
    "active": "en vigueur",
    "rejected": "refusé",
    "inactive": "levé",
    "entered-in-error": "saisie erronée",
}
CARE_CIRCLE = "https://coordination.example.org/fhir/CodeSystem/cercle-de-soins-role"
DISCHARGE_LETTER = "11490-0"  # LOINC "Discharge summary"
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # R4 datatypes.html#id
NOT_SHOWN = "Aucun dossier accessible ne correspond à cette adresse."


@dataclass(frozen=True)
class Identity:
    patient_id: str
    name: str
    birth_date: str | None
    age: int | None
    gender: str | None
    ins: str | None  # the INS (NIR/NIA), when the Patient carries one
    ins_status: str | None  # code of fr-core-cs-v2-0445
    ins_label: str  # the status in words (« Identité non vérifiée » when none is stated)
    trusted: bool  # VALI or QUAL: the INS may be used to share data (Référentiel INS)
    local_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Member:
    name: str
    kind: str  # « Professionnel », « Structure », « Autre »
    roles: tuple[str, ...]
    until: str | None


@dataclass(frozen=True)
class TaskLine:
    task_id: str
    title: str
    status: str
    status_label: str
    owner: str | None
    due: str | None  # restriction.period.end, as stored
    authored: str | None
    late: bool
    open: bool
    plans: tuple[str, ...] = ()  # ids of the CarePlans it is based on


@dataclass(frozen=True)
class Plan:
    plan_id: str
    title: str
    start: str | None
    tasks: tuple[TaskLine, ...]

    @property
    def done(self) -> int:
        return sum(1 for t in self.tasks if t.status == "completed")


@dataclass(frozen=True)
class Stay:
    encounter_id: str
    kind: str
    status: str
    establishment: str | None
    start: str | None
    end: str | None


@dataclass(frozen=True)
class Document:
    document_id: str
    title: str
    kind: str
    date: str | None
    author: str | None
    content_type: str | None
    downloadable: bool
    discharge_letter: bool


@dataclass(frozen=True)
class ConsentLine:
    consent_id: str
    objection: bool  # a deny provision: the patient opposes sharing (CSP L.1110-4 III)
    active: bool
    status: str
    whom: tuple[str, ...]  # the actors it names; empty for « tous les professionnels »
    date: str | None
    start: str | None
    end: str | None


@dataclass(frozen=True)
class Pathway:
    identity: Identity
    team: tuple[Member, ...]
    plans: tuple[Plan, ...]
    loose_tasks: tuple[TaskLine, ...]  # Tasks of no active CarePlan shown
    stays: tuple[Stay, ...]
    documents: tuple[Document, ...]
    consents: tuple[ConsentLine, ...]
    more: dict[str, bool] = field(default_factory=dict)  # a list cut at its maximum

    @property
    def objections(self) -> tuple[ConsentLine, ...]:
        return tuple(c for c in self.consents if c.objection and c.active)


# -- the routes ------------------------------------------------------------------------------------


@bp.get("/patients/<patient_id>")
def patient_page(patient_id: str) -> Response:
    found = pathway(patient_id)
    return show("pages_patient.html", p=found, today=datetime.now(UTC).date())


@bp.get("/patients/<patient_id>/documents/<document_id>")
def patient_document(patient_id: str, document_id: str) -> Response:
    """The document's content as a download, read as the API reads the DocumentReference and its
    Binary; audited as a read of both."""
    g.audit.subtype = "read"
    found = attachment(patient_id, document_id)
    response = Response(found.data, mimetype=found.content_type)
    # A download, never rendered in our origin (an HTML or SVG letter could carry script): RFC 6266.
    response.headers["Content-Disposition"] = (
        f"attachment; filename=\"{found.filename}\"; filename*=UTF-8''{quote(found.filename)}"
    )
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


# -- reads through the API's doors -----------------------------------------------------------------


def read(resource_type: str, res_id: str) -> dict[str, Any]:
    """``data.read``, answering one 404 for unknown, deleted and out of reach alike; the refused read
    is on the audit record all the same (``access.check_reach`` notes it before refusing)."""
    if not _FHIR_ID.fullmatch(res_id):
        raise PageError(Category.NOT_FOUND, NOT_SHOWN)
    try:
        return data.read(resource_type, res_id)
    except FhirError as exc:
        if exc.category in {Category.FORBIDDEN, Category.NOT_FOUND, Category.DELETED}:
            raise PageError(Category.NOT_FOUND, NOT_SHOWN) from None
        raise


@dataclass(frozen=True)
class Listed:
    matches: list[dict[str, Any]]
    included: list[dict[str, Any]]
    more: bool


def search(resource_type: str, params: list[tuple[str, str]], count: int) -> Listed:
    found = data.search(resource_type, [*params, ("_count", str(count))])
    return Listed(found.matches, found.included, found.more)


# -- the pathway -----------------------------------------------------------------------------------


def pathway(patient_id: str, today: date | None = None) -> Pathway:
    """Everything the patient page shows, each piece read as the signed-in user reads it by FHIR."""
    today = today or datetime.now(UTC).date()
    now = datetime.now(UTC)
    patient = read("Patient", patient_id)
    subject = ("patient", f"Patient/{patient_id}")
    teams = search(
        "CareTeam",
        [
            subject,
            ("_include", "CareTeam:participant"),
            ("_include:iterate", "PractitionerRole:practitioner"),
        ],
        MAX_TEAMS,
    )
    plans = search("CarePlan", [subject, ("_sort", "-date")], MAX_PLANS)
    tasks = search(
        "Task",
        [
            subject,
            ("_include", "Task:owner"),
            ("_include:iterate", "PractitionerRole:practitioner"),
            ("_sort", "-authored-on"),
        ],
        MAX_TASKS,
    )
    stays = search(
        "Encounter", [subject, ("_include", "Encounter:service-provider"), ("_sort", "-date")], MAX_ENCOUNTERS
    )
    documents = search(
        "DocumentReference",
        [subject, ("_include", "DocumentReference:author"), ("_sort", "-date")],
        MAX_DOCUMENTS,
    )
    consents = search("Consent", [subject, ("_include", "Consent:actor"), ("_sort", "-date")], MAX_CONSENTS)
    names = Names(teams.included + tasks.included + stays.included + documents.included + consents.included)
    task_lines = [_task_line(t, names, now) for t in tasks.matches]
    plan_list, loose = _plans(_having(plans.matches, "active"), task_lines)
    return Pathway(
        identity=identity(patient, today),
        team=tuple(m for team in _having(teams.matches, "active") for m in _members(team, names)),
        plans=plan_list,
        loose_tasks=loose,
        stays=tuple(_stay(e, names) for e in stays.matches),
        documents=tuple(_document(d, names) for d in _having(documents.matches, "current")),
        consents=tuple(_consent(c, names) for c in consents.matches),
        more={
            "teams": teams.more,
            "plans": plans.more,
            "tasks": tasks.more,
            "stays": stays.more,
            "documents": documents.more,
            "consents": consents.more,
        },
    )


def _having(found: list[dict[str, Any]], status: str) -> list[dict[str, Any]]:
    """The status filter the searches leave out: with ``status`` beside ``patient`` SQLite's planner
    starts from every resource of that status in the database (idx_token) instead of the patient's
    few (bench/README.md, "Coordinator pages")."""
    return [r for r in found if r.get("status") == status]


@dataclass(frozen=True)
class Attachment:
    data: bytes
    content_type: str
    filename: str


def attachment(patient_id: str, document_id: str) -> Attachment:
    """The first attachment of the patient's DocumentReference, inline or in a Binary of this server,
    each read through the API's read (the Binary follows its document's compartment: its
    securityContext). Anything else — another patient's document, an outside URL — is not shown."""
    document = read("DocumentReference", document_id)
    if (document.get("subject") or {}).get("reference") != f"Patient/{patient_id}":
        raise PageError(Category.NOT_FOUND, NOT_SHOWN)
    for content in document.get("content") or []:
        found = content.get("attachment") if isinstance(content, dict) else None
        if not isinstance(found, dict):
            continue
        title = str(found.get("title") or _document_title(document))
        content_type = str(found.get("contentType") or "application/octet-stream")
        if isinstance(found.get("data"), str):
            return Attachment(_decoded(found["data"]), content_type, _filename(title, content_type))
        binary_id = _local_binary(found.get("url"))
        if binary_id is not None:
            binary = read("Binary", binary_id)
            content_type = str(binary.get("contentType") or content_type)
            return Attachment(
                _decoded(binary.get("data") or ""), content_type, _filename(title, content_type)
            )
    raise PageError(Category.NOT_FOUND, "Ce document n'a pas de contenu enregistré sur ce serveur.")


def _local_binary(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    url: str = value
    own = base_url() + "/"
    if url.startswith(own):
        url = url[len(own) :]
    parts = url.split("/")
    if len(parts) == 2 and parts[0] == "Binary" and parts[1]:
        return parts[1]
    return None


def _decoded(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FhirError(Category.EXCEPTION, "The stored attachment is not valid base64") from None


_EXTENSIONS = {
    "application/pdf": ".pdf",
    "text/plain": ".txt",
    "application/xml": ".xml",
    "text/xml": ".xml",
    "application/hl7-v3+xml": ".xml",
    "image/jpeg": ".jpg",
    "image/png": ".png",
}


def _filename(title: str, content_type: str) -> str:
    """A safe download name: ASCII letters, digits, dash, dot; the extension of its media type."""
    stem = "".join(ch if (ch.isascii() and ch.isalnum()) or ch in "-_." else "-" for ch in title.strip())
    stem = re.sub(r"-{2,}", "-", stem)[:80].strip("-.")
    extension = _EXTENSIONS.get(content_type.split(";")[0].strip().lower(), "")
    if extension and stem.lower().endswith(extension):
        extension = ""
    return (stem or "document") + extension


# -- shaping the resources for the page ----------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class Names:
    """Display names of the actors the searches included (Practitioner, PractitionerRole,
    Organization…): a reference's ``display`` when the resource was not included."""

    def __init__(self, included: Iterable[dict[str, Any]]) -> None:
        self.resources = {f"{r.get('resourceType')}/{r.get('id')}": r for r in included}

    def of(self, reference: Any) -> str | None:
        if not isinstance(reference, dict):
            return None
        target = reference.get("reference")
        resource = self.resources.get(target) if isinstance(target, str) else None
        name = self._name(resource) if resource is not None else None
        display = reference.get("display")
        return name or (display if isinstance(display, str) and display else None)

    def _name(self, resource: dict[str, Any]) -> str | None:
        kind = resource.get("resourceType")
        if kind in {"Practitioner", "Patient", "RelatedPerson"}:
            return human_name(resource.get("name"))
        if kind == "PractitionerRole":
            person = self.of(resource.get("practitioner"))
            role = concept_text((resource.get("code") or [None])[0])
            where = self.of(resource.get("organization"))
            parts = [p for p in (person, role) if p]
            label = " — ".join(parts) if parts else None
            return f"{label} ({where})" if label and where else label or where
        name = resource.get("name")
        return name if isinstance(name, str) and name else None


@cache
def _care_circle_roles() -> dict[str, str]:
    """The cercle de soins role codes' displays (our CodeSystem; the CareTeam profile's roles)."""
    path = fhir_profiles.DATA_DIR / "fr-core" / "CodeSystem-cercle-de-soins-role.json"
    system = orjson.loads(path.read_bytes())
    return {str(c["code"]): str(c.get("display") or c["code"]) for c in system.get("concept") or []}


def concept_text(concept: Any) -> str | None:
    """A CodeableConcept in words: its text, a coding's display, a care-circle role's display, a code."""
    if not isinstance(concept, dict):
        return None
    if concept.get("text"):
        return str(concept["text"])
    codings = [c for c in concept.get("coding") or [] if isinstance(c, dict)]
    for coding in codings:
        if coding.get("display"):
            return str(coding["display"])
    for coding in codings:
        if coding.get("system") == CARE_CIRCLE and coding.get("code") in _care_circle_roles():
            return _care_circle_roles()[coding["code"]]
    for coding in codings:
        if coding.get("code"):
            return str(coding["code"])
    return None


def identity(patient: dict[str, Any], today: date) -> Identity:
    statuses = identity_statuses(patient)
    status = next((s for s in _STATUS_RANK if s in statuses), None)
    ins = next(
        (
            str(i["value"])
            for i in patient.get("identifier") or []
            if isinstance(i, dict) and i.get("system") in INS_SYSTEMS and isinstance(i.get("value"), str)
        ),
        None,
    )
    local = tuple(
        str(i["value"])
        for i in patient.get("identifier") or []
        if isinstance(i, dict) and i.get("system") not in INS_SYSTEMS and isinstance(i.get("value"), str)
    )
    birth = patient.get("birthDate") if isinstance(patient.get("birthDate"), str) else None
    return Identity(
        patient_id=str(patient.get("id")),
        name=human_name(patient.get("name")) or "(sans nom)",
        birth_date=birth,
        age=age(birth, today),
        gender=GENDER.get(str(patient.get("gender"))),
        ins=ins,
        ins_status=status,
        ins_label=IDENTITY_STATUS.get(status or "", "Identité non vérifiée (aucun statut)"),
        trusted=status in {"VALI", "QUAL"},
        local_ids=local,
    )


def _period_end(value: Any) -> str | None:
    return value.get("end") if isinstance(value, dict) and isinstance(value.get("end"), str) else None


def _members(team: dict[str, Any], names: Names) -> list[Member]:
    out = []
    for participant in team.get("participant") or []:
        if not isinstance(participant, dict):
            continue
        member = participant.get("member")
        target = str((member or {}).get("reference") or "") if isinstance(member, dict) else ""
        kind = {
            "Practitioner": "Professionnel",
            "PractitionerRole": "Professionnel",
            "Organization": "Structure",
        }
        out.append(
            Member(
                name=names.of(member) or target or "(non renseigné)",
                kind=kind.get(target.split("/", 1)[0], "Autre"),
                roles=tuple(r for r in (concept_text(c) for c in participant.get("role") or []) if r),
                until=_period_end(participant.get("period")),
            )
        )
    return out


def _instant(value: Any) -> datetime | None:
    """A FHIR date/dateTime as an aware instant (a date is its last moment: due that day)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        if len(value) == 10:
            return datetime.fromisoformat(value).replace(hour=23, minute=59, second=59, tzinfo=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def task_title(task: dict[str, Any]) -> str:
    return (
        concept_text(task.get("code"))
        or (str(task["description"]) if task.get("description") else None)
        or "Tâche"
    )


def _task_line(task: dict[str, Any], names: Names, now: datetime) -> TaskLine:
    status = str(task.get("status") or "")
    due = _period_end((task.get("restriction") or {}).get("period"))
    deadline = _instant(due)
    is_open = status in OPEN_TASK
    return TaskLine(
        task_id=str(task.get("id")),
        title=task_title(task),
        status=status,
        status_label=TASK_STATUS.get(status, status),
        owner=names.of(task.get("owner")),
        due=due,
        authored=task.get("authoredOn") if isinstance(task.get("authoredOn"), str) else None,
        late=is_open and deadline is not None and deadline < now,
        open=is_open,
        plans=tuple(
            str(b["reference"]).split("/", 1)[1]
            for b in task.get("basedOn") or []
            if isinstance(b, dict) and str(b.get("reference") or "").startswith("CarePlan/")
        ),
    )


def _timeline_key(task: TaskLine) -> tuple[str, str]:
    # Due date first (no due date: last), then when it was asked.
    return (task.due or "9999", task.authored or "")


def _plans(
    plans: list[dict[str, Any]], tasks: list[TaskLine]
) -> tuple[tuple[Plan, ...], tuple[TaskLine, ...]]:
    """Each active CarePlan with its Tasks (``Task.basedOn``) in timeline order; the other Tasks."""
    shown = {str(p.get("id")) for p in plans}
    out = []
    for plan in plans:
        plan_id = str(plan.get("id"))
        period = _dict(plan.get("period"))
        mine = sorted((t for t in tasks if plan_id in t.plans), key=_timeline_key)
        out.append(
            Plan(
                plan_id=plan_id,
                title=str(
                    plan.get("title") or concept_text((plan.get("category") or [None])[0]) or "Plan de soins"
                ),
                start=period.get("start"),
                tasks=tuple(mine),
            )
        )
    loose = sorted((t for t in tasks if not shown.intersection(t.plans)), key=_timeline_key)
    return tuple(out), tuple(loose)


def _stay(encounter: dict[str, Any], names: Names) -> Stay:
    kind = encounter.get("class")
    code = kind.get("code") if isinstance(kind, dict) else None
    period = _dict(encounter.get("period"))
    status = str(encounter.get("status") or "")
    return Stay(
        encounter_id=str(encounter.get("id")),
        kind=ENCOUNTER_CLASS.get(str(code), concept_text(encounter.get("type", [None])[0]) or "Séjour"),
        status=ENCOUNTER_STATUS.get(status, status),
        establishment=names.of(encounter.get("serviceProvider")),
        start=period.get("start"),
        end=period.get("end"),
    )


def _is_discharge_letter(document: dict[str, Any]) -> bool:
    codings = (document.get("type") or {}).get("coding") or []
    return any(isinstance(c, dict) and c.get("code") == DISCHARGE_LETTER for c in codings)


def _document_title(document: dict[str, Any]) -> str:
    if document.get("description"):
        return str(document["description"])
    for content in document.get("content") or []:
        found = content.get("attachment") if isinstance(content, dict) else None
        if isinstance(found, dict) and found.get("title"):
            return str(found["title"])
    if _is_discharge_letter(document):
        return "Lettre de liaison de sortie"
    return concept_text(document.get("type")) or "Document"


def _document(document: dict[str, Any], names: Names) -> Document:
    first: dict[str, Any] = {}
    downloadable = False
    for content in document.get("content") or []:
        found = content.get("attachment") if isinstance(content, dict) else None
        if isinstance(found, dict):
            first = first or found
            if isinstance(found.get("data"), str) or _local_binary(found.get("url")) is not None:
                first, downloadable = found, True
                break
    letter = _is_discharge_letter(document)
    return Document(
        document_id=str(document.get("id")),
        title=_document_title(document),
        kind="Lettre de liaison de sortie" if letter else concept_text(document.get("type")) or "Document",
        date=document.get("date") if isinstance(document.get("date"), str) else None,
        author=next((n for n in (names.of(a) for a in document.get("author") or []) if n), None),
        content_type=first.get("contentType"),
        downloadable=downloadable,
        discharge_letter=letter,
    )


def _consent(consent: dict[str, Any], names: Names) -> ConsentLine:
    provision = _dict(consent.get("provision"))
    denies = _deny_provisions(provision)
    objection = bool(denies)
    shown = denies or [provision]
    whom: list[str] = []
    blanket = False
    for p in shown:
        actors = p.get("actor") or []
        if not actors:
            blanket = True
        for actor in actors:
            if isinstance(actor, dict):
                whom.append(names.of(actor.get("reference")) or "(professionnel non renseigné)")
    period = _dict(shown[0].get("period"))
    status = str(consent.get("status") or "")
    return ConsentLine(
        consent_id=str(consent.get("id")),
        objection=objection,
        active=status == "active",
        status=CONSENT_STATUS.get(status, status),
        whom=() if blanket else tuple(dict.fromkeys(whom)),
        date=consent.get("dateTime") if isinstance(consent.get("dateTime"), str) else None,
        start=period.get("start"),
        end=period.get("end"),
    )


def _deny_provisions(provision: dict[str, Any], inherited: str | None = None) -> list[dict[str, Any]]:
    """The deny provisions, nested ones too (auth/policy.consent_rows reads them alike)."""
    kind = provision.get("type") or inherited
    out = [provision] if kind == "deny" else []
    for child in provision.get("provision") or []:
        if isinstance(child, dict):
            out += _deny_provisions(child)
    return out
