"""Profile validation against StructureDefinition differentials (R4 profiling.html), our own code.

fhir.resources checks the base R4 structure; this layer adds what profiles say: cardinality,
types (choice restrictions, reference targets, extension profiles), fixed[x]/pattern[x], slicing
(value/pattern discriminators, open/closed), required bindings (extensible/preferred: warnings),
extension URLs and contexts, and FHIRPath invariants (fhirpathpy, compiled once). mustSupport is
not a validation rule. Every finding is returned, each with the FHIRPath of its element.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fhirpathpy
from fhirpathpy.models import models as fhirpath_models

from fhir_profiles import r4_compat
from fhir_profiles.conformance import Conformance
from fhir_profiles.issues import ValidationIssue
from fhir_profiles.native_invariants import native_check

log = logging.getLogger(__name__)

FHIR_BASE = "http://hl7.org/fhir/StructureDefinition/"
_INFINITE = 10**9


@dataclass
class Invariant:
    key: str
    severity: str
    human: str
    expression: str
    check: Callable[[Any], Any]


@dataclass
class Node:
    """Constraints on one element of a profile, with its children and named slices."""

    name: str
    min: int | None = None
    max: int | None = None
    fixed: Any = None
    pattern: Any = None
    binding: tuple[str, str] | None = None
    types: list[dict[str, Any]] | None = None
    invariants: list[Invariant] = field(default_factory=list)
    slicing: dict[str, Any] | None = None
    children: dict[str, Node] = field(default_factory=dict)
    slices: dict[str, Node] = field(default_factory=dict)


def _segments(element_id: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for part in element_id.split(".")[1:]:
        name, _, slice_name = part.partition(":")
        out.append((name, slice_name.split("/")[0] or None))
    return out


def _typed_value(element: dict[str, Any], prefix: str) -> Any:
    for key, value in element.items():
        if key.startswith(prefix) and len(key) > len(prefix) and key[len(prefix)].isupper():
            return value
    return None


def _compile_invariant(raw: dict[str, Any]) -> Invariant | None:
    expression = raw.get("expression")
    if not isinstance(expression, str):
        return None
    native = native_check(str(raw.get("key", "")))
    if native is not None:
        return Invariant(
            str(raw["key"]), str(raw.get("severity", "error")), str(raw.get("human", "")), expression, native
        )
    try:
        compiled = fhirpathpy.compile(expression, model=fhirpath_models["r4"])
    except Exception as exc:  # noqa: BLE001 - fhirpathpy raises bare exceptions on parse errors
        log.warning("invariant %s not compiled: %s", raw.get("key"), exc)
        return None
    return Invariant(
        key=str(raw.get("key", "")),
        severity=str(raw.get("severity", "error")),
        human=str(raw.get("human", "")),
        expression=expression,
        check=lambda node: compiled(node, None),
    )


@dataclass
class Profile:
    url: str
    type: str
    root: Node
    context: list[str]
    base: str | None


def compile_profile(definition: dict[str, Any], bases: list[dict[str, Any]] | None = None) -> Profile:
    """One constraint tree for a profile, its base profiles' differentials applied first."""
    root = Node(definition.get("type", ""))
    for layer in [*(bases or []), definition]:
        for element in layer.get("differential", {}).get("element", []):
            _apply(root, element)
    context = [str(c.get("expression")) for c in definition.get("context", []) if c.get("expression")]
    return Profile(
        url=definition["url"],
        type=str(definition.get("type", "")),
        root=root,
        context=context,
        base=definition.get("baseDefinition"),
    )


def _apply(root: Node, element: dict[str, Any]) -> None:
    element_id = element.get("id") or element.get("path", "")
    node = root
    for name, slice_name in _segments(element_id):
        node = node.children.setdefault(name, Node(name))
        if slice_name:
            node = node.slices.setdefault(slice_name, Node(name))
    if "min" in element:
        node.min = int(element["min"])
    if "max" in element:
        node.max = _INFINITE if element["max"] == "*" else int(element["max"])
    fixed, pattern = _typed_value(element, "fixed"), _typed_value(element, "pattern")
    if fixed is not None:
        node.fixed = fixed
    if pattern is not None:
        node.pattern = pattern
    binding = element.get("binding")
    if isinstance(binding, dict) and binding.get("valueSet"):
        node.binding = (str(binding.get("strength", "example")), str(binding["valueSet"]).split("|")[0])
    if element.get("type"):
        node.types = element["type"]
    if element.get("slicing"):
        node.slicing = element["slicing"]
    for raw in element.get("constraint", []):
        invariant = _compile_invariant(raw)
        if invariant and all(i.key != invariant.key for i in node.invariants):
            node.invariants.append(invariant)


