"""PlanDefinition/$apply (R4 plandefinition-operation-apply.html) and our PlanDefinition/$start.

- ``POST [base]/PlanDefinition/$apply`` (the ``planDefinition`` resource, or its ``url``, in Parameters)
  and ``GET|POST [base]/PlanDefinition/[id]/$apply``: the CarePlan (status draft) with the RequestGroup
  and its requests contained; nothing is stored (R4: "the operation does not persist anything").
- ``POST [base]/PlanDefinition/[id]/$start`` (same parameters): the same plan stored in one transaction
  as an active CarePlan, a RequestGroup and its Tasks / ServiceRequests / CommunicationRequests; the
  answer is a ``transaction-response`` Bundle (201), or 200 with the CarePlan alone when this
  protocol was already started for that encounter.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from coordination_api.coordination import protocols
from coordination_api.errors import Category, FhirError
from coordination_api.fhir import access
from coordination_api.fhir.context import Services, services
from coordination_api.fhir.operation_input import parameters_body
from coordination_api.fhir.resources import validate_resource
from coordination_api.storage.repository import Stored
from coordination_api.web.http import base_url, fhir_json_response

_SINGLE = {
    "subject": "subject",
    "encounter": "encounter",
    "practitioner": "practitioner",
    "organization": "organization",
    "userType": "user_type",
    "userLanguage": "user_language",
    "userTaskContext": "user_task_context",
    "setting": "setting",
    "settingContext": "setting_context",
}


def _value(param: dict[str, Any]) -> str | None:
    """A parameter's value as a string (a Reference gives its reference, a CodeableConcept its text)."""
    for key, value in param.items():
        if not key.startswith("value"):
            continue
        if isinstance(value, str):
            return value
        if isinstance(value, dict):
            found = value.get("reference") or value.get("text") or value.get("code")
            if found is None and value.get("coding"):
                found = value["coding"][0].get("code")
            return str(found) if found is not None else None
    return None


class _Input:
    """The operation's parameters: the query string, plus a Parameters body on POST."""

    def __init__(self) -> None:
        self.values: dict[str, list[str]] = {k: list(v) for k, v in request.args.lists()}
        self.plan_definition: dict[str, Any] | None = None
        for param in parameters_body():
            name = str(param.get("name"))
            if name == "planDefinition" and isinstance(param.get("resource"), dict):
                self.plan_definition = validate_resource(
                    param["resource"], "PlanDefinition", "Parameters.parameter.resource"
                )
                continue
            value = _value(param)
            if value is not None:
                self.values.setdefault(name, []).append(value)

    def one(self, name: str) -> str | None:
        values = self.values.get(name) or []
        if len(values) > 1:
            raise FhirError(Category.INVALID, f"Parameter '{name}' may be given once")
        return values[0] if values else None

    def parameters(self) -> protocols.ApplyParameters:
        subject = self.values.get("subject") or []
        if not subject:
            raise FhirError(Category.REQUIRED, "Parameter 'subject' (Patient/[id]) is required")
        if len(subject) > 1:
            raise FhirError(
                Category.NOT_SUPPORTED, "One subject at a time: a Group of patients is not supported"
            )
        found = {attr: self.one(name) for name, attr in _SINGLE.items() if name != "subject"}
        return protocols.ApplyParameters(subject=subject[0], **found)


def _plan_definition(svc: Services, res_id: str) -> dict[str, Any]:
    stored = svc.repo.read_current("PlanDefinition", res_id)
    if stored is None or stored.deleted:
        raise FhirError(Category.NOT_FOUND, f"PlanDefinition/{res_id} is not known")
    return stored.json()


def _check_subject(svc: Services, params: protocols.ApplyParameters) -> None:
    """Applying a protocol reads the patient's data (encounter, cercle de soins, prescriptions) into
    its conditions and dynamic values: the caller needs read scopes on those types and the patient's
    whole record within reach (the care-team rule; a Task offer alone is not enough)."""
    for resource_type in CONTEXT_TYPES:
        access.require(resource_type, "r")
    if params.encounter:
        access.require("Encounter", "r")
    with svc.repo.reading() as conn:
        stored = protocols.subject_stored(conn, svc, params)
        access.check_stored(conn, stored)
        access.check_record_reach(conn, stored.res_id)


