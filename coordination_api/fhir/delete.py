"""delete and conditional delete (R4 http.html#delete, #3.1.0.7.1)."""

from __future__ import annotations

from flask import Response, request
from sqlalchemy.engine import Connection

from coordination_api.errors import Category, FhirError, Issue, operation_outcome
from coordination_api.fhir import access
from coordination_api.fhir.context import Services, WriteResult, services
from coordination_api.fhir.resources import check_type
from coordination_api.fhir.write_common import find_matches, write_response
from coordination_api.web.http import parse_etag, prefer


def delete_in(
    conn: Connection, svc: Services, resource_type: str, res_id: str, if_match: int | None = None
) -> WriteResult:
    stored = svc.repo.delete(conn, resource_type, res_id, if_match)
    if stored is None:
        message = f"{resource_type}/{res_id} did not exist or was already deleted; nothing to do"
    else:
        message = f"{resource_type}/{res_id} deleted (version {stored.version})"
    return WriteResult(
        204 if stored is None else 200,
        stored,
        operation_outcome([Issue("information", "informational", message)]),
    )


def conditional_delete_in(
    conn: Connection, svc: Services, resource_type: str, params: list[tuple[str, str]]
) -> WriteResult:
    matches = find_matches(conn, svc, resource_type, params)
    if len(matches) > 1:
        raise FhirError(
            Category.PRECONDITION_FAILED,
            f"Conditional delete criteria match {len(matches)} resources; this server deletes one at a time",
        )
    if not matches:
        return WriteResult(204, None, operation_outcome([Issue("information", "informational", "No match")]))
    return delete_in(conn, svc, resource_type, matches[0].res_id)


def _respond(result: WriteResult) -> Response:
    # 200 with an OperationOutcome when one was asked for, else 204 with no body (R4 http.html#delete).
    result.status = 200 if prefer("return") == "operationoutcome" else 204
    return write_response(result)


def delete(resource_type: str, res_id: str) -> Response:
    check_type(resource_type, write=True)
    access.require(resource_type, "d")
    if_match = parse_etag(request.headers.get("If-Match"), "If-Match")
    svc = services()
    with svc.repo.writing() as conn:
        result = delete_in(conn, svc, resource_type, res_id, if_match)
    return _respond(result)


def conditional_delete(resource_type: str) -> Response:
    check_type(resource_type, write=True)
    access.require(resource_type, "d")
    params = [(k, v) for k, v in request.args.items(multi=True) if k not in {"_format", "_pretty"}]
    if not params:
        raise FhirError(
            Category.METHOD_NOT_ALLOWED, "DELETE on a type needs search criteria (conditional delete)"
        )
    svc = services()
    with svc.repo.writing() as conn:
        result = conditional_delete_in(conn, svc, resource_type, params)
    return _respond(result)
