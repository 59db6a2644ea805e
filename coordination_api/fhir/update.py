"""update, update-as-create and conditional update (R4 http.html#update, #cond-update)."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from sqlalchemy.engine import Connection

from coordination_api.errors import Category, FhirError
from coordination_api.fhir import access
from coordination_api.fhir.context import Services, WriteResult, services
from coordination_api.fhir.resources import check_type
from coordination_api.fhir.write_common import find_matches, request_resource, write_response
from coordination_api.storage.repository import new_id
from coordination_api.web.http import parse_etag

_ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


def check_id(res_id: str) -> None:
    """R4 datatypes.html#id: 1-64 characters of [A-Za-z0-9\\-\\.]."""
    if not res_id or len(res_id) > 64 or not set(res_id) <= _ID_CHARS:
        raise FhirError(Category.INVALID, f"'{res_id}' is not a valid resource id", expression="Resource.id")


def check_update_body(res_id: str, body: dict[str, Any]) -> None:
    """R4 http.html#update: the body carries an id, equal to the URL's."""
    check_id(res_id)
    body_id = body.get("id")
    if body_id is None:
        raise FhirError(
            Category.INVALID, "The resource in an update must carry an id", expression="Resource.id"
        )
    if body_id != res_id:
        raise FhirError(
            Category.INVALID,
            f"Body id '{body_id}' does not match the URL id '{res_id}'",
            expression="Resource.id",
        )


def update_in(
    conn: Connection,
    svc: Services,
    resource_type: str,
    res_id: str,
    body: dict[str, Any],
    if_match: int | None = None,
) -> WriteResult:
    check_update_body(res_id, body)
    stored, created = svc.repo.update(conn, resource_type, res_id, body, if_match)
    return WriteResult(201 if created else 200, svc.repo.latest(conn, stored))


def conditional_target(
    conn: Connection, svc: Services, resource_type: str, params: list[tuple[str, str]], body: dict[str, Any]
) -> str:
    """The id a conditional update writes to (R4 http.html#cond-update)."""
    matches = find_matches(conn, svc, resource_type, params)
    if len(matches) > 1:
        raise FhirError(
            Category.PRECONDITION_FAILED, f"Conditional update criteria match {len(matches)} resources"
        )
    body_id = body.get("id")
    if matches:
        target = matches[0].res_id
        if body_id not in (None, target):
            raise FhirError(
                Category.INVALID,
                f"Body id '{body_id}' differs from the matching resource {resource_type}/{target}",
                expression="Resource.id",
            )
        return target
    if body_id is None:
        return new_id()
    existing = svc.repo.current(conn, resource_type, str(body_id))
    if existing is not None and not existing.deleted:
        # "No matches, id provided" is update-as-create; an id that exists and does not match the
        # criteria is a conflict (the R5 text makes this explicit: 409).
        raise FhirError(
            Category.CONFLICT,
            f"No resource matches the criteria, but {resource_type}/{body_id} exists and does not match them",
            expression="Resource.id",
        )
    return str(body_id)


def conditional_update_in(
    conn: Connection,
    svc: Services,
    resource_type: str,
    params: list[tuple[str, str]],
    body: dict[str, Any],
    if_match: int | None = None,
) -> WriteResult:
    res_id = conditional_target(conn, svc, resource_type, params, body)
    return update_in(conn, svc, resource_type, res_id, {**body, "id": res_id}, if_match)


def update(resource_type: str, res_id: str) -> Response:
    check_type(resource_type, write=True)
    access.require(resource_type, "u")
    body = request_resource(resource_type)
    if_match = parse_etag(request.headers.get("If-Match"), "If-Match")
    svc = services()
    with svc.repo.writing() as conn:
        result = update_in(conn, svc, resource_type, res_id, body, if_match)
    return write_response(result)


def conditional_update(resource_type: str) -> Response:
    check_type(resource_type, write=True)
    access.require(resource_type, "u")
    params = [(k, v) for k, v in request.args.items(multi=True) if k not in {"_format", "_pretty"}]
    if not params:
        raise FhirError(
            Category.METHOD_NOT_ALLOWED, "PUT on a type needs search criteria (conditional update)"
        )
    body = request_resource(resource_type)
    if_match = parse_etag(request.headers.get("If-Match"), "If-Match")
    svc = services()
    with svc.repo.writing() as conn:
        result = conditional_update_in(conn, svc, resource_type, params, body, if_match)
    return write_response(result)
