"""Pluriprofessional protocols: a PlanDefinition applied to a patient (R4 plandefinition-operation-apply).

``apply_plan`` is R4 ``$apply``: it reads the definitions, the patient, the encounter and the patient's
care circle (CareTeam) and returns a CarePlan whose contained RequestGroup points at contained Tasks,
ServiceRequests and CommunicationRequests; it stores nothing. ``start_in`` writes the same plan as
separate resources (CarePlan active, RequestGroup, requests with real references) inside the caller's
transaction; ``start_on_discharge`` does so for every active PlanDefinition triggered by a discharge.

Applicability (``action.condition`` kind ``applicability``) is FHIRPath (``text/fhirpath``) evaluated
with fhirpathpy over the Patient, with the variables of :meth:`Context.variables`. Timings are relative to
the trigger: the encounter's ``period.end`` when an encounter is given (the discharge), else now.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import fhirpathpy
from fhirpathpy.models import models as fhirpath_models
from sqlalchemy.engine import Connection

from coordination_api.core.services import Services
from coordination_api.core.validation import validate_resource
from coordination_api.core.writes import create_in, find_matches
from coordination_api.errors import Category, FhirError
from coordination_api.storage.repository import Stored
from fhir_profiles import fhirpath_safety
from fhir_profiles.fhirpath_safety import ExpressionLimits
from fhir_profiles.validator import syntax_error

log = logging.getLogger(__name__)

# The named event a discharge fires (PlanDefinition.action.trigger type named-event, name "discharge").
DISCHARGE_EVENT = "discharge"
# CarePlan.identifier of a started protocol: "<PlanDefinition id>|<Encounter id>" (one start per stay).
START_SYSTEM = "https://coordination.cpts.fr/fhir/protocol-start"
FHIRPATH = "text/fhirpath"
_R4 = fhirpath_models["r4"]
_REF = re.compile(r"^[A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
_UNITS = {
    "s": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "wk": 7 * 86400.0,
    "mo": 30 * 86400.0,
    "a": 365 * 86400.0,
}
_UNIT_WORDS = {
    "second": "s",
    "minute": "min",
    "hour": "h",
    "day": "d",
    "week": "wk",
    "month": "mo",
    "year": "a",
}
_MAX_READ = 200
_MAX_PLANS = 1000
# PlanDefinition.action elements a RequestGroup.action carries over as they are.
_COPIED = (
    "id",
    "prefix",
    "title",
    "description",
    "textEquivalent",
    "priority",
    "code",
    "type",
    "groupingBehavior",
    "selectionBehavior",
    "requiredBehavior",
    "precheckBehavior",
    "cardinalityBehavior",
    "relatedAction",
)


@dataclass(frozen=True)
class ApplyParameters:
    """The ``$apply`` / ``$start`` input parameters (R4 PlanDefinition-apply)."""

    subject: str
    encounter: str | None = None
    practitioner: str | None = None
    organization: str | None = None
    user_type: str | None = None
    user_language: str | None = None
    user_task_context: str | None = None
    setting: str | None = None
    setting_context: str | None = None


@dataclass(frozen=True)
class Member:
    """A participant of one of the patient's active CareTeams."""

    roles: frozenset[tuple[str, str]]
    reference: str


@dataclass
class Context:
    """What a plan is built from, read once per application."""

    params: ApplyParameters
    patient: dict[str, Any]
    encounter: dict[str, Any] | None
    trigger: datetime
    now: datetime
    care_teams: list[dict[str, Any]]
    members: list[Member]
    load_service_requests: Callable[[], list[dict[str, Any]]]
    _service_requests: list[dict[str, Any]] | None = None
    # Bounds of every FHIRPath evaluation (COORDINATION_EXPRESSION_*).
    limits: ExpressionLimits = field(default_factory=ExpressionLimits)

    @property
    def subject(self) -> str:
        return f"Patient/{self.patient['id']}"

    @property
    def requester(self) -> str | None:
        return self.params.practitioner or self.params.organization

    @property
    def encounter_ref(self) -> str | None:
        return f"Encounter/{self.encounter['id']}" if self.encounter is not None else None

    def variables(self, expression: str) -> dict[str, Any]:
        """The FHIRPath environment: %patient, %encounter (empty without one), %age (completed years on
        the trigger date), %careTeam (active CareTeams), %serviceRequests (active ServiceRequests, read
        only when the expression names them) and the operation's parameters as strings."""
        p = self.params
        env: dict[str, Any] = {
            "resource": self.patient,
            "context": self.patient,
            "patient": self.patient,
            "encounter": self.encounter if self.encounter is not None else [],
            "age": _age(self.patient, self.trigger.date()),
            "careTeam": self.care_teams,
            "practitioner": p.practitioner or [],
            "organization": p.organization or [],
            "userType": p.user_type or [],
            "userLanguage": p.user_language or [],
            "userTaskContext": p.user_task_context or [],
            "setting": p.setting or [],
            "settingContext": p.setting_context or [],
        }
        if "%serviceRequests" in expression:
            if self._service_requests is None:
                self._service_requests = self.load_service_requests()
            env["serviceRequests"] = self._service_requests
        else:
            env["serviceRequests"] = []
        return env


