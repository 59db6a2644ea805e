"""create and conditional create (R4 http.html#create, #ccreate)."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from sqlalchemy.engine import Connection

from coordination_api.coordination import nde
from coordination_api.errors import Category, FhirError
from coordination_api.fhir import access
from coordination_api.fhir.context import Services, WriteResult, services
from coordination_api.fhir.resources import check_type
from coordination_api.fhir.write_common import (
    criteria_hash,
    find_matches,
    parse_criteria,
    request_resource,
    write_response,
)


def create_in(
    conn: Connection,
    svc: Services,
    resource_type: str,
    body: dict[str, Any],
    if_none_exist: str | None = None,
    res_id: str | None = None,
) -> WriteResult:
    """Create inside an open transaction. The server assigns the id (a client id is ignored, R4 3.1.0.7)."""
    if not if_none_exist:
        created = svc.repo.create(conn, resource_type, body, res_id)
        return WriteResult(201, svc.repo.latest(conn, created))
    params = parse_criteria(if_none_exist)
    key = criteria_hash(resource_type, params)
    for _attempt in range(4):
        matches = find_matches(conn, svc, resource_type, params)
        if len(matches) > 1:
            raise FhirError(
                Category.PRECONDITION_FAILED,
                f"If-None-Exist '{if_none_exist}' matches {len(matches)} resources; cannot create",
            )
        if matches:
            access.check_stored(conn, matches[0])  # the existing match is returned: it must be reachable
            return WriteResult(200, matches[0])
        savepoint = conn.begin_nested()
        stored = svc.repo.create(conn, resource_type, body, res_id)
        if svc.repo.claim_conditional(conn, resource_type, key, stored.pk):
            savepoint.commit()
            return WriteResult(201, svc.repo.latest(conn, stored))
        # A concurrent writer created a match first (the database unique key decided): undo ours.
        savepoint.rollback()
        if not find_matches(conn, svc, resource_type, params):
            # The claim is stale (that resource no longer matches): release it and try again.
            svc.repo.release_conditional(conn, resource_type, key)
    raise FhirError(Category.CONFLICT, "Conditional create kept conflicting with concurrent writes; retry")


def create(resource_type: str) -> Response:
    check_type(resource_type, write=True)
    access.require(resource_type, "c")
    body = request_resource(resource_type)
    body.pop("id", None)
    svc = services()
    if_none_exist = request.headers.get("If-None-Exist")
    with svc.repo.writing() as conn:
        if resource_type == "CommunicationRequest" and nde.event_coding(body) is not None:
            # An NdE event: a resend (same identifier) finds the first one and changes nothing.
            if not if_none_exist:
                if_none_exist = nde.identifier_criteria(body)
            if not if_none_exist or not find_matches(conn, svc, resource_type, parse_criteria(if_none_exist)):
                body = nde.intake(conn, svc, body)
        result = create_in(conn, svc, resource_type, body, if_none_exist)
    return write_response(result)
