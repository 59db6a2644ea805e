"""The requests a plan holds (Task, ServiceRequest, CommunicationRequest), from PlanDefinition actions."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from coordination_api.coordination.protocols.expressions import applicable, apply_dynamic_values
from coordination_api.coordination.protocols.model import DISCHARGE_EVENT, Context, fhir_instant
from coordination_api.coordination.protocols.reading import find_by_canonical
from coordination_api.coordination.protocols.timing import Window, period_of, related_window, window_of
from coordination_api.core.services import Services
from coordination_api.errors import Category, FhirError

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
    body["authoredOn"] = fhir_instant(ctx.now)
    if ctx.requester:
        body["requester"] = {"reference": ctx.requester}
    if req.owner is not None:
        body["owner"] = {"reference": req.owner}
    elif req.roles:
        body["performerType"] = req.roles  # an open request: the dispatcher offers it to this role
    body["restriction"] = {"period": period_of(req.window)}
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
    body["occurrencePeriod"] = period_of(req.window)
    body["authoredOn"] = fhir_instant(ctx.now)
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


class Builder:
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
            window_of(action, ctx.trigger, where)
            or related_window(action, self.windows, where)
            or window_of(definition, ctx.trigger, f"{where}.definitionCanonical.timing")
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
        out["timingPeriod"] = period_of(window)
        if request.owner is not None:
            out["participant"] = [{"reference": request.owner}]
        out["resource"] = {"reference": reference}
        return out