@dataclass(frozen=True)
class Started:
    """What ``start_in`` wrote (or found: ``created`` False when this start had happened already)."""

    care_plan: Stored
    created: bool
    written: list[Stored]


# -- reading the inputs ----------------------------------------------------------------------------


def _age(patient: dict[str, Any], on: date) -> int | list[Any]:
    born = patient.get("birthDate")
    if not isinstance(born, str) or len(born) < 4:
        return []
    year = int(born[:4])
    month = int(born[5:7]) if len(born) >= 7 else 1
    day = int(born[8:10]) if len(born) >= 10 else 1
    return on.year - year - ((on.month, on.day) < (month, day))


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _fhir_instant(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _check_reference(value: str | None, name: str, types: tuple[str, ...]) -> None:
    if value is None:
        return
    if not _REF.match(value) or value.split("/", 1)[0] not in types:
        raise FhirError(
            Category.INVALID,
            f"Parameter '{name}' must be a reference {' or '.join(t + '/[id]' for t in types)}",
            expression=f"Parameters.parameter.where(name='{name}')",
        )


def _current(conn: Connection, svc: Services, reference: str) -> Stored | None:
    resource_type, res_id = reference.split("/", 1)
    stored = svc.repo.current(conn, resource_type, res_id)
    return None if stored is None or stored.deleted else stored


def _covers(period: Any, moment: datetime) -> bool:
    if not isinstance(period, dict):
        return True
    start, end = _instant(period.get("start")), _instant(period.get("end"))
    return (start is None or start <= moment) and (end is None or moment <= end)


def _members(care_teams: list[dict[str, Any]], now: datetime) -> list[Member]:
    out = []
    for team in care_teams:
        for participant in team.get("participant") or []:
            member = (participant.get("member") or {}).get("reference")
            if not isinstance(member, str) or not _covers(participant.get("period"), now):
                continue
            roles = frozenset(
                (str(c.get("system")), str(c.get("code")))
                for role in participant.get("role") or []
                for c in role.get("coding") or []
            )
            out.append(Member(roles, member))
    return out


def _search(
    conn: Connection, svc: Services, resource_type: str, params: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Server-side lookups (the care circle, definitions): not limited by the caller's reach."""
    return [s.json() for s in find_matches(conn, svc, resource_type, params, limit=_MAX_READ)]


def subject_stored(conn: Connection, svc: Services, params: ApplyParameters) -> Stored:
    """The subject Patient (a reference that names no Patient: 422)."""
    _check_reference(params.subject, "subject", ("Patient",))
    stored = _current(conn, svc, params.subject)
    if stored is None:
        raise FhirError(
            Category.UNPROCESSABLE,
            f"The subject {params.subject} is not known",
            expression="Parameters.parameter.where(name='subject')",
        )
    return stored


def load_context(conn: Connection, svc: Services, params: ApplyParameters) -> Context:
    """The patient, the encounter and the patient's active care circle."""
    _check_reference(params.encounter, "encounter", ("Encounter",))
    _check_reference(params.practitioner, "practitioner", ("Practitioner", "PractitionerRole"))
    _check_reference(params.organization, "organization", ("Organization",))
    patient = subject_stored(conn, svc, params).json()
    encounter = None
    if params.encounter is not None:
        stored = _current(conn, svc, params.encounter)
        encounter = stored.json() if stored is not None else None
        subject = ((encounter or {}).get("subject") or {}).get("reference")
        if encounter is None or subject != params.subject:
            raise FhirError(
                Category.UNPROCESSABLE,
                f"The encounter {params.encounter} is not known, or is not an encounter of the subject",
                expression="Parameters.parameter.where(name='encounter')",
            )
    now = datetime.now(UTC).replace(microsecond=0)
    trigger = _instant(((encounter or {}).get("period") or {}).get("end")) or now
    care_teams = [
        team
        for team in _search(conn, svc, "CareTeam", [("patient", params.subject), ("status", "active")])
        if _covers(team.get("period"), now)
    ]

    def service_requests() -> list[dict[str, Any]]:
        return _search(conn, svc, "ServiceRequest", [("patient", params.subject), ("status", "active")])

    settings = svc.settings
    limits = ExpressionLimits(regex_timeout=settings.expression_regex_timeout)
    return Context(
        params,
        patient,
        encounter,
        trigger,
        now,
        care_teams,
        _members(care_teams, now),
        service_requests,
        limits=limits,
    )


def find_by_canonical(
    conn: Connection, svc: Services, resource_type: str, canonical: str
) -> dict[str, Any] | None:
    """The definition a canonical names (``url`` or ``url|version``); an active one first."""
    url, _, version = canonical.partition("|")
    params = [("url", url)] + ([("version", version)] if version else [])
    found = _search(conn, svc, resource_type, params)
    found.sort(key=lambda r: (r.get("status") != "active", str(r.get("version") or "")))
    return found[0] if found else None


# -- timing ----------------------------------------------------------------------------------------


def _duration(quantity: Any, where: str) -> timedelta:
    if not isinstance(quantity, dict) or not isinstance(quantity.get("value"), int | float):
        raise FhirError(Category.UNPROCESSABLE, f"{where} has no numeric value", expression=where)
    unit = str(quantity.get("code") or quantity.get("unit") or "")
    unit = _UNIT_WORDS.get(unit.lower().rstrip("s"), unit) if unit not in _UNITS else unit
    if unit not in _UNITS:
        raise FhirError(
            Category.UNPROCESSABLE,
            f"{where}: unit '{unit}' is not a UCUM time unit ({', '.join(_UNITS)})",
            expression=where,
        )
    seconds = float(quantity["value"]) * _UNITS[unit]
    if not 0 <= seconds <= _MAX_DELAY_SECONDS:
        raise FhirError(
            Category.UNPROCESSABLE, f"{where}: a delay must be between 0 and 100 years", expression=where
        )
    return timedelta(seconds=seconds)


# A protocol's delays are days to months; beyond a century is a typo (and overflows datetime).
_MAX_DELAY_SECONDS = 100 * 365.25 * 86400

Window = tuple[datetime, datetime | None]


def _window(element: dict[str, Any], base: datetime, where: str) -> Window | None:
    """``timingDuration`` (within D of the base) or ``timingRange`` (between low and high after it)."""
    if "timingDuration" in element:
        return base, base + _duration(element["timingDuration"], f"{where}.timingDuration")
    if "timingRange" in element:
        rng = element["timingRange"] or {}
        low = _duration(rng["low"], f"{where}.timingRange.low") if "low" in rng else timedelta(0)
        high = _duration(rng["high"], f"{where}.timingRange.high") if "high" in rng else None
        return base + low, (base + high) if high is not None else None
    return None


def _related_window(action: dict[str, Any], windows: dict[str, Window], where: str) -> Window | None:
    """``relatedAction`` after(-start|-end) another action, shifted by its offset."""
    for related in action.get("relatedAction") or []:
        target = windows.get(str(related.get("actionId")))
        relationship = related.get("relationship")
        if target is None or relationship not in {"after", "after-end", "after-start"}:
            continue
        base = target[0] if relationship == "after-start" else (target[1] or target[0])
        offset = {k.replace("offset", "timing"): v for k, v in related.items() if k.startswith("offset")}
        return _window(offset, base, f"{where}.relatedAction") or (base, None)
    return None


def _period(window: Window) -> dict[str, str]:
    start, end = window
    period = {"start": _fhir_instant(start)}
    if end is not None:
        period["end"] = _fhir_instant(end)
    return period


# -- applicability ---------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _compiled(expression: str) -> Callable[..., list[Any]] | str:
    """The expression parsed once (fhirpathpy's ANTLR parser costs tens of milliseconds a parse;
    a protocol's expressions run on every discharge), or why it does not parse."""
    error = syntax_error(expression)
    if error:
        return error
    # matches()/replaceMatches() with a regex timeout (fhir_profiles/fhirpath_safety.py).
    compiled: Callable[..., list[Any]] = fhirpathpy.compile(expression, _R4, fhirpath_safety.OPTIONS)
    return compiled


def _run(expression: str, ctx: Context, where: str) -> list[Any]:
    """A FHIRPath expression over the Patient, with the variables of :meth:`Context.variables`."""
    if len(expression) > ctx.limits.max_expression:
        raise FhirError(
            Category.UNPROCESSABLE,
            f"{where}: the expression is longer than the limit of {ctx.limits.max_expression} characters",
            expression=where,
        )
    compiled = _compiled(expression)
    if isinstance(compiled, str):
        raise FhirError(
            Category.UNPROCESSABLE, f"{where}: the expression does not parse ({compiled})", expression=where
        )
    env = ctx.variables(expression)
    try:
        # Caller-supplied (a PlanDefinition anyone with write access stored): a time budget for the
        # whole evaluation and a timeout for each regex.
        result: list[Any] = fhirpath_safety.bounded(lambda: compiled(ctx.patient, env), ctx.limits)
    except fhirpath_safety.ExpressionLimitError as exc:
        raise FhirError(
            Category.UNPROCESSABLE, f"{where}: the expression was stopped: {exc.message}", expression=where
        ) from None
    except Exception as exc:  # fhirpathpy raises bare exceptions on evaluation errors
        raise FhirError(
            Category.UNPROCESSABLE, f"{where}: the expression cannot be evaluated ({exc})", expression=where
        ) from exc
    return result


def evaluate(expression: str, ctx: Context, where: str) -> bool:
    """An applicability expression: true, or false/empty (anything else is an error, 422)."""
    result = _run(expression, ctx, where)
    if result in ([], [False]):
        return False
    if result == [True]:
        return True
    raise FhirError(
        Category.UNPROCESSABLE, f"{where}: the expression must give one boolean", expression=where
    )


def _fhirpath_expression(holder: dict[str, Any], where: str) -> str:
    expression = holder.get("expression") or {}
    if expression.get("language") != FHIRPATH or not isinstance(expression.get("expression"), str):
        raise FhirError(
            Category.UNPROCESSABLE,
            f"{where}: only inline '{FHIRPATH}' expressions are supported",
            expression=where,
        )
    return str(expression["expression"])


# What a dynamicValue may not rewrite: the kind and identity of the request the engine builds.
_FIXED_ELEMENTS = frozenset({"resourceType", "id", "meta", "contained", "implicitRules"})


def apply_dynamic_values(
    body: dict[str, Any], holders: list[tuple[dict[str, Any], str]], ctx: Context
) -> None:
    """``dynamicValue`` of the ActivityDefinition, then of the action: the value at a dotted path of the
    request (R4: "the path … of the resource"); an empty result leaves the element out."""
    for holder, where in holders:
        for index, dynamic in enumerate(holder.get("dynamicValue") or []):
            at = f"{where}.dynamicValue[{index}]"
            path = dynamic.get("path")
            if not isinstance(path, str) or not path or not all(p.isidentifier() for p in path.split(".")):
                raise FhirError(
                    Category.UNPROCESSABLE, f"{at}.path must be a dotted element path", expression=at
                )
            if path.split(".")[0] in _FIXED_ELEMENTS:
                raise FhirError(
                    Category.UNPROCESSABLE,
                    f"{at}.path may not set '{path.split('.')[0]}' (the request's identity is the engine's)",
                    expression=at,
                )
            result = [
                v if isinstance(v, str | int | float | bool | dict | list) else str(v)
                for v in _run(_fhirpath_expression(dynamic, f"{at}.expression"), ctx, f"{at}.expression")
            ]
            *parents, leaf = path.split(".")
            node = body
            for name in parents:
                child = node.setdefault(name, {})
                if not isinstance(child, dict):
                    raise FhirError(
                        Category.UNPROCESSABLE, f"{at}.path crosses a repeating element", expression=at
                    )
                node = child
            if not result:
                node.pop(leaf, None)
            else:
                node[leaf] = result[0] if len(result) == 1 else result


def applicable(action: dict[str, Any], ctx: Context, where: str) -> bool:
    """Every applicability condition of the action holds (start/stop conditions are not evaluated)."""
    for index, condition in enumerate(action.get("condition") or []):
        if condition.get("kind") != "applicability":
            continue
        at = f"{where}.condition[{index}].expression"
        if not evaluate(_fhirpath_expression(condition, at), ctx, at):
            return False
    return True


def discharge_actions(plan_definition: dict[str, Any]) -> list[int]:
    """Indexes of the top-level actions triggered by the ``discharge`` named event."""
    return [
        index
        for index, action in enumerate(plan_definition.get("action") or [])
        for trigger in action.get("trigger") or []
        if trigger.get("type") == "named-event" and trigger.get("name") == DISCHARGE_EVENT
    ]


# -- building --------------------------------------------------------------------------------------


def _roles(*holders: dict[str, Any]) -> list[dict[str, Any]]:
    return [p["role"] for holder in holders for p in holder.get("participant") or [] if p.get("role")]


def _owner(roles: list[dict[str, Any]], ctx: Context) -> str | None:
    """The first care-circle member holding one of the roles (same system and code)."""
    wanted = {(str(c.get("system")), str(c.get("code"))) for role in roles for c in role.get("coding") or []}
    return next((m.reference for m in ctx.members if m.roles & wanted), None)


@dataclass(frozen=True)
class _Request:
    """One request to make: what the action and its ActivityDefinition say, resolved for the patient."""

    kind: str
    definition: dict[str, Any]
    code: dict[str, Any] | None
    text: str | None
    priority: str | None
    window: Window
    roles: list[dict[str, Any]]
    owner: str | None


def _task(req: _Request, ctx: Context, stored: bool, care_plan: str) -> dict[str, Any]:
    """R4 Task: requested (an order) once stored, a draft proposal in $apply."""
    body: dict[str, Any] = {"resourceType": "Task"}
    if req.definition.get("url"):
        body["instantiatesCanonical"] = req.definition["url"]
    body["basedOn"] = [{"reference": care_plan}]
    body["status"] = "requested" if stored else "draft"
    body["intent"] = "order" if stored else "proposal"
    if req.priority:
        body["priority"] = req.priority
    if req.code:
        body["code"] = req.code
    if req.text:
        body["description"] = req.text
    body["for"] = {"reference": ctx.subject}
    if ctx.encounter_ref:
        body["encounter"] = {"reference": ctx.encounter_ref}
    body["authoredOn"] = _fhir_instant(ctx.now)
    if ctx.requester:
        body["requester"] = {"reference": ctx.requester}
    if req.owner is not None:
        body["owner"] = {"reference": req.owner}
    elif req.roles:
        body["performerType"] = req.roles  # an open request: the dispatcher offers it to this role
    body["restriction"] = {"period": _period(req.window)}
    return body


def _service_request(req: _Request, ctx: Context, stored: bool, care_plan: str) -> dict[str, Any]:
    body = _request_common(req, ctx, stored, care_plan)
    if req.code:
        body["code"] = req.code
    _order_fields(body, req, ctx)
    if req.owner is not None:
        body["performer"] = [{"reference": req.owner}]
    elif req.roles:
        body["performerType"] = req.roles[0]
    if req.text:
        body["note"] = [{"text": req.text}]
    return body


def _communication_request(req: _Request, ctx: Context, stored: bool, care_plan: str) -> dict[str, Any]:
    """R4 CommunicationRequest has no performer type: without a care-circle member it has no recipient."""
    body = _request_common(req, ctx, stored, care_plan)
    if req.code:
        body["category"] = [req.code]
    if req.text:
        body["payload"] = [{"contentString": req.text}]
    _order_fields(body, req, ctx)
    if req.owner is not None:
        body["recipient"] = [{"reference": req.owner}]
    return body


def _order_fields(body: dict[str, Any], req: _Request, ctx: Context) -> None:
    """Subject, encounter, occurrence window, authoredOn and requester (ServiceRequest and
    CommunicationRequest name them alike)."""
    body["subject"] = {"reference": ctx.subject}
    if ctx.encounter_ref:
        body["encounter"] = {"reference": ctx.encounter_ref}
    body["occurrencePeriod"] = _period(req.window)
    body["authoredOn"] = _fhir_instant(ctx.now)
    if ctx.requester:
        body["requester"] = {"reference": ctx.requester}


def _request_common(req: _Request, ctx: Context, stored: bool, care_plan: str) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": req.kind}
    if req.definition.get("url") and req.kind == "ServiceRequest":  # R4 CommunicationRequest has none
        body["instantiatesCanonical"] = [req.definition["url"]]
    body["basedOn"] = [{"reference": care_plan}]
    body["status"] = "active" if stored else "draft"
    if req.kind == "ServiceRequest":
        body["intent"] = "order" if stored else "proposal"
    if req.priority:
        body["priority"] = req.priority
    return body


_MAKERS: dict[str, Callable[[_Request, Context, bool, str], dict[str, Any]]] = {
    "Task": _task,
    "ServiceRequest": _service_request,
    "CommunicationRequest": _communication_request,
}


class _Builder:
    """Walks PlanDefinition.action into RequestGroup.action and the requests they point at."""

    def __init__(self, conn: Connection, svc: Services, ctx: Context, stored: bool, care_plan: str) -> None:
        self.conn, self.svc, self.ctx, self.stored = conn, svc, ctx, stored
        self.care_plan = care_plan
        self.requests: list[dict[str, Any]] = []
        self.windows: dict[str, Window] = {}
        self._definitions: dict[str, dict[str, Any]] = {}

    def _reference(self, resource_type: str) -> tuple[str, str]:
        """(id, reference): a contained ``#task-1`` for $apply, a ``Task/<uuid>`` once stored."""
        if self.stored:
            res_id = str(uuid.uuid4())
            return res_id, f"{resource_type}/{res_id}"
        res_id = f"{resource_type.lower()}-{len(self.requests) + 1}"
        return res_id, f"#{res_id}"

    def _definition(self, canonical: str, where: str) -> dict[str, Any]:
        if canonical not in self._definitions:
            found = find_by_canonical(self.conn, self.svc, "ActivityDefinition", canonical)
            if found is None:
                raise FhirError(
                    Category.UNPROCESSABLE,
                    f"{where}: ActivityDefinition {canonical} is not known to this server",
                    expression=where,
                )
            self._definitions[canonical] = found
        return self._definitions[canonical]

    def actions(self, actions: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
        out = []
        for index, action in enumerate(actions):
            at = f"{where}.action[{index}]"
            if not applicable(action, self.ctx, at):
                continue
            built = self._action(action, at)
            if built is not None:
                out.append(built)
        return out

    def _action(self, action: dict[str, Any], where: str) -> dict[str, Any] | None:
        ctx = self.ctx
        out: dict[str, Any] = {k: action[k] for k in _COPIED if k in action}
        definition: dict[str, Any] = {}
        canonical = action.get("definitionCanonical")
        if isinstance(canonical, str):
            definition = self._definition(canonical, f"{where}.definitionCanonical")
        window = (
            _window(action, ctx.trigger, where)
            or _related_window(action, self.windows, where)
            or _window(definition, ctx.trigger, f"{where}.definitionCanonical.timing")
            or (ctx.trigger, None)
        )
        if isinstance(action.get("id"), str):
            self.windows[action["id"]] = window
        if action.get("action") and not canonical:
            children = self.actions(action["action"], where)
            if not children:
                return None
            out["action"] = children
            return out
        kind = str(definition.get("kind") or "Task")
        if kind not in _MAKERS:
            raise FhirError(
                Category.UNPROCESSABLE,
                f"{where}: ActivityDefinition kind '{kind}' is not supported ({', '.join(_MAKERS)})",
                expression=where,
            )
        roles = _roles(action, definition)
        request = _Request(
            kind=kind,
            definition=definition,
            code=definition.get("code") or next(iter(action.get("code") or []), None),
            text=action.get("title") or definition.get("title") or action.get("description"),
            priority=action.get("priority") or definition.get("priority"),
            window=window,
            roles=roles,
            owner=_owner(roles, ctx),
        )
        res_id, reference = self._reference(kind)
        body = _MAKERS[kind](request, ctx, self.stored, self.care_plan)
        apply_dynamic_values(body, [(definition, f"{where}.definitionCanonical"), (action, where)], ctx)
        self.requests.append({**body, "id": res_id})
        out["timingPeriod"] = _period(window)
        if request.owner is not None:
            out["participant"] = [{"reference": request.owner}]
        out["resource"] = {"reference": reference}
        return out


def _care_plan(ctx: Context, plan_definition: dict[str, Any], stored: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "CarePlan",
        "status": "active" if stored else "draft",
        "intent": "plan" if stored else "proposal",
    }
    if plan_definition.get("url"):
        body["instantiatesCanonical"] = [plan_definition["url"]]
    title = plan_definition.get("title") or plan_definition.get("name")
    if title:
        body["title"] = title
    body["subject"] = {"reference": ctx.subject}
    if ctx.encounter_ref:
        body["encounter"] = {"reference": ctx.encounter_ref}
    body["period"] = {"start": _fhir_instant(ctx.trigger)}
    body["created"] = _fhir_instant(ctx.now)
    if ctx.params.practitioner:
        body["author"] = {"reference": ctx.params.practitioner}
    if ctx.care_teams:
        body["careTeam"] = [{"reference": f"CareTeam/{t['id']}"} for t in ctx.care_teams]
    return body


def _request_group(
    ctx: Context, plan_definition: dict[str, Any], stored: bool, actions: list[dict[str, Any]]
) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "RequestGroup"}
    if plan_definition.get("url"):
        body["instantiatesCanonical"] = [plan_definition["url"]]
    body.update(
        status="active" if stored else "draft",
        intent="plan" if stored else "proposal",
        subject={"reference": ctx.subject},
    )
    if ctx.encounter_ref:
        body["encounter"] = {"reference": ctx.encounter_ref}
    body["authoredOn"] = _fhir_instant(ctx.now)
    if ctx.params.practitioner:
        body["author"] = {"reference": ctx.params.practitioner}
    if actions:
        body["action"] = actions
    return body


def _check_plan_definition(plan_definition: dict[str, Any]) -> None:
    if plan_definition.get("resourceType") != "PlanDefinition":
        raise FhirError(Category.INVALID, "The definition to apply must be a PlanDefinition")


def _valid(resource: dict[str, Any]) -> dict[str, Any]:
    """A built resource, validated like a write (a dynamicValue may have produced invalid content: 422)."""
    try:
        return validate_resource(resource, resource["resourceType"])
    except FhirError as exc:
        raise FhirError(
            Category.UNPROCESSABLE,
            f"The plan built from this PlanDefinition is not valid FHIR: {exc.diagnostics}",
            issues=exc.issues,
        ) from exc


def apply_plan(
    conn: Connection, svc: Services, plan_definition: dict[str, Any], params: ApplyParameters
) -> dict[str, Any]:
    """R4 $apply: the CarePlan (draft), its RequestGroup and requests contained; nothing is stored."""
    _check_plan_definition(plan_definition)
    ctx = load_context(conn, svc, params)
    care_plan = _care_plan(ctx, plan_definition, stored=False)
    builder = _Builder(conn, svc, ctx, stored=False, care_plan="#")
    actions = builder.actions(plan_definition.get("action") or [], "PlanDefinition")
    group = {"id": "requestgroup", **_request_group(ctx, plan_definition, False, actions)}
    care_plan["contained"] = [group, *builder.requests]
    care_plan["activity"] = [{"reference": {"reference": "#requestgroup"}}]
    return _valid(care_plan)


def _token(value: str) -> str:
    """A token part as a search value (R4 search.html#escaping), URL-encoded for the criteria."""
    for char in "\\|,$":
        value = value.replace(char, "\\" + char)
    return quote(value, safe="")


def start_key(plan_definition: dict[str, Any], encounter_ref: str | None) -> dict[str, str] | None:
    """The CarePlan identifier that makes a start idempotent per (PlanDefinition, encounter)."""
    if encounter_ref is None or not plan_definition.get("id"):
        return None
    return {"system": START_SYSTEM, "value": f"{plan_definition['id']}|{encounter_ref.split('/', 1)[1]}"}


def start_in(conn: Connection, svc: Services, plan_definition: dict[str, Any], ctx: Context) -> Started:
    """Store the plan in the caller's transaction: CarePlan (active), RequestGroup, requests.

    The actions are built first (in memory), then the CarePlan is written by a conditional create on
    its start identifier: the same protocol started again for the same encounter finds it and writes
    nothing more. The CarePlan's activities name the RequestGroup and each request, so that
    ``CarePlan?_include=CarePlan:activity-reference`` gives practice software the Tasks themselves.
    Everything is in the caller's transaction: an error rolls it all back.
    """
    _check_plan_definition(plan_definition)
    group_id, care_plan_id = str(uuid.uuid4()), str(uuid.uuid4())
    care_plan = _care_plan(ctx, plan_definition, stored=True)
    key = start_key(plan_definition, ctx.encounter_ref)
    criteria = None
    if key is not None:
        care_plan["identifier"] = [key]
        criteria = f"identifier={_token(key['system'])}|{_token(key['value'])}"
    builder = _Builder(conn, svc, ctx, stored=True, care_plan=f"CarePlan/{care_plan_id}")
    actions = builder.actions(plan_definition.get("action") or [], "PlanDefinition")
    care_plan["activity"] = [{"reference": {"reference": f"RequestGroup/{group_id}"}}] + [
        {"reference": {"reference": f"{request['resourceType']}/{request['id']}"}}
        for request in builder.requests
    ]
    result = create_in(conn, svc, "CarePlan", _valid(care_plan), criteria, res_id=care_plan_id)
    assert result.stored is not None
    if result.status != 201:
        return Started(result.stored, False, [])
    group = _request_group(ctx, plan_definition, True, actions)
    group["basedOn"] = [{"reference": f"CarePlan/{result.stored.res_id}"}]
    items: list[tuple[str, str | None, dict[str, Any]]] = [("RequestGroup", group_id, _valid(group))]
    for request in builder.requests:
        res_id = request.pop("id")
        items.append((request["resourceType"], res_id, _valid(request)))
    written = svc.repo.create_many(conn, items)
    return Started(result.stored, True, written)


def _triggered(conn: Connection, svc: Services) -> Iterator[dict[str, Any]]:
    """Active, effective PlanDefinitions with a discharge trigger; for one url, the last updated."""
    now = datetime.now(UTC)
    latest: dict[str, dict[str, Any]] = {}
    found = find_matches(conn, svc, "PlanDefinition", [("status", "active")], limit=_MAX_PLANS)
    for stored in sorted(found, key=lambda s: s.last_updated):
        plan_definition = stored.json()
        if discharge_actions(plan_definition) and _covers(plan_definition.get("effectivePeriod"), now):
            latest[str(plan_definition.get("url") or stored.res_id)] = plan_definition
    yield from latest.values()


def start_on_discharge(conn: Connection, svc: Services, patient: str, encounter: str) -> list[Started]:
    """Start every active discharge-triggered protocol whose triggered action applies to this stay.

    Runs in the discharge's transaction, each protocol in a savepoint: a protocol that fails (a
    CPTS PlanDefinition with a bad expression, an unknown ActivityDefinition…) is skipped and
    logged without patient data, and the discharge is kept.
    """
    started: list[Started] = []
    ctx: Context | None = None
    for plan_definition in _triggered(conn, svc):
        name = f"PlanDefinition/{plan_definition.get('id')}"
        try:
            if ctx is None:
                ctx = load_context(conn, svc, ApplyParameters(subject=patient, encounter=encounter))
            actions = plan_definition.get("action") or []
            if not any(
                applicable(actions[i], ctx, f"PlanDefinition.action[{i}]")
                for i in discharge_actions(plan_definition)
            ):
                continue  # reads only so far: a savepoint only for the protocols that start
            with conn.begin_nested():
                started.append(start_in(conn, svc, plan_definition, ctx))
        except FhirError as exc:
            log.warning(
                "protocol %s not started on discharge: %s (%s)",
                name,
                exc.category.name,
                (exc.issues[0].expression or ["?"])[0] if exc.issues else "?",
            )
        except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
            # A CPTS-authored definition we did not foresee must not cost the hospital its discharge.
            log.warning("protocol %s not started on discharge: %s", name, type(exc).__name__)
    return started
