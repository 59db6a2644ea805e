"""PUT: update, update-as-create and conditional update (R4 http.html#update, #cond-update); the
write is core's."""

from __future__ import annotations

from flask import Response, request

from coordination_api.core import writes
from coordination_api.fhir import access
from coordination_api.fhir.context import services
from coordination_api.fhir.write_common import request_criteria, request_json, write_response


def update(resource_type: str, res_id: str) -> Response:
    who = access.principal()
    writes.authorize(who, resource_type, "u")  # before the body is read: 404/405/403 first
    body = request_json()
    result = writes.update(services(), who, resource_type, res_id, body, request.headers.get("If-Match"))
    return write_response(result)


def conditional_update(resource_type: str) -> Response:
    who = access.principal()
    writes.authorize(who, resource_type, "u")
    params = request_criteria()
    writes.require_criteria(params, "PUT")
    body = request_json()
    result = writes.conditional_update(
        services(), who, resource_type, params, body, request.headers.get("If-Match")
    )
    return write_response(result)