def _values(parent: dict[str, Any], name: str) -> list[tuple[str, Any]]:
    """(json key, value) pairs of an element; ``value[x]`` finds valueCoding, valueString…"""
    if name.endswith("[x]"):
        stem = name[:-3]
        found = [
            (k, v)
            for k, v in parent.items()
            if k.startswith(stem) and len(k) > len(stem) and k[len(stem)].isupper()
        ]
    else:
        found = [(name, parent[name])] if name in parent else []
    out: list[tuple[str, Any]] = []
    for key, value in found:
        if isinstance(value, list):
            out.extend((key, item) for item in value)
        else:
            out.append((key, value))
    return out


def matches_pattern(value: Any, pattern: Any) -> bool:
    """R4 ElementDefinition.pattern[x]: every element of the pattern is present with that value."""
    if isinstance(pattern, dict):
        if not isinstance(value, dict):
            return False
        return all(k in value and matches_pattern(value[k], v) for k, v in pattern.items())
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(matches_pattern(item, p) for item in items) for p in pattern)
    return bool(value == pattern)


def _at(parent_expr: str, key: str, index: int | None) -> str:
    return f"{parent_expr}.{key}" + (f"[{index}]" if index is not None else "")


class Validator:
    """Validates resources against the profiles a :class:`Conformance` holds."""

    def __init__(self, conformance: Conformance) -> None:
        self.conformance = conformance
        self._compiled: dict[str, Profile] = {}

    def profile(self, url: str) -> Profile | None:
        url = url.split("|")[0]
        if url not in self._compiled:
            definition = self.conformance.structure_definitions.get(url)
            if definition is None:
                return None
            self._compiled[url] = compile_profile(definition, self._bases(definition))
        return self._compiled[url]

    def _bases(self, definition: dict[str, Any]) -> list[dict[str, Any]]:
        """The profiles ``definition`` derives from, most general first (FHIR core types excluded)."""
        chain: list[dict[str, Any]] = []
        base = definition.get("baseDefinition")
        while isinstance(base, str) and not base.startswith(FHIR_BASE):
            parent = self.conformance.structure_definitions.get(base.split("|")[0])
            if parent is None or parent in chain:
                break
            chain.insert(0, parent)
            base = parent.get("baseDefinition")
        return chain

    def validate(
        self, resource: dict[str, Any], profiles: list[str], root: str | None = None
    ) -> list[ValidationIssue]:
        root = root or str(resource.get("resourceType", "Resource"))
        issues: list[ValidationIssue] = []
        seen: set[str] = set()
        for url in profiles:
            profile = self.profile(url)
            if profile is not None and profile.url not in seen:
                seen.add(profile.url)
                if profile.type and profile.type != resource.get("resourceType"):
                    issues.append(
                        ValidationIssue(
                            "error", "invalid", f"Profile {profile.url} is for {profile.type} resources", root
                        )
                    )
                    continue
                self._element(profile.root, resource, root, issues)
        self._known_extensions(resource, root, str(resource.get("resourceType", "")), issues)
        return _dedupe(issues)

    # -- one element ----------------------------------------------------------------------------

    def _element(self, node: Node, value: Any, expr: str, issues: list[ValidationIssue]) -> None:
        """Checks on one instance value of an element, then its children."""
        if node.fixed is not None and value != node.fixed:
            issues.append(
                ValidationIssue("error", "value", f"Value must be exactly {_show(node.fixed)}", expr)
            )
        if node.pattern is not None and not matches_pattern(value, node.pattern):
            issues.append(
                ValidationIssue("error", "value", f"Value must match the pattern {_show(node.pattern)}", expr)
            )
        if node.binding is not None:
            self._binding(node.binding, value, expr, issues)
        for invariant in node.invariants:
            self._invariant(invariant, value, expr, issues)
        if isinstance(value, dict):
            for name, child in node.children.items():
                self._child(child, value, name, expr, issues)

    def _child(
        self, node: Node, parent: dict[str, Any], name: str, expr: str, issues: list[ValidationIssue]
    ) -> None:
        values = _values(parent, name)
        is_list = bool(values) and isinstance(parent.get(values[0][0]), list)
        self._cardinality(node, len(values), f"{expr}.{name}", issues)
        if node.types is not None and name.endswith("[x]"):
            allowed = {str(t.get("code", "")).lower() for t in node.types}
            stem = name[:-3]
            for key, _ in values:
                if key[len(stem) :].lower() not in allowed:
                    issues.append(
                        ValidationIssue(
                            "error",
                            "structure",
                            f"Type {key[len(stem) :]} is not allowed here ({', '.join(sorted(allowed))})",
                            f"{expr}.{key}",
                        )
                    )
        assigned = self._slices(node, values, expr, is_list, issues) if node.slices else {}
        for index, (key, value) in enumerate(values):
            where = _at(expr, key, index if is_list else None)
            self._element(node, value, where, issues)
            self._types(node, value, where, issues)
            slice_node = assigned.get(index)
            if slice_node is not None:
                self._element(slice_node, value, where, issues)
                self._types(slice_node, value, where, issues)

    def _cardinality(self, node: Node, count: int, expr: str, issues: list[ValidationIssue]) -> None:
        if node.min is not None and count < node.min:
            issues.append(
                ValidationIssue(
                    "error", "required", f"{expr} needs at least {node.min} value(s), found {count}", expr
                )
            )
        if node.max is not None and count > node.max:
            limit = "no value" if node.max == 0 else f"at most {node.max} value(s)"
            issues.append(
                ValidationIssue("error", "structure", f"{expr} allows {limit}, found {count}", expr)
            )

    def _types(self, node: Node, value: Any, expr: str, issues: list[ValidationIssue]) -> None:
        if not node.types or not isinstance(value, dict):
            return
        for type_ in node.types:
            code = type_.get("code")
            if code == "Extension" and type_.get("profile"):
                for url in type_["profile"]:
                    extension = self.profile(url)
                    if extension is not None and value.get("url") == extension.url:
                        self._element(extension.root, value, expr, issues)
            elif code == "Reference" and type_.get("targetProfile"):
                self._reference_target(type_["targetProfile"], value, expr, issues)

    def _reference_target(
        self, targets: list[str], value: dict[str, Any], expr: str, issues: list[ValidationIssue]
    ) -> None:
        reference = value.get("reference")
        if not isinstance(reference, str) or reference.startswith("#") or "/" not in reference:
            return
        segments = reference.split("/_history/")[0].split("/")
        target_type = value.get("type") or (segments[-2] if len(segments) >= 2 else None)
        allowed = set()
        for url in targets:
            profile = self.profile(url)
            allowed.add(profile.type if profile else url.split("|")[0].rsplit("/", 1)[-1])
        if target_type and "Resource" not in allowed and target_type not in allowed:
            issues.append(
                ValidationIssue(
                    "error",
                    "structure",
                    f"Reference to {target_type} is not allowed here ({', '.join(sorted(allowed))})",
                    f"{expr}.reference",
                )
            )

    # -- slicing --------------------------------------------------------------------------------

    def _slices(
        self,
        node: Node,
        values: list[tuple[str, Any]],
        expr: str,
        is_list: bool,
        issues: list[ValidationIssue],
    ) -> dict[int, Node]:
        slicing = node.slicing or {}
        discriminators = slicing.get("discriminator", [])
        assigned: dict[int, Node] = {}
        counts = dict.fromkeys(node.slices, 0)
        for index, (key, value) in enumerate(values):
            for slice_name, slice_node in node.slices.items():
                if self._in_slice(slice_node, discriminators, value):
                    assigned[index] = slice_node
                    counts[slice_name] += 1
                    break
            else:
                if slicing.get("rules") == "closed":
                    issues.append(
                        ValidationIssue(
                            "error",
                            "structure",
                            f"This {node.name} matches none of the allowed slices ({', '.join(node.slices)})",
                            _at(expr, key, index if is_list else None),
                        )
                    )
        for slice_name, slice_node in node.slices.items():
            where = f"{expr}.{node.name}"
            if slice_node.min is not None and counts[slice_name] < slice_node.min:
                issues.append(
                    ValidationIssue(
                        "error",
                        "required",
                        f"Slice '{slice_name}' of {node.name} needs at least {slice_node.min} value(s), "
                        f"found {counts[slice_name]}",
                        where,
                    )
                )
            if slice_node.max is not None and counts[slice_name] > slice_node.max:
                issues.append(
                    ValidationIssue(
                        "error",
                        "structure",
                        f"Slice '{slice_name}' of {node.name} allows at most {slice_node.max} value(s), "
                        f"found {counts[slice_name]}",
                        where,
                    )
                )
        return assigned

    def _in_slice(self, slice_node: Node, discriminators: list[dict[str, Any]], value: Any) -> bool:
        if not discriminators:
            return False
        for discriminator in discriminators:
            kind, path = discriminator.get("type"), str(discriminator.get("path", "$this"))
            expected = self._slice_value(slice_node, path)
            actual = _path_values(value, path)
            if kind == "exists":
                wanted = not (expected is None and slice_node.max == 0)
                if bool(actual) != wanted:
                    return False
                continue
            if expected is None:
                return False
            # value/pattern: the slice's fixed[x] or pattern[x] (R4 profiling.html#discriminator).
            if kind in {"value", "pattern"} and not any(matches_pattern(a, expected) for a in actual):
                return False
            if kind not in {"value", "pattern"}:
                return False
        return True

    def _slice_value(self, slice_node: Node, path: str) -> Any:
        if path == "url" and "url" not in slice_node.children and slice_node.types:
            # Extension slices: the url is the canonical of the extension profile (R4 profiling.html#slicing).
            for type_ in slice_node.types:
                for url in type_.get("profile", []):
                    return url.split("|")[0]
        node: Node | None = slice_node
        if path not in {"$this", ""}:
            for name in path.split("."):
                node = node.children.get(name) if node else None
        if node is None:
            return None
        if node.fixed is not None:
            return node.fixed
        if node.pattern is not None:
            return node.pattern
        return None

    # -- bindings, invariants, extensions ----------------------------------------------------------

    def _binding(
        self, binding: tuple[str, str], value: Any, expr: str, issues: list[ValidationIssue]
    ) -> None:
        strength, value_set = binding
        if strength not in {"required", "extensible", "preferred"}:
            return
        allowed = self.conformance.codes(value_set)
        if allowed is None:
            return
        codings = _codings(value)
        if not codings:
            return
        plain_codes = {code for _system, code in allowed}
        for system, code in codings:
            # A bare code (type code) carries no system: the value set's codes decide.
            if (system, code) in allowed or (system is None and code in plain_codes):
                return
        shown = ", ".join(f"{s}|{c}" if s else str(c) for s, c in codings)
        severity = "error" if strength == "required" else "warning"
        issues.append(
            ValidationIssue(
                severity, "code-invalid", f"Code {shown} is not in the {strength} value set {value_set}", expr
            )
        )

    def _invariant(self, invariant: Invariant, value: Any, expr: str, issues: list[ValidationIssue]) -> None:
        try:
            result = invariant.check(value)
        except Exception as exc:  # noqa: BLE001 - fhirpathpy raises bare exceptions while evaluating
            issues.append(
                ValidationIssue(
                    "warning", "invariant", f"Invariant {invariant.key} could not be evaluated: {exc}", expr
                )
            )
            return
        if result in ([], [True]) or result is True:
            return
        severity = "error" if invariant.severity == "error" else "warning"
        issues.append(
            ValidationIssue(
                severity, "invariant", f"Constraint {invariant.key} failed: {invariant.human}", expr
            )
        )

    def _known_extensions(self, node: Any, expr: str, host: str, issues: list[ValidationIssue]) -> None:
        """Extensions whose definition we ship are checked wherever they appear, context included."""
        if isinstance(node, list):
            for index, item in enumerate(node):
                self._known_extensions(item, f"{expr}[{index}]", host, issues)
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key in {"extension", "modifierExtension"}:
                items = value if isinstance(value, list) else [value]
                for index, extension in enumerate(items):
                    if isinstance(extension, dict):
                        self._extension(extension, f"{expr}.{key}[{index}]", host, issues)
            elif isinstance(value, dict | list) and key != "contained":
                child_host = f"{host}.{key[1:] if key.startswith('_') else key}"
                self._known_extensions(value, f"{expr}.{key}", child_host, issues)

    def _extension(
        self, extension: dict[str, Any], expr: str, host: str, issues: list[ValidationIssue]
    ) -> None:
        url = extension.get("url")
        profile = self.profile(url) if isinstance(url, str) else None
        if profile is None or profile.type != "Extension":
            return
        if profile.context and not any(_context_allows(c, host) for c in profile.context):
            issues.append(
                ValidationIssue(
                    "error",
                    "structure",
                    f"Extension {url} is not allowed on {host} (contexts: {', '.join(profile.context)})",
                    expr,
                )
            )
        self._element(profile.root, extension, expr, issues)


