"""Profile validation against StructureDefinition differentials (R4 profiling.html), our own code.

fhir.resources checks the base R4 structure; this layer adds what profiles say: cardinality,
types (choice restrictions, reference targets, extension and data-type profiles), fixed[x] /
pattern[x], slicing (value/pattern/exists discriminators, open/closed, extensions implicitly by
url), required bindings (extensible/preferred: warnings), extension URLs and contexts, and FHIRPath
invariants (fhirpathpy, compiled once; one that cannot be compiled or evaluated is a warning).
mustSupport is not a validation rule. Every finding is returned, each with the FHIRPath of its
element (JSON names for choice values, e.g. ``Patient.extension[0].valueCoding``).

A Validator is shared between requests: per-call state lives in a ``_Run``, never on ``self``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import fhirpathpy
from antlr4 import CommonTokenStream, InputStream  # type: ignore[import-untyped]
from antlr4.error.ErrorListener import ErrorListener  # type: ignore[import-untyped]
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models as fhirpath_models
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from fhir_profiles import fhirpath_safety, r4_compat
from fhir_profiles.conformance import Conformance
from fhir_profiles.issues import ValidationIssue
from fhir_profiles.native_invariants import native_check

log = logging.getLogger(__name__)

FHIR_BASE = "http://hl7.org/fhir/StructureDefinition/"
_INFINITE = 10**9
_R4_MODEL: dict[str, Any] = fhirpath_models["r4"]
_PRIMITIVE_TYPES = [
    "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id", "instant",
    "integer", "markdown", "oid", "positiveInt", "string", "time", "unsignedInt", "uri", "url", "uuid",
    "xhtml",
]  # fmt: skip
_PRIMITIVES = {t.lower(): t for t in _PRIMITIVE_TYPES}
# Extensions are always sliced by url (R4 extensibility.html), whether or not the profile says so.
_EXTENSION_SLICING: dict[str, Any] = {"discriminator": [{"type": "value", "path": "url"}], "rules": "open"}
_GENERIC_CONTEXTS = {"Element", "Base"}


@dataclass
class Invariant:
    key: str
    severity: str
    human: str
    expression: str
    check: Callable[[Any, dict[str, Any]], Any]


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


class _RaiseOnSyntaxError(ErrorListener):  # type: ignore[misc]
    def syntaxError(self, recognizer: Any, symbol: Any, line: int, column: int, msg: str, e: Any) -> None:  # noqa: N802
        raise ValueError(f"column {column}: {msg}")


def syntax_error(expression: str) -> str | None:
    """Why a FHIRPath expression does not parse, or None.

    fhirpathpy's parser recovers from syntax errors silently (``gender = = 'male'`` compiles and
    yields false), so invariants are parsed here first with the same grammar, errors raised.
    """
    listener = _RaiseOnSyntaxError()
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    try:
        parser.entireExpression()  # type: ignore[no-untyped-call]
    except Exception as exc:  # noqa: BLE001 - the lexer raises antlr exceptions of its own
        return str(exc) or type(exc).__name__
    return None


def _compile_invariant(raw: dict[str, Any]) -> Invariant | None:
    expression = raw.get("expression")
    if not isinstance(expression, str):
        return None
    check: Callable[[Any, dict[str, Any]], Any]
    native = native_check(str(raw.get("key", "")))
    if native is not None:
        # Our shipped invariants, in Python (fhirpathpy costs 0.5-2 ms each): same results.

        def check(node: Any, env: dict[str, Any]) -> Any:
            return native(node)

        return Invariant(
            str(raw["key"]), str(raw.get("severity", "error")), str(raw.get("human", "")), expression, check
        )
    try:
        error = syntax_error(expression)
        if error:
            raise ValueError(error)
        # Regex functions with a timeout: the pattern is ours, the string is the caller's.
        compiled = fhirpathpy.compile(expression, model=_R4_MODEL, options=fhirpath_safety.OPTIONS)
    except Exception as exc:  # noqa: BLE001 - fhirpathpy raises bare exceptions on parse errors
        log.warning("invariant %s not compiled: %s", raw.get("key"), exc)
        reason = f"the expression does not compile ({exc})"

        def check(node: Any, env: dict[str, Any]) -> Any:
            raise ValueError(reason)

    else:

        def check(node: Any, env: dict[str, Any]) -> Any:
            return compiled(node, env)

    return Invariant(
        key=str(raw.get("key", "")),
        severity=str(raw.get("severity", "error")),
        human=str(raw.get("human", "")),
        expression=expression,
        check=check,
    )


@dataclass
class Profile:
    url: str
    type: str
    root: Node
    context: list[str]
    base: str | None
    # (type, expression) of StructureDefinition.context: element | fhirpath | extension.
    contexts: list[tuple[str, str]] = field(default_factory=list)


def compile_profile(definition: dict[str, Any], bases: list[dict[str, Any]] | None = None) -> Profile:
    """One constraint tree for a profile, its base profiles' differentials applied first."""
    root = Node(definition.get("type", ""))
    for layer in [*(bases or []), definition]:
        for element in layer.get("differential", {}).get("element", []):
            _apply(root, element)
    contexts = [
        (str(c.get("type") or "element"), str(c["expression"]))
        for c in definition.get("context", [])
        if isinstance(c, dict) and c.get("expression")
    ]
    return Profile(
        url=definition["url"],
        type=str(definition.get("type", "")),
        root=root,
        context=[expression for _, expression in contexts],
        base=definition.get("baseDefinition"),
        contexts=contexts,
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


def _stem(name: str) -> str:
    return name[:-3] if name.endswith("[x]") else name


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


def _count(parent: dict[str, Any], name: str, values: list[tuple[str, Any]]) -> int:
    """Occurrences for cardinality: a primitive given only by its ``_name`` extensions is present."""
    shadow = parent.get(f"_{name}")
    if values or name.endswith("[x]") or shadow is None:
        return len(values)
    items = shadow if isinstance(shadow, list) else [shadow]
    return sum(1 for item in items if item is not None)


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


def _type_code(node: Node, name: str, key: str) -> str | None:
    """The data type of one value: from its JSON name for a choice, else the element's only type."""
    if name.endswith("[x]"):
        suffix = key[len(name) - 3 :]
        for type_ in node.types or []:
            if str(type_.get("code", "")).lower() == suffix.lower():
                return str(type_["code"])
        return _PRIMITIVES.get(suffix.lower(), suffix)
    if node.types and len(node.types) == 1 and node.types[0].get("code"):
        return str(node.types[0]["code"])
    return None


_MISSING = object()


def _dig(value: Any, names: list[str]) -> Any:
    """The part of a fixed/pattern value at a discriminator path (lists of one item unwrapped)."""
    current = _walk(value, names)
    if not current:
        return _MISSING
    return current[0] if len(current) == 1 else current


@dataclass
class _Run:
    """One validation call: the resource (``%resource`` for invariants) and the findings so far."""

    resource: dict[str, Any]
    issues: list[ValidationIssue] = field(default_factory=list)
    # (id of an extension instance, extension url) already validated against that definition.
    extensions_done: set[tuple[int, str]] = field(default_factory=set)

    def first_time(self, extension: dict[str, Any], url: str) -> bool:
        key = (id(extension), url)
        if key in self.extensions_done:
            return False
        self.extensions_done.add(key)
        return True

    def add(self, severity: str, code: str, diagnostics: str, expression: str) -> None:
        self.issues.append(ValidationIssue(severity, code, diagnostics, expression))


@dataclass(frozen=True)
class _Host:
    """Where an extension sits: the element path, its data types, and the enclosing extension."""

    path: str
    model_path: str  # path for the fhirpathpy R4 model lookups (restarts at each named type)
    types: frozenset[str] | None  # None when the model does not know the element
    extension_url: str | None = None


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
        """The profiles ``definition`` derives from, most general first.

        Every base we hold is walked, whatever its canonical (profiles published under
        hl7.org/fhir such as vitalsigns included); the walk stops at a base we do not hold or at a
        specialization (a core type definition).
        """
        chain: list[dict[str, Any]] = []
        seen = {str(definition.get("url"))}
        base = definition.get("baseDefinition")
        while isinstance(base, str):
            url = base.split("|")[0]
            parent = self.conformance.structure_definitions.get(url)
            if parent is None or url in seen or parent.get("derivation") == "specialization":
                break
            seen.add(url)
            chain.insert(0, parent)
            base = parent.get("baseDefinition")
        return chain

    def validate(
        self, resource: dict[str, Any], profiles: list[str], root: str | None = None
    ) -> list[ValidationIssue]:
        resource_type = str(resource.get("resourceType", "Resource"))
        root = root or resource_type
        run = _Run(resource)
        seen: set[str] = set()
        for url in profiles:
            profile = self.profile(url)
            if profile is not None and profile.url not in seen:
                seen.add(profile.url)
                if profile.type and profile.type != resource.get("resourceType"):
                    run.add(
                        "error", "invalid", f"Profile {profile.url} is for {profile.type} resources", root
                    )
                    continue
                self._element(profile.root, resource, root, run, resource_type)
        self._known_extensions(resource, root, _resource_host(resource_type), run)
        return _dedupe(run.issues)

    # -- one element ----------------------------------------------------------------------------

    def _element(self, node: Node, value: Any, expr: str, run: _Run, type_code: str | None) -> None:
        """Checks on one instance value of an element, then its children."""
        if node.fixed is not None and value != node.fixed:
            run.add("error", "value", f"Value must be exactly {_show(node.fixed)}", expr)
        if node.pattern is not None and not matches_pattern(value, node.pattern):
            run.add("error", "value", f"Value must match the pattern {_show(node.pattern)}", expr)
        if node.binding is not None:
            self._binding(node.binding, value, expr, run)
        for invariant in node.invariants:
            self._invariant(invariant, value, expr, run, type_code)
        if isinstance(value, dict):
            for name, child in node.children.items():
                self._child(child, value, name, expr, run)

    def _child(self, node: Node, parent: dict[str, Any], name: str, expr: str, run: _Run) -> None:
        values = _values(parent, name)
        is_list = bool(values) and isinstance(parent.get(values[0][0]), list)
        self._cardinality(node, _count(parent, name, values), f"{expr}.{_stem(name)}", run)
        if node.types is not None and name.endswith("[x]"):
            allowed = {str(t.get("code", "")).lower() for t in node.types}
            stem = name[:-3]
            for key, _ in values:
                if key[len(stem) :].lower() not in allowed:
                    run.add(
                        "error",
                        "structure",
                        f"Type {key[len(stem) :]} is not allowed here ({', '.join(sorted(allowed))})",
                        f"{expr}.{key}",
                    )
        sliced = bool(node.slices) or node.slicing is not None
        assigned = self._slices(node, values, expr, is_list, run) if sliced else {}
        for index, (key, value) in enumerate(values):
            if value is None:
                continue  # a list item given only by its extensions ("_given": [null, {…}])
            where = _at(expr, key, index if is_list else None)
            type_code = _type_code(node, name, key)
            self._element(node, value, where, run, type_code)
            self._types(node, value, where, run, type_code)
            slice_node = assigned.get(index)
            if slice_node is not None:
                slice_type = _type_code(slice_node, name, key) if slice_node.types else type_code
                self._element(slice_node, value, where, run, slice_type)
                self._types(slice_node, value, where, run, slice_type)

    def _cardinality(self, node: Node, count: int, expr: str, run: _Run) -> None:
        if node.min is not None and count < node.min:
            run.add("error", "required", f"{expr} needs at least {node.min} value(s), found {count}", expr)
        if node.max is not None and count > node.max:
            limit = "no value" if node.max == 0 else f"at most {node.max} value(s)"
            run.add("error", "structure", f"{expr} allows {limit}, found {count}", expr)

    def _types(self, node: Node, value: Any, expr: str, run: _Run, type_code: str | None) -> None:
        """Profiles of the value's own type: extension, data type and reference target profiles."""
        if not node.types or not isinstance(value, dict):
            return
        for type_ in node.types:
            code = str(type_.get("code", ""))
            if type_code and code.lower() != type_code.lower():
                continue  # another type of a choice
            if code == "Extension" and type_.get("profile"):
                for url in type_["profile"]:
                    extension = self.profile(url)
                    if (
                        extension is not None
                        and value.get("url") == extension.url
                        and run.first_time(value, extension.url)
                    ):
                        self._element(extension.root, value, expr, run, "Extension")
            elif code == "Reference":
                if type_.get("targetProfile"):
                    self._reference_target(type_["targetProfile"], value, expr, run)
            elif type_.get("profile"):
                self._data_type_profiles(code, type_["profile"], value, expr, run)

    def _data_type_profiles(
        self, code: str, urls: list[str], value: dict[str, Any], expr: str, run: _Run
    ) -> None:
        """The value conforms to one of the profiles (R4 ElementDefinition.type.profile)."""
        attempts: list[_Run] = []
        for url in urls:
            profile = self.profile(url)
            if profile is None or (profile.type and profile.type != code):
                continue
            attempt = _Run(run.resource, extensions_done=set(run.extensions_done))
            self._element(profile.root, value, expr, attempt, code)
            attempts.append(attempt)
            if not any(i.is_error for i in attempt.issues):
                break
        else:
            if not attempts:
                return
            attempt = attempts[0]  # none conforms: report against the first profile
        run.issues.extend(attempt.issues)
        run.extensions_done |= attempt.extensions_done

    def _reference_target(self, targets: list[str], value: dict[str, Any], expr: str, run: _Run) -> None:
        allowed = set()
        for url in targets:
            profile = self.profile(url)
            target = profile.type if profile else url.split("|")[0].rsplit("/", 1)[-1]
            if target not in r4_resource_types() and target != "Resource":
                return  # a profile we do not hold: its resource type is unknown here
            allowed.add(target)
        if "Resource" in allowed:
            return
        found: list[tuple[str, str]] = []
        reference = value.get("reference")
        if isinstance(reference, str):
            target_type = _reference_type(reference)
            if target_type:
                found.append((target_type, f"{expr}.reference"))
        declared = value.get("type")
        if isinstance(declared, str) and declared:
            found.append((declared.rsplit("/", 1)[-1], f"{expr}.type"))
        for target_type, where in found:
            if target_type not in allowed:
                run.add(
                    "error",
                    "structure",
                    f"Reference to {target_type} is not allowed here ({', '.join(sorted(allowed))})",
                    where,
                )

    # -- slicing --------------------------------------------------------------------------------

    def _slices(
        self,
        node: Node,
        values: list[tuple[str, Any]],
        expr: str,
        is_list: bool,
        run: _Run,
    ) -> dict[int, Node]:
        slicing = node.slicing
        if slicing is None and node.name in {"extension", "modifierExtension"}:
            slicing = _EXTENSION_SLICING
        slicing = slicing or {}
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
                    names = ", ".join(node.slices) or "none"
                    run.add(
                        "error",
                        "structure",
                        f"This {_stem(node.name)} matches none of the allowed slices ({names})",
                        _at(expr, key, index if is_list else None),
                    )
        where = f"{expr}.{_stem(node.name)}"
        for slice_name, slice_node in node.slices.items():
            if slice_node.min is not None and counts[slice_name] < slice_node.min:
                run.add(
                    "error",
                    "required",
                    f"Slice '{slice_name}' of {_stem(node.name)} needs at least {slice_node.min} value(s), "
                    f"found {counts[slice_name]}",
                    where,
                )
            if slice_node.max is not None and counts[slice_name] > slice_node.max:
                run.add(
                    "error",
                    "structure",
                    f"Slice '{slice_name}' of {_stem(node.name)} allows at most {slice_node.max} value(s), "
                    f"found {counts[slice_name]}",
                    where,
                )
        return assigned

    def _in_slice(self, slice_node: Node, discriminators: list[dict[str, Any]], value: Any) -> bool:
        if not discriminators:
            return False
        for discriminator in discriminators:
            kind, path = discriminator.get("type"), str(discriminator.get("path", "$this"))
            actual = _path_values(value, path)
            if kind == "exists":
                target = _node_at(slice_node, path)
                if target is None or (target.max != 0 and not (target.min or 0) >= 1):
                    return False  # the slice does not say whether the element exists
                if bool(actual) != (target.max != 0):
                    return False
                continue
            if kind not in {"value", "pattern"}:
                return False  # type / profile discriminators are not evaluated here
            expected = self._slice_value(slice_node, path)
            # value/pattern: the slice's fixed[x] or pattern[x] (R4 profiling.html#discriminator).
            if expected is _MISSING or not any(matches_pattern(a, expected) for a in actual):
                return False
        return True

    def _slice_value(self, slice_node: Node, path: str) -> Any:
        """The slice's fixed/pattern value at the discriminator path, or _MISSING."""
        if path == "url" and "url" not in slice_node.children and slice_node.types:
            # Extension slices: the url is the canonical of the extension profile (R4 profiling.html#slicing).
            for type_ in slice_node.types:
                for url in type_.get("profile", []):
                    return url.split("|")[0]
        names = [] if path in {"$this", ""} else path.split(".")
        node = slice_node
        for index, name in enumerate(names):
            child = node.children.get(name)
            if child is None:
                # The discriminator reaches inside a fixed/pattern value (e.g. type.coding.code).
                outer = node.fixed if node.fixed is not None else node.pattern
                return _MISSING if outer is None else _dig(outer, names[index:])
            node = child
        if node.fixed is not None:
            return node.fixed
        if node.pattern is not None:
            return node.pattern
        return _MISSING

    # -- bindings, invariants ---------------------------------------------------------------------

    def _binding(self, binding: tuple[str, str], value: Any, expr: str, run: _Run) -> None:
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
        run.add(
            severity, "code-invalid", f"Code {shown} is not in the {strength} value set {value_set}", expr
        )

    def _invariant(
        self, invariant: Invariant, value: Any, expr: str, run: _Run, type_code: str | None
    ) -> None:
        node = value
        if type_code and not (isinstance(value, dict) and "resourceType" in value):
            node = ResourceNode.create_node(value, type_code)  # type: ignore[no-untyped-call]
        env = {"resource": run.resource, "rootResource": run.resource}
        try:
            result = invariant.check(node, env)
        except fhirpath_safety.ExpressionLimitError as exc:
            run.add("warning", "invariant", f"Invariant {invariant.key} could not be evaluated: {exc}", expr)
            return
        except Exception as exc:  # noqa: BLE001 - fhirpathpy raises bare exceptions while evaluating
            run.add("warning", "invariant", f"Invariant {invariant.key} could not be evaluated: {exc}", expr)
            return
        if result in ([], [True]) or result is True:
            return
        if result not in ([False], False):
            run.add(
                "warning",
                "invariant",
                f"Invariant {invariant.key} did not evaluate to a boolean: {_show(result)}",
                expr,
            )
            return
        severity = "error" if invariant.severity == "error" else "warning"
        run.add(severity, "invariant", f"Constraint {invariant.key} failed: {invariant.human}", expr)

    # -- extensions wherever they are -------------------------------------------------------------

    def _known_extensions(self, node: Any, expr: str, host: _Host, run: _Run) -> None:
        """Extensions whose definition we ship are checked wherever they appear, context included."""
        if isinstance(node, list):
            for index, item in enumerate(node):
                self._known_extensions(item, f"{expr}[{index}]", host, run)
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key in {"extension", "modifierExtension"}:
                items = value if isinstance(value, list) else [value]
                for index, extension in enumerate(items):
                    if isinstance(extension, dict):
                        where = f"{expr}.{key}[{index}]" if isinstance(value, list) else f"{expr}.{key}"
                        self._extension(extension, where, host, run)
                        self._known_extensions(extension, where, _extension_host(host, extension), run)
            elif isinstance(value, dict | list):
                self._inline(key, value, f"{expr}.{key}", host, run)

    def _inline(self, key: str, value: Any, expr: str, host: _Host, run: _Run) -> None:
        """Descend into an element; an inline resource (contained, entry.resource) is its own host."""
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            where = f"{expr}[{index}]" if isinstance(value, list) else expr
            if isinstance(item, dict) and isinstance(item.get("resourceType"), str):
                self._known_extensions(item, where, _resource_host(item["resourceType"]), run)
            elif isinstance(item, dict | list):
                self._known_extensions(item, where, _child_host(host, key), run)

    def _extension(self, extension: dict[str, Any], expr: str, host: _Host, run: _Run) -> None:
        url = extension.get("url")
        profile = self.profile(url) if isinstance(url, str) else None
        if profile is None or profile.type != "Extension":
            return
        if profile.contexts and not any(_context_allows(kind, c, host) for kind, c in profile.contexts):
            run.add(
                "error",
                "structure",
                f"Extension {url} is not allowed on {host.path} (contexts: {', '.join(profile.context)})",
                expr,
            )
        if run.first_time(extension, profile.url):
            self._element(profile.root, extension, expr, run, "Extension")


# -- extension hosts and contexts -------------------------------------------------------------------


@cache
def _ancestors(type_name: str) -> frozenset[str]:
    parents = _R4_MODEL["type2Parent"]
    out = {type_name}
    while parents.get(type_name):
        type_name = parents[type_name]
        out.add(type_name)
    return frozenset(out)


def _resource_host(resource_type: str) -> _Host:
    return _Host(resource_type, resource_type, _ancestors(resource_type))


def _extension_host(host: _Host, extension: dict[str, Any]) -> _Host:
    url = extension.get("url")
    return _Host(
        f"{host.path}.extension", "Extension", _ancestors("Extension"), url if isinstance(url, str) else None
    )


def _child_host(host: _Host, key: str) -> _Host:
    """The host of ``key`` under ``host`` (``_birthDate`` is the birthDate element's extensions)."""
    name = key[1:] if key.startswith("_") else key
    path = f"{host.path}.{name}"
    if host.types is None:
        return _Host(path, path, None)
    model_path = f"{host.model_path}.{name}"
    model_path = _R4_MODEL["pathsDefinedElsewhere"].get(model_path, model_path)
    named = _R4_MODEL["path2Type"].get(model_path)
    if named in {"BackboneElement", "Element"} or (named is None and _is_backbone(model_path)):
        return _Host(path, model_path, _ancestors("BackboneElement"))
    if named is None:
        return _Host(path, model_path, None)
    return _Host(path, named, _ancestors(named))


def _is_backbone(model_path: str) -> bool:
    """A path the model knows only through its children (Patient.contact, Bundle.entry…)."""
    return model_path in _model_parents()


@cache
def _model_parents() -> frozenset[str]:
    return frozenset(path.rsplit(".", 1)[0] for path in _R4_MODEL["path2Type"] if "." in path)


def _context_allows(kind: str, context: str, host: _Host) -> bool:
    """R4 StructureDefinition.context: element (a type or an element path), extension, fhirpath."""
    if kind == "fhirpath":
        return True  # arbitrary FHIRPath contexts are not evaluated here
    if kind == "extension":
        return host.extension_url == context.split("|")[0]
    if context in _GENERIC_CONTEXTS or context == host.path:
        return True
    if context.endswith("[x]") and host.path.startswith(context[:-3]):
        rest = host.path[len(context) - 3 :]
        return bool(rest) and rest[0].isupper() and "." not in rest
    if host.types is None:
        # The element's type is unknown here: only a resource-type context can be refused.
        return "." not in context and context not in r4_resource_types()
    return context in host.types


@cache
def r4_resource_types() -> frozenset[str]:
    return frozenset(r4_compat()["r4_resource_types"])


# -- helpers ----------------------------------------------------------------------------------------


def _node_at(node: Node, path: str) -> Node | None:
    current: Node | None = node
    if path not in {"$this", ""}:
        for name in path.split("."):
            current = current.children.get(name) if current else None
    return current


def _reference_type(reference: str) -> str | None:
    """The resource type a literal or conditional reference points to (None: cannot tell)."""
    if not reference or reference.startswith(("#", "urn:")):
        return None
    if "?" in reference:
        candidate = reference.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    else:
        segments = reference.split("/_history/")[0].rstrip("/").split("/")
        candidate = segments[-2] if len(segments) >= 2 else ""
    return candidate if candidate in r4_resource_types() else None


def _path_values(value: Any, path: str) -> list[Any]:
    if path in {"$this", ""}:
        return [value]
    return _walk(value, path.split("."))


def _walk(value: Any, names: list[str]) -> list[Any]:
    """The values at a dotted element path, list elements flattened."""
    nodes = [value]
    for name in names:
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
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
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


# R4 datatypes.html#string: "Strings SHOULD not contain Unicode character points below 32, except for
# u0009 (horizontal tab), u0010 (carriage return) and u0013 (line feed)" (regex [ \r\n\t\S]+). We
# refuse them on every write: an ESC or NUL stored in a name or a note reaches terminals, HL7 v2
# messages and PDFs downstream.
_FORBIDDEN_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def control_character(resource: Any, root: str) -> tuple[str, int] | None:
    """(FHIRPath of the first string holding a forbidden control character, its code point), or None.

    Iterative (the body's depth is bounded before this runs, but no recursion is needed anyway)."""
    stack: list[tuple[Any, str]] = [(resource, root)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            found = _FORBIDDEN_CONTROL.search(node)
            if found:
                return path, ord(found.group())
        elif isinstance(node, dict):
            for key, value in node.items():
                found = _FORBIDDEN_CONTROL.search(key)
                if found:
                    return f"{path}.{key!r}", ord(found.group())
                if key == "resourceType":
                    continue
                stack.append((value, f"{path}.{key}"))
        elif isinstance(node, list):
            stack.extend((value, f"{path}[{index}]") for index, value in enumerate(node))
    return None
