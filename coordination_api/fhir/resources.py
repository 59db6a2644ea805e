"""Resource types we serve and body parsing/validation with fhir.resources (R4B models).

R4 (4.0.1) and R4B (4.3.0) share the element names of the types in scope; the few
differences are listed as data in ``fhir_profiles/data/r4-compat.json`` and refused here.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

import fhir_profiles
from coordination_api.errors import Category, FhirError, Issue

# Resource types that are not stored (R4 http.html: Parameters and OperationOutcome are not persisted).
NOT_STORED = {"Parameters", "OperationOutcome"}


@cache
def supported_types() -> frozenset[str]:
    """R4 resource types whose R4B model matches R4, minus the non-persistent ones."""
    compat = fhir_profiles.r4_compat()
    return frozenset(compat["r4_resource_types"]) - NOT_STORED


@cache
def _r4b_only_types() -> frozenset[str]:
    return frozenset(fhir_profiles.r4_compat().get("r4b_only_types", []))


@cache
def _r4b_only_paths() -> dict[str, tuple[tuple[str, ...], ...]]:
    raw: dict[str, list[str]] = fhir_profiles.r4_compat().get("r4b_only_elements", {})
    return {t: tuple(tuple(p.split(".")[1:]) for p in paths) for t, paths in raw.items()}


def is_r4_type(resource_type: str) -> bool:
    return resource_type in supported_types() or resource_type in NOT_STORED


def check_type(resource_type: str) -> None:
    """Unknown or non-R4 types in the URL are 404 (R4 http.html#2.21.0.2: unsupported type)."""
    if resource_type in supported_types():
        return
    if resource_type in _r4b_only_types():
        raise FhirError(Category.NOT_FOUND, f"Resource type '{resource_type}' is not part of FHIR R4")
    raise FhirError(Category.NOT_FOUND, f"Unknown or unsupported resource type '{resource_type}'")


def parse_json(body: bytes) -> Any:
    """Decode a JSON body; syntax errors are 400 structure."""
    if not body:
        raise FhirError(Category.INVALID, "Request body is empty; a FHIR resource was expected")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FhirError(Category.STRUCTURE, f"Body is not valid JSON: {exc}") from exc


def _present(node: Any, path: tuple[str, ...]) -> bool:
    if not path:
        return True
    if isinstance(node, list):
        return any(_present(item, path) for item in node)
    if not isinstance(node, dict):
        return False
    head, rest = path[0], path[1:]
    return any(key in node and _present(node[key], rest) for key in (head, "_" + head))


def _check_r4b_only(resource: dict[str, Any], expression_root: str) -> None:
    resource_type = resource.get("resourceType", "")
    for path in _r4b_only_paths().get(resource_type, ()):
        if _present(resource, path):
            element = ".".join((resource_type, *path))
            raise FhirError(
                Category.STRUCTURE,
                f"Element '{element}' is not part of FHIR R4 (it exists only in R4B)",
                expression=f"{expression_root}.{'.'.join(path)}",
            )
    for index, contained in enumerate(resource.get("contained", []) or []):
        if isinstance(contained, dict):
            _check_r4b_only(contained, f"{expression_root}.contained[{index}]")


def _expression(root: str, loc: tuple[int | str, ...]) -> str:
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part and not str(part).startswith("function-"):
            out += f".{part}"
    return out


def _message(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    loc = error.get("loc", ())
    name = loc[-1] if loc else "?"
    if kind == "extra_forbidden":
        return f"Unknown element '{name}'"
    if kind == "missing":
        return f"Missing required element '{name}'"
    return str(error.get("msg", "invalid value"))


def validate_resource(
    resource: Any, expected_type: str | None = None, root: str | None = None
) -> dict[str, Any]:
    """Check a decoded resource against its R4 structure; returns it unchanged (JSON dict)."""
    if not isinstance(resource, dict):
        raise FhirError(Category.STRUCTURE, "A FHIR resource must be a JSON object")
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise FhirError(Category.REQUIRED, "Missing 'resourceType'", expression=root or "Resource")
    if expected_type is not None and resource_type != expected_type:
        raise FhirError(
            Category.INVALID,
            f"Body resourceType '{resource_type}' does not match the URL type '{expected_type}'",
            expression=root or resource_type,
        )
    if not is_r4_type(resource_type):
        raise FhirError(
            Category.NOT_SUPPORTED,
            f"Unknown or non-R4 resource type '{resource_type}'",
            expression=root or resource_type,
        )
    root = root or resource_type
    _check_r4b_only(resource, root)
    try:
        model = get_fhir_model_class(resource_type)
        model.model_validate(resource)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        issues = [
            Issue(
                "error",
                "structure" if e.get("type") == "extra_forbidden" else "value",
                _message(dict(e)),
                [_expression(root, tuple(e.get("loc", ())))],
            )
            for e in errors[:20]
        ]
        raise FhirError(Category.STRUCTURE, issues[0].diagnostics, issues=issues) from exc
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        # fhir.resources raises KeyError for an unknown resourceType nested in a Bundle/contained.
        raise FhirError(
            Category.STRUCTURE,
            f"Invalid resource content: unknown or malformed element ({exc})",
            expression=root,
        ) from exc
    for index, entry in enumerate(resource.get("entry", []) if resource_type == "Bundle" else []):
        inner = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(inner, dict):
            _check_r4b_only(inner, f"{root}.entry[{index}].resource")
    return resource
