"""What the create, update and delete adapters share: the request body, criteria, the response."""

from __future__ import annotations

from typing import Any

from flask import Response, request

from coordination_api.core.services import WriteResult
from coordination_api.errors import Issue, operation_outcome
from coordination_api.fhir.resources import parse_json
from coordination_api.web.http import (
    base_url,
    check_content_type,
    fhir_json_response,
    prefer,
    read_body,
    version_headers,
)


def request_json() -> Any:
    """The request body, decoded (core validates it as a resource)."""
    check_content_type()
    return parse_json(read_body())


def request_criteria() -> list[tuple[str, str]]:
    """Conditional update and delete: the search criteria in the query string."""
    return [(k, v) for k, v in request.args.items(multi=True) if k not in {"_format", "_pretty"}]


def write_response(result: WriteResult) -> Response:
    """Honour Prefer: return=minimal|representation|OperationOutcome (R4 http.html#ops)."""
    stored = result.stored
    headers: dict[str, str] = {}
    if stored is not None and not stored.deleted:
        headers.update(version_headers(stored.version, stored.last_updated))
        if result.status == 201:
            headers["Location"] = result.location(base_url()) or ""
    mode = prefer("return") or "representation"
    if mode == "minimal" or stored is None or stored.deleted:
        if result.outcome is not None and mode == "operationoutcome":
            return fhir_json_response(result.outcome, result.status, headers)
        return fhir_json_response(None, result.status, headers)
    if mode == "operationoutcome":
        outcome = result.outcome or operation_outcome(
            [
                Issue(
                    "information",
                    "informational",
                    f"{stored.res_type}/{stored.res_id} version {stored.version}",
                )
            ]
        )
        return fhir_json_response(outcome, result.status, headers)
    return fhir_json_response(stored.content, result.status, headers)
