"""read and vread (R4 http.html#read, #vread), with conditional read (If-None-Match, If-Modified-Since)."""

from __future__ import annotations

import contextlib
from email.utils import parsedate_to_datetime

from flask import Response, request
from sqlalchemy.engine import Connection

from coordination_api.core.versions import parse_etag, version_number
from coordination_api.errors import Category, FhirError
from coordination_api.fhir import access
from coordination_api.fhir.context import services
from coordination_api.fhir.resources import check_type
from coordination_api.fhir.subsetting import select_elements, summarize
from coordination_api.storage.repository import Stored
from coordination_api.web.http import fhir_json_response, version_headers


def render_stored(stored: Stored, status: int = 200) -> Response:
    """The stored JSON as is, unless _summary/_elements ask for a subset."""
    headers = version_headers(stored.version, stored.last_updated)
    summary = request.args.get("_summary")
    elements = request.args.get("_elements")
    if summary and summary != "false":
        if summary not in {"true", "text", "data"}:
            raise FhirError(Category.INVALID, f"_summary '{summary}' is not supported on read")
        return fhir_json_response(summarize(stored.json(), summary), status, headers)
    if elements:
        return fhir_json_response(
            select_elements(stored.json(), [e.strip() for e in elements.split(",") if e.strip()]),
            status,
            headers,
        )
    return fhir_json_response(stored.content, status, headers)


def _not_modified(stored: Stored) -> bool:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match:
        return parse_etag(if_none_match, "If-None-Match") == stored.version
    since = request.headers.get("If-Modified-Since")
    if since:
        try:
            moment = parsedate_to_datetime(since)
        except (TypeError, ValueError) as exc:
            raise FhirError(Category.INVALID, f"If-Modified-Since '{since}' is not an HTTP date") from exc
        # Last-Modified has second precision.
        return stored.last_updated // 1_000_000 <= int(moment.timestamp())
    return False


def _check_deleted(stored: Stored, conn: Connection | None = None) -> None:
    """A deletion holds no content: whoever may not see the version it deleted gets 403, not 410 with
    the version (review 17, R5: the 410 told that the resource existed and how often it changed)."""
    svc = services()
    with contextlib.ExitStack() as stack:
        if conn is None:
            conn = stack.enter_context(svc.repo.reading())
        before = svc.repo.version(conn, stored.res_type, stored.res_id, stored.version - 1)
        if before is not None:
            access.check_version(conn, before)


def read(resource_type: str, res_id: str) -> Response:
    check_type(resource_type, write=False)
    access.require(resource_type, "r")
    stored, reach = access.read_current(resource_type, res_id)
    if stored is None:
        raise FhirError(Category.NOT_FOUND, f"{resource_type}/{res_id} is not known")
    if stored.deleted:
        _check_deleted(stored)
        raise FhirError(
            Category.DELETED,
            f"{resource_type}/{res_id} was deleted",
            headers=version_headers(stored.version, stored.last_updated),
        )
    access.check_reach(stored, reach)
    if _not_modified(stored):
        return Response(status=304, headers=version_headers(stored.version, stored.last_updated))
    return render_stored(stored)


def vread(resource_type: str, res_id: str, version_id: str) -> Response:
    check_type(resource_type, write=False)
    access.require(resource_type, "r")
    number = version_number(version_id)
    if number is None:
        raise FhirError(
            Category.NOT_FOUND, f"Version '{version_id}' of {resource_type}/{res_id} is not known"
        )
    svc = services()
    with svc.repo.reading() as conn:
        stored = svc.repo.version(conn, resource_type, res_id, number)
        if stored is not None and stored.deleted:
            _check_deleted(stored, conn)
        elif stored is not None:
            access.check_version(conn, stored)  # the version's own compartments decide
    if stored is None:
        raise FhirError(Category.NOT_FOUND, f"{resource_type}/{res_id}/_history/{version_id} is not known")
    if stored.deleted:
        raise FhirError(
            Category.DELETED,
            f"{resource_type}/{res_id} version {version_id} is a deletion",
            headers=version_headers(stored.version, stored.last_updated),
        )
    return render_stored(stored)
