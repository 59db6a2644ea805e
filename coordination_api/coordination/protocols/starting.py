"""Starting a protocol: the plan written as separate resources in the caller's transaction, once per
stay; on discharge, every triggered PlanDefinition."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy.engine import Connection

from coordination_api.coordination.protocols.expressions import applicable
from coordination_api.coordination.protocols.model import START_SYSTEM, ApplyParameters, Context, Started
from coordination_api.coordination.protocols.plans import (
    build_care_plan,
    build_request_group,
    check_plan_definition,
    valid_resource,
)
from coordination_api.coordination.protocols.reading import covers, definitions, load_context
from coordination_api.coordination.protocols.requests import Builder, discharge_actions
from coordination_api.core.services import Services
from coordination_api.core.writes import create_in, find_matches
from coordination_api.errors import FhirError

log = logging.getLogger(__name__)
_MAX_PLANS = 1000


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
    check_plan_definition(plan_definition)
    group_id, care_plan_id = str(uuid.uuid4()), str(uuid.uuid4())
    care_plan = build_care_plan(ctx, plan_definition, stored=True)
    key = start_key(plan_definition, ctx.encounter_ref)
    criteria = None
    if key is not None:
        care_plan["identifier"] = [key]
        criteria = f"identifier={_token(key['system'])}|{_token(key['value'])}"
    builder = Builder(conn, svc, ctx, stored=True, care_plan=f"CarePlan/{care_plan_id}")
    actions = builder.actions(plan_definition.get("action") or [], "PlanDefinition")
    care_plan["activity"] = [{"reference": {"reference": f"RequestGroup/{group_id}"}}] + [
        {"reference": {"reference": f"{request['resourceType']}/{request['id']}"}}
        for request in builder.requests
    ]
    result = create_in(conn, svc, "CarePlan", valid_resource(care_plan), criteria, res_id=care_plan_id)
    assert result.stored is not None
    if result.status != 201:
        return Started(result.stored, False, [])
    group = build_request_group(ctx, plan_definition, True, actions)
    group["basedOn"] = [{"reference": f"CarePlan/{result.stored.res_id}"}]
    items: list[tuple[str, str | None, dict[str, Any]]] = [("RequestGroup", group_id, valid_resource(group))]
    for request in builder.requests:
        res_id = request.pop("id")
        items.append((request["resourceType"], res_id, valid_resource(request)))
    written = svc.repo.create_many(conn, items)
    return Started(result.stored, True, written)


def _triggered(conn: Connection, svc: Services) -> Iterator[dict[str, Any]]:
    """Active, effective PlanDefinitions with a discharge trigger; for one url, the last updated."""
    now = datetime.now(UTC)
    latest: dict[str, dict[str, Any]] = {}
    cached = definitions(conn, svc, "PlanDefinition")
    if cached is None:
        stored = find_matches(conn, svc, "PlanDefinition", [("status", "active")], limit=_MAX_PLANS)
        found = [(s, s.json()) for s in stored]
    else:  # the same as the search status=active (token code), the first _MAX_PLANS by pk
        parsed = ((s, s.json()) for s in cached)
        found = [(s, pd) for s, pd in parsed if pd.get("status") == "active"][:_MAX_PLANS]
    for stored_plan, plan_definition in sorted(found, key=lambda item: item[0].last_updated):
        if discharge_actions(plan_definition) and covers(plan_definition.get("effectivePeriod"), now):
            latest[str(plan_definition.get("url") or stored_plan.res_id)] = plan_definition
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