# The types a protocol's context reads besides the subject and the encounter (protocols.load_context).
CONTEXT_TYPES = ("Patient", "CareTeam", "ServiceRequest")


def apply_type() -> Response:
    access.require("PlanDefinition", "r")
    access.require("Patient", "r")
    given = _Input()
    svc = services()
    plan_definition = given.plan_definition
    if plan_definition is None:
        url = given.one("url") or given.one("planDefinition")
        if url is None:
            raise FhirError(
                Category.REQUIRED, "Give the 'planDefinition' resource, or its 'url', in the Parameters"
            )
        with svc.repo.reading() as conn:
            plan_definition = protocols.find_by_canonical(conn, svc, "PlanDefinition", url)
        if plan_definition is None:
            raise FhirError(Category.NOT_FOUND, f"No PlanDefinition has the url {url}")
    return _apply(svc, plan_definition, given.parameters())


def apply_instance(res_id: str) -> Response:
    access.require("PlanDefinition", "r")
    access.require("Patient", "r")
    given = _Input()
    svc = services()
    return _apply(svc, _plan_definition(svc, res_id), given.parameters())


def _apply(svc: Services, plan_definition: dict[str, Any], params: protocols.ApplyParameters) -> Response:
    _check_subject(svc, params)
    with svc.repo.reading() as conn:
        care_plan = protocols.apply_plan(conn, svc, plan_definition, params)
    return fhir_json_response(care_plan)


def _entry(stored: Stored, base: str, status: str) -> dict[str, Any]:
    return {
        "fullUrl": f"{base}/{stored.res_type}/{stored.res_id}",
        "resource": stored.json(),
        "response": {
            "status": status,
            "location": f"{base}/{stored.res_type}/{stored.res_id}/_history/{stored.version}",
            "etag": stored.etag,
        },
    }


def start_instance(res_id: str) -> Response:
    access.require("PlanDefinition", "r")
    for resource_type in ("CarePlan", "RequestGroup", "Task"):
        access.require(resource_type, "c")
    given = _Input()
    if given.plan_definition is not None:
        raise FhirError(Category.NOT_SUPPORTED, "$start applies a stored PlanDefinition (by its id)")
    params = given.parameters()
    svc = services()
    plan_definition = _plan_definition(svc, res_id)
    _check_subject(svc, params)
    with svc.repo.writing() as conn:
        ctx = protocols.load_context(conn, svc, params)
        started = protocols.start_in(conn, svc, plan_definition, ctx)
        for stored in started.written:
            access.require(stored.res_type, "c")  # ServiceRequest / CommunicationRequest, when made
    base = base_url()
    headers = {"Location": f"{base}/CarePlan/{started.care_plan.res_id}/_history/{started.care_plan.version}"}
    if not started.created:
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": [_entry(started.care_plan, base, "200 OK")],
        }
        return fhir_json_response(bundle, 200, headers)
    entries = [_entry(s, base, "201 Created") for s in [started.care_plan, *started.written]]
    bundle = {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
    return fhir_json_response(bundle, 201, headers)


def register_routes(bp: Blueprint) -> None:
    """The PlanDefinition operations; call before the blueprint is registered (static rules win)."""
    bp.add_url_rule("/PlanDefinition/$apply", "plandefinition_apply", apply_type, methods=["POST"])
    bp.add_url_rule(
        "/PlanDefinition/<res_id>/$apply",
        "plandefinition_apply_instance",
        apply_instance,
        methods=["GET", "POST"],
    )
    bp.add_url_rule(
        "/PlanDefinition/<res_id>/$start", "plandefinition_start", start_instance, methods=["POST"]
    )