def _context_allows(context: str, host: str) -> bool:
    """R4 StructureDefinition.context (type element): the element path the extension may sit on."""
    if context in {"Element", "Resource", "DomainResource", "BackboneElement"} or host == context:
        return True
    # A data type context (e.g. "Address", "HumanName") cannot be checked from the JSON path alone.
    return "." not in context and context not in r4_resource_types()


def r4_resource_types() -> frozenset[str]:
    return frozenset(r4_compat()["r4_resource_types"])


def _path_values(value: Any, path: str) -> list[Any]:
    if path in {"$this", ""}:
        return [value]
    nodes = [value]
    for name in path.split("."):
        found: list[Any] = []
        for node in nodes:
            if isinstance(node, dict) and name in node:
                child = node[name]
                found.extend(child if isinstance(child, list) else [child])
        nodes = found
    return nodes


def _codings(value: Any) -> list[tuple[str | None, str]]:
    if isinstance(value, str):
        return [(None, value)]
    if not isinstance(value, dict):
        return []
    if "coding" in value:
        return [
            (c.get("system"), str(c.get("code")))
            for c in value["coding"]
            if isinstance(c, dict) and c.get("code")
        ]
    if "code" in value:
        return [(value.get("system"), str(value["code"]))]
    return []


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _dedupe(issues: list[ValidationIssue]) -> list[ValidationIssue]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for issue in issues:
        key = (issue.severity, issue.diagnostics, issue.expression)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out
