"""The body of an operation invoked by POST: a Parameters resource (R4 operations.html#request)."""

from __future__ import annotations

from typing import Any

from flask import request

from coordination_api.errors import Category, FhirError
from coordination_api.fhir.resources import parse_json, validate_resource
from coordination_api.web.http import check_content_type, read_body


def parameters_body() -> list[dict[str, Any]]:
    """The ``parameter`` entries of a POSTed Parameters body, validated; [] when there is no body."""
    if request.method != "POST" or not request.get_data(cache=True):
        return []
    check_content_type()
    body = parse_json(read_body())
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(Category.INVALID, "The body of an operation must be a Parameters resource")
    validate_resource(body, "Parameters")
    return [param for param in body.get("parameter") or [] if isinstance(param, dict)]


def primitive_value(param: dict[str, Any]) -> Any:
    """The ``value[x]`` of a parameter, or None."""
    return next((v for k, v in param.items() if k.startswith("value")), None)
