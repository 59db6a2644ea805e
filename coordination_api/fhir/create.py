"""POST [type]: create and conditional create (R4 http.html#create, #ccreate); the write is core's."""

from __future__ import annotations

from flask import Response, request

from coordination_api.core import writes
from coordination_api.fhir import access
from coordination_api.fhir.context import services
from coordination_api.fhir.write_common import request_json, write_response


def create(resource_type: str) -> Response:
    who = access.principal()
    writes.authorize(who, resource_type, "c")  # before the body is read: 404/405/403 first
    body = request_json()
    result = writes.create(services(), who, resource_type, body, request.headers.get("If-None-Exist"))
    return write_response(result)
