"""patch with JSON Patch (R4 http.html#patch, RFC 6902): ``PATCH [base]/[type]/[id]``.

The patched resource is validated like an update; the version read is the one replaced, so a
concurrent writer cannot be overwritten silently (If-Match is honoured too).
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import jsonpointer
from flask import Response, request

from coordination_api.core import writes
from coordination_api.core.versions import parse_etag
from coordination_api.errors import Category, FhirError
from coordination_api.fhir import access
from coordination_api.fhir.context import WriteResult, services
from coordination_api.fhir.resources import check_type, parse_json, validate_resource
from coordination_api.fhir.write_common import write_response
from coordination_api.storage.repository import check_if_match
from coordination_api.web.http import read_body

JSON_PATCH = "application/json-patch+json"


def _patch_document() -> list[dict[str, Any]]:
    media = (request.mimetype or "").lower()
    if media != JSON_PATCH:
        raise FhirError(
            Category.UNSUPPORTED_MEDIA_TYPE,
            f"PATCH takes a JSON Patch document ({JSON_PATCH}); FHIRPath and XML Patch are not supported",
        )
    document = parse_json(read_body())
    if not isinstance(document, list) or not all(isinstance(op, dict) for op in document):
        raise FhirError(
            Category.STRUCTURE, "A JSON Patch document is an array of operation objects (RFC 6902)"
        )
    return document


def _apply(current: dict[str, Any], document: list[dict[str, Any]]) -> dict[str, Any]:
    try:
        patched = jsonpatch.JsonPatch(document).apply(current)
    except jsonpatch.InvalidJsonPatch as exc:
        raise FhirError(Category.STRUCTURE, f"Invalid JSON Patch: {exc}") from exc
    except (
        jsonpatch.JsonPatchConflict,
        jsonpatch.JsonPatchTestFailed,
        jsonpointer.JsonPointerException,
    ) as exc:
        # R4 http.html#patch: a patch that cannot be applied is 422.
        raise FhirError(Category.UNPROCESSABLE, f"JSON Patch cannot be applied: {exc}") from exc
    if not isinstance(patched, dict):
        raise FhirError(Category.UNPROCESSABLE, "JSON Patch must leave a resource (a JSON object)")
    return patched


def patch(resource_type: str, res_id: str) -> Response:
    check_type(resource_type, write=True)
    access.require(resource_type, "u")
    document = _patch_document()
    if_match = parse_etag(request.headers.get("If-Match"), "If-Match")
    svc = services()
    with svc.repo.writing() as conn:
        current = svc.repo.current(conn, resource_type, res_id)
        if current is None:
            raise FhirError(Category.NOT_FOUND, f"{resource_type}/{res_id} is not known")
        if current.deleted:
            raise FhirError(Category.DELETED, f"{resource_type}/{res_id} was deleted")
        access.check_stored(conn, current)  # 403 before anything is revealed, the version included
        check_if_match(if_match, current)
        patched = _apply(current.json(), document)
        if patched.get("resourceType") != resource_type or patched.get("id") != res_id:
            raise FhirError(Category.UNPROCESSABLE, "A patch may not change the resourceType or id")
        body = validate_resource(patched, resource_type)
        body = writes.run_update_hooks(conn, svc, access.principal(), resource_type, res_id, body, current)
        stored, _created = svc.repo.update(conn, resource_type, res_id, body, current.version, method="PATCH")
        stored = svc.repo.latest(conn, stored)
    return write_response(WriteResult(200, stored))
