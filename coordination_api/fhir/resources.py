"""A request body as a resource: JSON parsing within the configured depth; the validation itself is
framework-free and lives in core/validation.py (re-exported here for the HTTP adapters)."""

from __future__ import annotations

from typing import Any

import orjson

from coordination_api.core.validation import (
    NOT_STORED,
    READ_ONLY_TYPES,
    SERVER_WRITTEN_TYPES,
    check_operation_type,
    check_type,
    enforce_base,
    narrative_issues,
    supported_types,
    validate_resource,
)
from coordination_api.errors import Category, FhirError
from coordination_api.web.http import check_depth, max_json_depth, too_deep

__all__ = [
    "NOT_STORED",
    "READ_ONLY_TYPES",
    "SERVER_WRITTEN_TYPES",
    "check_operation_type",
    "check_type",
    "enforce_base",
    "narrative_issues",
    "parse_json",
    "supported_types",
    "validate_resource",
]

UTF8_BOM = b"\xef\xbb\xbf"


def parse_json(body: bytes) -> Any:
    """Decode a JSON body; syntax errors are 400 structure. A leading UTF-8 byte order mark is
    ignored (RFC 8259 section 8.1 lets a parser ignore it)."""
    body = body.removeprefix(UTF8_BOM)
    if not body:
        raise FhirError(Category.INVALID, "Request body is empty; a FHIR resource was expected")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc):  # beyond orjson's own limit (1024 levels)
            raise too_deep(max_json_depth()) from exc
        raise FhirError(Category.STRUCTURE, f"Body is not valid JSON: {exc}") from exc
    check_depth(data, max_json_depth())
    return data
