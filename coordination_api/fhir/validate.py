"""$validate at type and instance level (R4 resource-operation-validate).

Always 200 with an OperationOutcome listing every finding: base R4 structure and rules, the narrative
(txt-1, txt-2), French identifier rules, the claimed meta.profile(s) and the ``profile`` parameter (a
nominated profile the server does not have is an error: "if the profile is nominated and cannot be
used, the server SHALL return an error"). Modes: create, update, delete. ``Parameters/$validate``
validates a Parameters resource itself (R4 parameters.html: never stored, but a resource).
"""

from __future__ import annotations

from typing import Any

from flask import Response, request

from coordination_api.core.profiles import policy, to_issue
from coordination_api.errors import Category, FhirError, Issue, operation_outcome
from coordination_api.fhir import access
from coordination_api.fhir.context import services
from coordination_api.fhir.resources import (
    check_operation_type,
    check_type,
    parse_json,
    validate_resource,
)
from coordination_api.web.http import check_content_type, fhir_json_response, read_body
from fhir_profiles import base_rules

MODES = {"create", "update", "delete"}
INPUT_NAMES = {"resource", "mode", "profile"}


def _is_input_envelope(body: Any, resource_type: str) -> bool:
    """Is a Parameters body the operation's input rather than the resource to validate?

    For any type but Parameters, always. For ``Parameters/$validate`` only when its parameters are
    the operation's own and one of them carries a Parameters ``resource``: otherwise the body is
    the Parameters resource to validate.
    """
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        return False
    if resource_type != "Parameters":
        return True
    parameters = body.get("parameter")
    if not isinstance(parameters, list) or not parameters:
        return False
    if not all(isinstance(p, dict) and p.get("name") in INPUT_NAMES for p in parameters):
        return False
    return any(
        p.get("name") == "resource"
        and isinstance(p.get("resource"), dict)
        and p["resource"].get("resourceType") == "Parameters"
        for p in parameters
    )


def _parameters(body: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """(resource, mode, profile) from a Parameters body."""
    resource = mode = profile = None
    for index, parameter in enumerate(body.get("parameter") or []):
        if not isinstance(parameter, dict):
            raise FhirError(
                Category.STRUCTURE,
                "Parameters.parameter entries must be objects",
                expression=f"Parameters.parameter[{index}]",
            )
        name = parameter.get("name")
        if name == "resource":
            resource = parameter.get("resource")
        elif name == "mode":
            mode = parameter.get("valueCode") or parameter.get("valueString")
        elif name == "profile":
            profile = (
                parameter.get("valueUri") or parameter.get("valueCanonical") or parameter.get("valueString")
            )
    return resource, mode, profile


def _inputs(resource_type: str) -> tuple[dict[str, Any] | None, str, str | None]:
    mode, profile = request.args.get("mode"), request.args.get("profile")
    resource: dict[str, Any] | None = None
    data = read_body() if request.method == "POST" else b""
    if data:
        check_content_type()
        body = parse_json(data)
        if _is_input_envelope(body, resource_type):
            resource, body_mode, body_profile = _parameters(body)
            mode, profile = body_mode or mode, body_profile or profile
        else:
            resource = body
    mode = mode or "create"
    if mode not in MODES:
        raise FhirError(Category.INVALID, f"$validate mode '{mode}' is not one of {sorted(MODES)}")
    return resource, mode, profile


def _findings(resource: Any, resource_type: str, profile: str | None) -> list[Issue]:
    try:
        validate_resource(resource, resource_type, profiles=False, narrative=False, base=False)
    except FhirError as exc:
        return list(exc.issues)  # structure errors: the profile layer would only repeat them
    root = resource_type
    # The base walk reports txt-1/txt-2 on every Narrative it meets (base_rules.REPORTING).
    findings = base_rules.check(resource, root)
    base = {(f.code, f.expression) for f in findings if f.is_error}
    # A claimed profile repeats the base bindings and cardinalities of its snapshot: listed once.
    findings += [
        f
        for f in policy().findings(resource, root, [profile] if profile else None)
        if not (f.is_error and (f.code, f.expression) in base)
    ]
    return [to_issue(f) for f in findings]


def _respond(issues: list[Issue]) -> Response:
    if not issues:
        issues = [Issue("information", "informational", "Validation successful: no issues found")]
    return fhir_json_response(operation_outcome(issues))


def validate_type(resource_type: str) -> Response:
    check_operation_type(resource_type)
    access.require_any(resource_type, "cu")
    resource, mode, profile = _inputs(resource_type)
    if mode == "delete":
        raise FhirError(
            Category.INVALID, "$validate mode 'delete' needs an instance: POST [type]/[id]/$validate"
        )
    if resource is None:
        raise FhirError(
            Category.REQUIRED, "$validate needs the resource to validate (body or 'resource' parameter)"
        )
    return _respond(_findings(resource, resource_type, profile))


def validate_instance(resource_type: str, res_id: str) -> Response:
    check_type(resource_type, write=False)
    access.require(resource_type, "r")
    resource, mode, profile = _inputs(resource_type)
    svc = services()
    with svc.repo.reading() as conn:
        stored = svc.repo.current(conn, resource_type, res_id)
        if stored is not None and not stored.deleted:
            access.check_stored(conn, stored)
    exists = stored is not None and not stored.deleted
    if mode == "delete":
        if not exists:
            raise FhirError(Category.NOT_FOUND, f"{resource_type}/{res_id} is not known")
        return _respond([Issue("information", "informational", f"{resource_type}/{res_id} can be deleted")])
    if resource is None:
        if not exists or stored is None:
            raise FhirError(Category.NOT_FOUND, f"{resource_type}/{res_id} is not known")
        resource = stored.json()
    issues = _findings(resource, resource_type, profile)
    if mode == "update" and isinstance(resource, dict) and resource.get("id") != res_id:
        issues.append(
            Issue(
                "error",
                "invalid",
                f"For an update the resource id must be '{res_id}'",
                [f"{resource_type}.id"],
            )
        )
    return _respond(issues)
