"""What create, update, delete and transaction share: body parsing, criteria, responses."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qsl

from flask import Response
from sqlalchemy.engine import Connection

from coordination_api.errors import Category, FhirError, Issue, operation_outcome
from coordination_api.fhir import access
from coordination_api.fhir.context import Services, WriteResult
from coordination_api.fhir.resources import parse_json, validate_resource
from coordination_api.search.executor import run_search
from coordination_api.storage.repository import Stored
from coordination_api.web.http import (
    base_url,
    check_content_type,
    fhir_json_response,
    prefer,
    read_body,
    version_headers,
)


def request_resource(resource_type: str) -> dict[str, Any]:
    """The validated resource in the request body."""
    check_content_type()
    return validate_resource(parse_json(read_body()), resource_type)


def parse_criteria(criteria: str) -> list[tuple[str, str]]:
    text = criteria.split("?", 1)[1] if "?" in criteria else criteria
    params = parse_qsl(text, keep_blank_values=True)
    if not params:
        raise FhirError(Category.INVALID, f"Conditional criteria '{criteria}' has no search parameters")
    return params


def criteria_hash(resource_type: str, params: list[tuple[str, str]]) -> str:
    canonical = "&".join(f"{k}={v}" for k, v in sorted(params))
    return hashlib.sha256(f"{resource_type}?{canonical}".encode()).hexdigest()


def find_matches(
    conn: Connection, svc: Services, resource_type: str, params: list[tuple[str, str]], limit: int = 2
) -> list[Stored]:
    """Resources matching conditional criteria (unknown parameters are an error here), among those
    the caller may see: a conditional create, update, delete or reference answers alike whether or not
    data out of the caller's reach matches (issue 16: no existence oracle)."""
    query = svc.compiler.compile(resource_type, params, strict=True, hop_guard=access.hop_guard)
    query.count = limit
    query.total = "none"
    query.includes, query.revincludes = [], []
    access.secure(query)
    return run_search(conn, svc.repo, query).matches


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
