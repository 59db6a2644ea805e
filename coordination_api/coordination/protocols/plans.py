"""R4 $apply: a CarePlan with a contained RequestGroup and its requests, stored nowhere."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from coordination_api.coordination.protocols.model import ApplyParameters, Context, fhir_instant
from coordination_api.coordination.protocols.reading import load_context
from coordination_api.coordination.protocols.requests import Builder
from coordination_api.core.services import Services
from coordination_api.core.validation import validate_resource
from coordination_api.errors import Category, FhirError


def build_care_plan(ctx: Context, plan_definition: dict[str, Any], stored: bool) -> dict[str, Any]:
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
    body["period"] = {"start": fhir_instant(ctx.trigger)}
    body["created"] = fhir_instant(ctx.now)
    if ctx.params.practitioner:
        body["author"] = {"reference": ctx.params.practitioner}
    if ctx.care_teams:
        body["careTeam"] = [{"reference": f"CareTeam/{t['id']}"} for t in ctx.care_teams]
    return body


def build_request_group(
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
    body["authoredOn"] = fhir_instant(ctx.now)
    if ctx.params.practitioner:
        body["author"] = {"reference": ctx.params.practitioner}
    if actions:
        body["action"] = actions
    return body


def check_plan_definition(plan_definition: dict[str, Any]) -> None:
    if plan_definition.get("resourceType") != "PlanDefinition":
        raise FhirError(Category.INVALID, "The definition to apply must be a PlanDefinition")


def valid_resource(resource: dict[str, Any]) -> dict[str, Any]:
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
    check_plan_definition(plan_definition)
    ctx = load_context(conn, svc, params)
    care_plan = build_care_plan(ctx, plan_definition, stored=False)
    builder = Builder(conn, svc, ctx, stored=False, care_plan="#")
    actions = builder.actions(plan_definition.get("action") or [], "PlanDefinition")
    group = {"id": "requestgroup", **build_request_group(ctx, plan_definition, False, actions)}
    care_plan["contained"] = [group, *builder.requests]
    care_plan["activity"] = [{"reference": {"reference": "#requestgroup"}}]
    return valid_resource(care_plan)
