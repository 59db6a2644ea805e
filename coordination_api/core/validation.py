"""Resource types we serve and resource validation with fhir.resources (R4B models).

R4 (4.0.1) and R4B (4.3.0) share the element names of the types in scope; the few
differences are listed as data in ``fhir_profiles/data/r4-compat.json`` and refused here.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from pydantic import ValidationError

import fhir_profiles
from coordination_api.core import json_types
from coordination_api.core.elements import resource_model
from coordination_api.core.profiles import enforce, to_issue
from coordination_api.errors import Category, FhirError, Issue
from fhir_profiles import base_rules
from fhir_profiles.narrative import check_narrative
from fhir_profiles.validator import control_character

log = logging.getLogger(__name__)

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


def warm() -> None:
    """Load what validating a first resource of each type would (the core definitions, the
    terminology, every resource model): ``serve`` runs it before forking its HTTP workers, so that
    no request after a (re)start waits seconds for them (issue 21) and the workers share the pages."""
    base_rules.index()
    for resource_type in sorted(supported_types()):
        resource_model(resource_type)
    base_rules.expanded("http://hl7.org/fhir/ValueSet/administrative-gender")  # the terminology


def is_r4_type(resource_type: str) -> bool:
    return resource_type in supported_types() or resource_type in NOT_STORED


def check_known_type(resource_type: str) -> None:
    """Unknown or non-R4 types in the URL are 404 (R4 http.html#2.21.0.2: unsupported type); the
    non-persisted types are 405 (no REST interaction reaches them, only operations)."""
    if resource_type in supported_types():
        return
    if resource_type in NOT_STORED:
        raise FhirError(
            Category.METHOD_NOT_ALLOWED,
            f"{resource_type} resources are never stored (R4 http.html: Parameters and OperationOutcome "
            "are not persisted); they are operation inputs and outputs, e.g. "
            f"POST [base]/{resource_type}/$validate",
            # RFC 9110 section 10.2.1: an empty Allow says the target allows no method.
            headers={"Allow": ""},
        )
    if resource_type in _r4b_only_types():
        raise FhirError(Category.NOT_FOUND, f"Resource type '{resource_type}' is not part of FHIR R4")
    raise FhirError(Category.NOT_FOUND, f"Unknown or unsupported resource type '{resource_type}'")


# Conformance artefacts are shipped data (fhir_profiles), loaded by ``coordination db upgrade``.
READ_ONLY_TYPES = frozenset({"StructureDefinition", "ValueSet", "CodeSystem", "SearchParameter"})
# The audit trail is written by the server only, never through the API (tamper-evidence).
SERVER_WRITTEN_TYPES = frozenset({"AuditEvent"})


def check_operation_type(resource_type: str) -> None:
    """A type-level operation (``$validate``) also takes the non-persisted types (R4 parameters.html)."""
    if resource_type not in NOT_STORED:
        check_known_type(resource_type)


def check_type(resource_type: str, *, write: bool) -> None:
    """Like :func:`check_known_type`; writes to the read-only conformance types are 405."""
    check_known_type(resource_type)
    if write and resource_type in READ_ONLY_TYPES:
        raise FhirError(
            Category.METHOD_NOT_ALLOWED,
            f"{resource_type} resources are read-only: they are the server's shipped conformance artefacts",
            headers={"Allow": "GET, HEAD"},
        )
    if write and resource_type in SERVER_WRITTEN_TYPES:
        raise FhirError(
            Category.METHOD_NOT_ALLOWED,
            f"{resource_type} resources are written by the server's audit trail only",
            headers={"Allow": "GET, HEAD"},
        )


def _find(node: Any, path: tuple[str, ...], expression: str, repeat: str | None = None) -> str | None:
    """FHIRPath of the first element at ``path`` under ``node`` (JSON), or None.

    ``repeat`` follows recursive backbone elements (PlanDefinition.action.action…), and a
    primitive's extension sibling (``_subjectCanonical``) counts as the element being present.
    """
    if not path:
        return expression
    if isinstance(node, list):
        for index, item in enumerate(node):
            found = _find(item, path, f"{expression}[{index}]", repeat)
            if found:
                return found
        return None
    if not isinstance(node, dict):
        return None
    head, rest = path[0], path[1:]
    for key in (head, "_" + head):
        if key in node:
            found = _find(node[key], rest, f"{expression}.{head}", head)
            if found:
                return found
    if repeat and repeat in node:
        return _find(node[repeat], path, f"{expression}.{repeat}", repeat)
    return None


def _refuse_embedded_type(resource_type: Any, expression: str) -> None:
    if not isinstance(resource_type, str) or not resource_type:
        raise FhirError(Category.REQUIRED, "Missing 'resourceType'", expression=expression)
    if resource_type in _r4b_only_types():
        raise FhirError(
            Category.STRUCTURE,
            f"Resource type '{resource_type}' is not part of FHIR R4 (it exists only in R4B)",
            expression=expression,
        )
    if not is_r4_type(resource_type):
        raise FhirError(
            Category.STRUCTURE, f"Unknown or non-R4 resource type '{resource_type}'", expression=expression
        )


def _check_r4_only(node: Any, expression: str) -> None:
    """Refuse R4B-only content anywhere in a resource (r4-compat.json ``notes.path_conventions``).

    Every JSON object carrying ``resourceType`` is a resource (the root, ``contained``,
    ``Bundle.entry.resource``, ``Bundle.entry.response.outcome``, ``Parameters.parameter.resource``):
    its type must be R4 and its R4B-only elements absent. Extensions are checked at any depth.
    """
    if isinstance(node, list):
        for index, item in enumerate(node):
            _check_r4_only(item, f"{expression}[{index}]")
        return
    if not isinstance(node, dict):
        return
    if "resourceType" in node:
        resource_type = node["resourceType"]
        _refuse_embedded_type(resource_type, expression)
        for path in _r4b_only_paths().get(resource_type, ()):
            _refuse_element(node, path, expression, resource_type)
    for key, value in node.items():
        if key in {"extension", "modifierExtension"} and isinstance(value, list):
            for index, extension in enumerate(value):
                for path in _r4b_only_paths().get("Extension", ()):
                    _refuse_element(extension, path, f"{expression}.{key}[{index}]", "Extension")
        if isinstance(value, dict | list):
            _check_r4_only(value, f"{expression}.{key}")


def _refuse_element(node: Any, path: tuple[str, ...], expression: str, definition: str) -> None:
    found = _find(node, path, expression)
    if found:
        element = ".".join((definition, *path))
        raise FhirError(
            Category.STRUCTURE,
            f"Element '{element}' is not part of FHIR R4 (it exists only in R4B)",
            expression=found,
        )


def _expression(root: str, loc: tuple[int | str, ...]) -> str:
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part and part != "root" and not str(part).startswith("function-"):  # the models' own tags
            out += f".{part}"
    return out


def narrative_issues(node: Any, expression: str) -> list[Issue]:
    """txt-1/txt-2 findings of every ``text.div`` in a resource, its contained resources and any
    resource nested in it (Bundle entries, Parameters.parameter.resource)."""
    found: list[Issue] = []
    if isinstance(node, list):
        for index, item in enumerate(node):
            found += narrative_issues(item, f"{expression}[{index}]")
        return found
    if not isinstance(node, dict):
        return found
    text = node.get("text")
    if "resourceType" in node and isinstance(text, dict) and "div" in text:
        found += [to_issue(f) for f in check_narrative(text["div"], f"{expression}.text.div")]
    for key, value in node.items():
        if isinstance(value, dict | list):
            found += narrative_issues(value, f"{expression}.{key}")
    return found


def _refuse_narrative(resource: dict[str, Any], root: str) -> None:
    issues = narrative_issues(resource, root)
    if issues:
        raise FhirError(Category.UNPROCESSABLE, issues[0].diagnostics, issues=issues)


def enforce_base(
    resource: dict[str, Any],
    root: str,
    *,
    entry_resources: bool = True,
    ignore: frozenset[str] = frozenset(),
    skip: frozenset[str] = frozenset(),
) -> None:
    """Refuse, with every finding, a resource breaking a base R4 rule of the core definitions
    (R4 conformance-rules.html): 400 for empty elements, invalid ids, cardinality and codes outside a
    required binding (structure, as the model checks), else 422 for invariants."""
    findings = base_rules.check(resource, root, entry_resources=entry_resources, ignore=ignore, skip=skip)
    errors = [f for f in findings if f.is_error]
    if errors:
        issues = [to_issue(f) for f in sorted(findings, key=lambda f: not f.is_error)]
        invariants_only = all(f.code == "invariant" for f in errors)
        category = Category.UNPROCESSABLE if invariants_only else Category.STRUCTURE
        raise FhirError(category, issues[0].diagnostics, issues=issues)


def validate_resource(
    resource: Any,
    expected_type: str | None = None,
    root: str | None = None,
    *,
    profiles: bool = True,
    structure: bool = True,
    narrative: bool = True,
    base: bool = True,
) -> dict[str, Any]:
    """Check a decoded resource: R4 structure and the base R4 rules (unless the caller checked them
    already, e.g. as part of its Bundle), its narrative (txt-1, txt-2: 422), then French identifiers
    and claimed profiles (422). ``narrative=False`` leaves the narrative to the caller (``$validate``
    lists it with the rest)."""
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
    found = control_character(resource, root)
    if found is not None:
        path, point = found
        raise FhirError(
            Category.VALUE,
            f"{path}: strings may not contain control character U+{point:04X} (R4 datatypes.html#string: "
            "only TAB, CR and LF below U+0020)",
            expression=path,
        )
    if not structure:
        if profiles:
            enforce(resource, root)
        return resource
    _check_r4_only(resource, root)
    model = resource_model(resource_type)
    json_types.check_resource(resource, model, root)
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        issues = []
        for error in errors[:20]:
            loc = tuple(error.get("loc", ()))
            expression = _expression(root, loc)
            code = "structure" if error.get("type") == "extra_forbidden" else "value"
            element = json_types.element_at(resource, model, loc)
            message = json_types.explain(dict(error), expression, element)
            issues.append(Issue("error", code, message, [expression]))
        raise FhirError(Category.STRUCTURE, issues[0].diagnostics, issues=issues) from exc
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        # fhir.resources raises KeyError for an unknown resourceType nested in a Bundle/contained
        # (refused above with its path); this is the safety net, without the library's internals.
        log.info("model validation of %s failed: %r", root, type(exc).__name__)
        raise FhirError(
            Category.STRUCTURE,
            "Invalid resource content: an element is unknown or malformed",
            expression=root,
        ) from exc
    if narrative:
        _refuse_narrative(resource, root)
    if base:
        enforce_base(resource, root)
    if profiles:
        enforce(resource, root)
    return resource
