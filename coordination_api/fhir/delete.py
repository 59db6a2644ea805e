"""DELETE: delete and conditional delete (R4 http.html#delete, #3.1.0.7.1); the write is core's."""

from __future__ import annotations

from flask import Response, request

from coordination_api.core import writes
from coordination_api.core.services import WriteResult
from coordination_api.fhir import access
from coordination_api.fhir.context import services
from coordination_api.fhir.write_common import request_criteria, write_response
from coordination_api.web.http import prefer


def _respond(result: WriteResult) -> Response:
    # 200 with an OperationOutcome when one was asked for, else 204 with no body (R4 http.html#delete).
    result.status = 200 if prefer("return") == "operationoutcome" else 204
    return write_response(result)


def delete(resource_type: str, res_id: str) -> Response:
    who = access.principal()
    return _respond(writes.delete(services(), who, resource_type, res_id, request.headers.get("If-Match")))


def conditional_delete(resource_type: str) -> Response:
    who = access.principal()
    writes.authorize(who, resource_type, "d")
    params = request_criteria()
    return _respond(writes.conditional_delete(services(), who, resource_type, params))
