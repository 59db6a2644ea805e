"""Base FHIR R4 rules from the official core StructureDefinitions (``data/r4-core``, R4 4.0.1).

Every constraint of the snapshot element definitions of a resource type and of the data types it
uses is checked where its element is present (R4 conformance-rules.html#constraints), plus the rules
the definitions state outside FHIRPath: no empty arrays, objects or strings (``ele-1``; R4
json.html), ``Resource.id`` and contained ids per datatypes.html#id, and, for contained resources
and ``Bundle.entry.resource``, the same rules recursively (``dom-2``..``dom-5``). Best-practice
invariants (e.g. ``dom-6``) are not reported.

Cardinalities (min/max of every element, R4 conformance-rules.html#cardinality, json.html#arrays) and
required bindings of ``code``, ``Coding`` and ``CodeableConcept`` elements (terminologies.html#required)
are checked too, against the value sets the shipped core terminology expands (``r4_core``); a value
set it cannot expand (BCP 13 mime types, UCUM, ISO 4217) is not checked. The fhir.resources models
enforce the same cardinalities (tests/fhir_profiles/test_r4_cardinality.py) and run first on every path.

Cost: the invariants that fire on common content have a plain-Python version (:data:`NATIVE`);
those of the form ``a.empty() or b.exists() or …`` are evaluated on the JSON directly; the rest are
compiled once with fhirpathpy and evaluated only where their element is present.

This package imports nothing of ours (see ARCHITECTURE.md).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import fhirpathpy
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models as fhirpath_models

from fhir_profiles import fhirpath_safety, r4_core
from fhir_profiles.issues import ValidationIssue
from fhir_profiles.narrative import check_narrative

log = logging.getLogger(__name__)

_R4_MODEL: dict[str, Any] = fhirpath_models["r4"]
_SYSTEM = "http://hl7.org/fhirpath/System."
_FHIR_TYPE = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
_BEST_PRACTICE = "http://hl7.org/fhir/StructureDefinition/elementdefinition-bestpractice"
_CORE = "http://hl7.org/fhir/StructureDefinition/"
# R4 datatypes.html#id
ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_LIMITS = fhirpath_safety.ExpressionLimits()


@dataclass
class Context:
    """``%resource`` (the resource holding the element) and ``%rootResource`` (its container, for a
    contained resource) of FHIRPath R4 invariants (fhirpath.html#variables)."""

    resource: dict[str, Any]
    root_resource: dict[str, Any]


# A native check: True/False, or None when it cannot decide (the FHIRPath expression is then used).
NativeCheck = Callable[[Any, Context], bool | None]
# A check that reports its own issues: (value, FHIRPath of the value) -> issues.
ReportingCheck = Callable[[Any, str], list[ValidationIssue]]


@dataclass
class Rule:
    key: str
    severity: str
    human: str
    expression: str
    type_path: str  # the path fhirpathpy types the context with (``Period``, ``Questionnaire.item``)
    simple: Callable[[Any], bool | None] | None = None


@dataclass
class Child:
    """One JSON property of an element: its definition path, type and rules."""

    path: str
    type: str  # a FHIR type code: ``Period``, ``string``, ``Resource``, ``BackboneElement``…
    profile: str | None = None  # a core constraint profile of the type (SimpleQuantity)
    children_at: str | None = None  # backbone / contentReference: where its children are defined
    rules: list[Rule] = field(default_factory=list)
    min: int = 0
    max: int | None = 1  # None: unbounded ("*")
    binding: str | None = None  # ValueSet url of a required binding (code, Coding, CodeableConcept)


@dataclass(frozen=True)
class Binding:
    """A required binding's value set, expanded from the shipped core terminology."""

    url: str
    codes: frozenset[str]  # every code, for a ``code`` element (its system is implied)
    pairs: frozenset[tuple[str | None, str]]  # (system, code)
    systems: frozenset[str | None]


@dataclass
class Index:
    children: dict[str, dict[str, Child]]  # parent element path -> JSON name -> child
    choices: dict[str, dict[str, list[str]]]  # parent path -> choice stem -> JSON names
    type_rules: dict[str, list[Rule]]  # type name or constraint profile url -> root rules
    primitive: frozenset[str]
    resources: frozenset[str]
    # parent element path -> (definition path, JSON names) of each element with min >= 1
    required: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = field(default_factory=dict)


# -- loading ----------------------------------------------------------------------------------------


def _load_definitions() -> list[dict[str, Any]]:
    out = []
    for name in ("profiles-types", "profiles-resources"):
        for resource in r4_core.entries(r4_core.read(name)):
            if resource.get("resourceType") == "StructureDefinition" and resource.get("kind") != "logical":
                out.append(resource)
    return out


_BOUND_TYPES = frozenset({"code", "Coding", "CodeableConcept"})


def _cardinality(element: dict[str, Any]) -> tuple[int, int | None]:
    low = element.get("min", 0)
    high = str(element.get("max", "1"))
    return (low if isinstance(low, int) else 0), (None if high == "*" else int(high) if high.isdigit() else 1)


def _required_binding(element: dict[str, Any]) -> str | None:
    binding = element.get("binding")
    if not isinstance(binding, dict) or binding.get("strength") != "required":
        return None
    value_set = binding.get("valueSet")
    return value_set.split("|")[0] if isinstance(value_set, str) else None


def _type_code(type_: dict[str, Any]) -> str:
    code = str(type_.get("code", ""))
    if code.startswith(_SYSTEM):
        for extension in type_.get("extension", []):
            if extension.get("url") == _FHIR_TYPE:
                return str(extension.get("valueUrl") or extension.get("valueUri") or "string")
        return "string"
    return code


def _best_practice(constraint: dict[str, Any]) -> bool:
    return any(
        e.get("url") == _BEST_PRACTICE and e.get("valueBoolean") is True
        for e in constraint.get("extension", [])
    )


# Published R4 expressions that do not say what their text says, corrected as R4B/R5 did (the HL7
# validator applies the same corrections).
ERRATA = {
    # "If there are more than one enableWhen, enableBehavior must be specified" (R5 que-12: > 1).
    ("que-12", "enableWhen.count() > 2 implies enableBehavior.exists()"): (
        "enableWhen.count() > 1 implies enableBehavior.exists()"
    ),
}


def _rules(element: dict[str, Any], type_path: str) -> list[Rule]:
    out = []
    for raw in element.get("constraint", []):
        key = str(raw.get("key", ""))
        expression = raw.get("expression")
        if isinstance(expression, str):
            raw = {**raw, "expression": ERRATA.get((key, expression), expression)}
        if key in _HANDLED_BY_WALK or _best_practice(raw) or not isinstance(raw.get("expression"), str):
            continue
        out.append(
            Rule(
                key,
                str(raw.get("severity", "error")),
                str(raw.get("human", "")),
                raw["expression"],
                type_path,
            )
        )
    return out


@cache
def index() -> Index:
    """The core definitions, reduced to what validation needs (loaded once per process, ~1 s)."""
    definitions = _load_definitions()
    children: dict[str, dict[str, Child]] = {}
    choices: dict[str, dict[str, list[str]]] = {}
    type_rules: dict[str, list[Rule]] = {}
    primitive = frozenset(d["type"] for d in definitions if d.get("kind") == "primitive-type")
    resources = frozenset(d["type"] for d in definitions if d.get("kind") == "resource")
    elements_by_path: dict[str, dict[str, Any]] = {}
    required: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for definition in definitions:
        elements = definition.get("snapshot", {}).get("element", [])
        if not elements:
            continue
        if definition.get("derivation") == "constraint":
            # SimpleQuantity, MoneyQuantity: only their root rules (they hold the base type's too).
            type_rules[definition["url"]] = _rules(elements[0], definition["type"])
            continue
        type_rules[definition["type"]] = _rules(elements[0], definition["type"])
        for element in elements:
            elements_by_path[element["path"]] = element
    parents = {path.rsplit(".", 1)[0] for path in elements_by_path if "." in path}
    for path, element in elements_by_path.items():
        if "." not in path:
            continue
        parent, name = path.rsplit(".", 1)
        reference = element.get("contentReference")
        types = element.get("type") or []
        rules = _rules(element, path)
        low, high = _cardinality(element)
        bound = _required_binding(element)
        children_at = None
        if isinstance(reference, str):
            children_at = reference.lstrip("#")
            target = elements_by_path.get(children_at, {})
            rules = rules + [r for r in _rules(target, children_at) if r.key not in {x.key for x in rules}]
            for rule in rules:
                rule.type_path = children_at
            types = [{"code": "BackboneElement"}]
        elif path in parents:
            children_at = path
        slot = children.setdefault(parent, {})
        if name.endswith("[x]"):
            stem = name[:-3]
            keys = choices.setdefault(parent, {}).setdefault(stem, [])
            for type_ in types:
                code = _type_code(type_)
                key = stem + code[0].upper() + code[1:]
                keys.append(key)
                binding = bound if code in _BOUND_TYPES else None
                slot[key] = Child(path, code, _profile(type_), None, rules, low, high, binding)
            json_names = tuple(keys)
        else:
            type_ = types[0] if types else {"code": "BackboneElement"}
            code = _type_code(type_)
            if children_at is not None and code not in {"BackboneElement", "Element"}:
                children_at = None  # a typed element is walked with its type's definition
            binding = bound if code in _BOUND_TYPES else None
            slot[name] = Child(path, code, _profile(type_), children_at, rules, low, high, binding)
            json_names = (name,)
        if low >= 1:
            required.setdefault(parent, []).append((path, json_names))
    result = Index(
        children,
        choices,
        type_rules,
        primitive,
        resources,
        {parent: tuple(items) for parent, items in required.items()},
    )
    _compile_simple(result)
    return result


def _profile(type_: dict[str, Any]) -> str | None:
    for url in type_.get("profile", []) or []:
        if isinstance(url, str) and url.startswith(_CORE):
            return url.split("|")[0]
    return None


# -- simple invariants: "a.empty() or b.exists() or …" evaluated on the JSON -----------------------

_TERM = re.compile(
    r"^\(?([A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z][A-Za-z0-9]*)*)\.(empty\(\)|exists\(\)|exists\(\)\.not\(\)"
    r"|hasValue\(\)|hasValue\(\)\.not\(\))\)?$"
)


def _top_level(expression: str, word: str) -> list[str]:
    """``expression`` split on a top-level operator word (outside parentheses and literals)."""
    parts, depth, start, index, quote = [], 0, 0, 0, ""
    needle = f" {word} "
    while index < len(expression):
        char = expression[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "'`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0 and expression.startswith(needle, index):
            parts.append(expression[start:index])
            start = index + len(needle)
            index = start
            continue
        index += 1
    parts.append(expression[start:])
    return [p.strip() for p in parts]


def _resolve_keys(idx: Index, context: str, names: list[str]) -> list[list[str]] | None:
    """JSON names at each step of a dotted element path (choices expanded), or None if unknown."""
    out: list[list[str]] = []
    for name in names:
        slot = idx.children.get(context, {})
        if name in slot:
            child = slot[name]
            out.append([name])
        elif name in idx.choices.get(context, {}):
            keys = idx.choices[context][name]
            out.append(keys)
            child = slot[keys[0]]
            if len(keys) > 1:
                context = ""  # a choice of types: no further steps
                continue
        else:
            return None
        context = child.children_at or child.type
    return out


def _present(value: Any, steps: list[list[str]], *, with_value: bool = False) -> bool:
    nodes = [value]
    for position, keys in enumerate(steps):
        last = position == len(steps) - 1
        found: list[Any] = []
        for node in nodes:
            if not isinstance(node, dict):
                continue
            for key in keys:
                item = node.get(key)
                if item is not None:
                    found.extend(x for x in (item if isinstance(item, list) else [item]) if x is not None)
                elif last and not with_value and node.get("_" + key) is not None:
                    found.append(node["_" + key])
        nodes = found
        if not nodes:
            return False
    return True


def _simple(idx: Index, rule: Rule) -> Callable[[Any], bool | None] | None:
    expression = rule.expression.strip()
    if _top_level(expression, "implies")[1:] or _top_level(expression, "xor")[1:]:
        return None
    terms: list[tuple[list[list[str]], str]] = []
    partial = False
    for part in _top_level(expression, "or"):
        match = _TERM.match(part)
        steps = _resolve_keys(idx, rule.type_path, match.group(1).split(".")) if match else None
        if match is None or steps is None:
            partial = True
            continue
        terms.append((steps, match.group(2)))
    if not terms:
        return None

    def check(value: Any) -> bool | None:
        for steps, test in terms:
            if test.startswith("hasValue"):
                here = _present(value, steps, with_value=True)
            else:
                here = _present(value, steps)
            if here == (test in {"exists()", "hasValue()"}):
                return True
        return None if partial else False

    return check


def _compile_simple(idx: Index) -> None:
    seen: set[int] = set()
    for rules in [
        *idx.type_rules.values(),
        *(c.rules for slot in idx.children.values() for c in slot.values()),
    ]:
        for rule in rules:
            if id(rule) not in seen:
                seen.add(id(rule))
                rule.simple = _simple(idx, rule)


# -- native invariants ------------------------------------------------------------------------------

_DATE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def compare_dates(left: Any, right: Any) -> int | None:
    """-1/0/1 comparing two FHIR date/dateTime/instant strings, None when FHIRPath gives empty
    (different precisions equal as far as both go); ValueError when not compared here."""
    a = _DATE.match(left) if isinstance(left, str) else None
    b = _DATE.match(right) if isinstance(right, str) else None
    if a is None or b is None:
        raise ValueError("not a date")
    if a.group(6) and b.group(6) and a.group(8) and b.group(8):
        # Leap seconds (:60) and the ends of the calendar do not fit datetime: leave it to FHIRPath.
        try:
            x = datetime.fromisoformat(left.replace("Z", "+00:00"))
            y = datetime.fromisoformat(right.replace("Z", "+00:00"))
            return (x > y) - (x < y)
        except (ValueError, OverflowError):
            raise ValueError("not comparable here") from None
    if bool(a.group(8)) != bool(b.group(8)) and a.group(4) and b.group(4):
        raise ValueError("one has a time zone and not the other")
    xs = [g for g in a.groups()[:6] if g is not None]
    ys = [g for g in b.groups()[:6] if g is not None]
    for x_part, y_part in zip(xs, ys, strict=False):
        if x_part != y_part:
            return -1 if x_part < y_part else 1
    if len(xs) != len(ys):
        return None
    fx, fy = float(a.group(7) or 0), float(b.group(7) or 0)
    return (fx > fy) - (fx < fy)


def _in_order(value: Any, earlier: str, later: str, incomparable: bool | None) -> bool | None:
    """``earlier <= later`` on two date elements of ``value`` (true when either is absent);
    ``incomparable`` when FHIRPath's comparison is empty, None when FHIRPath decides."""
    if not isinstance(value, dict) or earlier not in value or later not in value:
        return True
    try:
        order = compare_dates(value[earlier], value[later])
    except ValueError:
        return None  # FHIRPath decides
    return incomparable if order is None else order <= 0


def _per_1(value: Any, ctx: Context) -> bool | None:
    """``start <= end``. Values of different precisions that agree as far as both go (``2023-06-21``
    and ``2023-06-21T06:20:00Z``) compare as empty in FHIRPath, which the HL7 validator counts as a
    failure; so do we."""
    return _in_order(value, "start", "end", incomparable=False)


def _task_inv_1(value: Any, ctx: Context) -> bool | None:
    """``lastModified >= authoredOn`` (compare_dates is antisymmetric); an empty comparison is left
    to FHIRPath."""
    return _in_order(value, "authoredOn", "lastModified", incomparable=None)


def _ext_1(value: Any, ctx: Context) -> bool | None:
    if not isinstance(value, dict):
        return True
    has_value = any(k.startswith("value") and len(k) > 5 and k[5].isupper() for k in value)
    return ("extension" in value) != has_value


def _contained(value: Any) -> list[dict[str, Any]]:
    items = value.get("contained") if isinstance(value, dict) else None
    return [c for c in items if isinstance(c, dict)] if isinstance(items, list) else []


def _dom_2(value: Any, ctx: Context) -> bool:
    return not any(c.get("contained") for c in _contained(value))


def _strings(node: Any, references: bool = False) -> Iterator[str]:
    """Every string under ``node`` (``references``: only ``reference`` values and ``#…`` strings)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key, item in current.items():
                if isinstance(item, str):
                    if not references or key == "reference" or item.startswith("#"):
                        yield item
                elif isinstance(item, dict | list):
                    stack.append(item)
        elif isinstance(current, list):
            for item in current:
                if isinstance(item, str):
                    if not references or item.startswith("#"):
                        yield item
                elif isinstance(item, dict | list):
                    stack.append(item)


def _dom_3(value: Any, ctx: Context) -> bool:
    contained = _contained(value)
    if not contained:
        return True
    referenced = set(_strings(value, references=True))
    for resource in contained:
        if f"#{resource.get('id')}" in referenced:
            continue
        if "#" in set(_strings(resource, references=True)):
            continue  # it points back to its container
        return False
    return True


def _dom_4(value: Any, ctx: Context) -> bool:
    for resource in _contained(value):
        meta = resource.get("meta")
        if isinstance(meta, dict) and ("versionId" in meta or "lastUpdated" in meta):
            return False
    return True


def _dom_5(value: Any, ctx: Context) -> bool:
    return not any(isinstance(c.get("meta"), dict) and c["meta"].get("security") for c in _contained(value))


def _ref_1(value: Any, ctx: Context) -> bool:
    reference = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(reference, str) or not reference.startswith("#") or reference == "#":
        return True  # "#" is the container itself (R4 references.html#contained)
    return reference[1:] in {c.get("id") for c in _contained(ctx.root_resource)}


def _codings(value: Any) -> list[Any]:
    items = value.get("coding") if isinstance(value, dict) else None
    return items if isinstance(items, list) else []


def _que_12(value: Any, ctx: Context) -> bool:
    conditions = value.get("enableWhen") if isinstance(value, dict) else None
    return not (isinstance(conditions, list) and len(conditions) > 1) or "enableBehavior" in value


def _obs_7(value: Any, ctx: Context) -> bool:
    if not isinstance(value, dict) or not any(k.startswith("value") and k[5:6].isupper() for k in value):
        return True
    own = _codings(value.get("code"))
    for component in value.get("component") or []:
        if isinstance(component, dict) and any(c in own for c in _codings(component.get("code"))):
            return False
    return True


def _entries(value: Any) -> list[dict[str, Any]]:
    items = value.get("entry") if isinstance(value, dict) else None
    return [e for e in items if isinstance(e, dict)] if isinstance(items, list) else []


def _bdl_1(value: Any, ctx: Context) -> bool:
    return "total" not in value or value.get("type") in {"searchset", "history"}


def _bdl_2(value: Any, ctx: Context) -> bool:
    return value.get("type") == "searchset" or not any("search" in e for e in _entries(value))


def _bdl_3(value: Any, ctx: Context) -> bool:
    expected = value.get("type") in {"batch", "transaction", "history"}
    return all(("request" in e) == expected for e in _entries(value))


def _bdl_4(value: Any, ctx: Context) -> bool:
    expected = value.get("type") in {"batch-response", "transaction-response", "history"}
    return all(("response" in e) == expected for e in _entries(value))


def _bdl_7(value: Any, ctx: Context) -> bool:
    if value.get("type") == "history":
        return True
    seen = set()
    for entry in _entries(value):
        if "fullUrl" not in entry:
            continue
        resource = entry.get("resource")
        meta = resource.get("meta") if isinstance(resource, dict) else None
        version = meta.get("versionId", "") if isinstance(meta, dict) else ""
        key = f"{entry['fullUrl']}{version}"
        if key in seen:
            return False
        seen.add(key)
    return True


def _first_resource_type(value: Any) -> Any:
    entries = _entries(value)
    resource = entries[0].get("resource") if entries else None
    return resource.get("resourceType") if isinstance(resource, dict) else None


def _bdl_9(value: Any, ctx: Context) -> bool:
    identifier = value.get("identifier")
    return value.get("type") != "document" or (
        isinstance(identifier, dict) and "system" in identifier and "value" in identifier
    )


def _bdl_10(value: Any, ctx: Context) -> bool:
    return value.get("type") != "document" or "timestamp" in value


def _bdl_11(value: Any, ctx: Context) -> bool:
    return value.get("type") != "document" or bool(_first_resource_type(value) == "Composition")


def _bdl_12(value: Any, ctx: Context) -> bool:
    return value.get("type") != "message" or bool(_first_resource_type(value) == "MessageHeader")


def _bdl_8(value: Any, ctx: Context) -> bool:
    full_url = value.get("fullUrl") if isinstance(value, dict) else None
    return not isinstance(full_url, str) or "/_history/" not in full_url


NATIVE: dict[str, NativeCheck] = {
    "ext-1": _ext_1,
    "dom-2": _dom_2,
    "dom-3": _dom_3,
    "dom-4": _dom_4,
    "dom-5": _dom_5,
    "per-1": _per_1,
    "ref-1": _ref_1,
    "obs-7": _obs_7,
    "que-12": _que_12,
    "bdl-1": _bdl_1,
    "bdl-2": _bdl_2,
    "bdl-3": _bdl_3,
    "bdl-4": _bdl_4,
    "bdl-7": _bdl_7,
    "bdl-8": _bdl_8,
    "bdl-9": _bdl_9,
    "bdl-10": _bdl_10,
    "bdl-11": _bdl_11,
    "bdl-12": _bdl_12,
}
# Keys shared by several definitions with different expressions: native only for this one.
_NATIVE_FOR = {"inv-1": ("Task", _task_inv_1)}


def _no_issues(value: Any, expression: str) -> list[ValidationIssue]:
    return []


# Checks that report their own issues, by key. txt-1/txt-2 are constraints on Narrative.div
# (R4 narrative.html, ``htmlChecks()``): the walk meets every Narrative (DomainResource.text,
# Composition.section.text at any depth, contained resources, Bundle entries) and check_narrative
# reports both keys from one parse.
REPORTING: dict[str, ReportingCheck] = {"txt-1": check_narrative, "txt-2": _no_issues}
# ele-1 is the walk's own check (every element, empty arrays/objects/strings).
_HANDLED_BY_WALK = {"ele-1"}


# -- FHIRPath fallback ------------------------------------------------------------------------------

# trace() (dom-3, ref-1, que-1) prints to stdout unless given a callback.
_OPTIONS: dict[str, Any] = {**fhirpath_safety.OPTIONS, "traceFn": lambda label, value: None}


@cache
def _compiled(expression: str) -> Callable[[Any, dict[str, Any]], Any] | None:
    try:
        function: Callable[[Any, dict[str, Any]], Any] = fhirpathpy.compile(
            expression, model=_R4_MODEL, options=_OPTIONS
        )
    except Exception as exc:  # noqa: BLE001 - fhirpathpy raises bare exceptions on parse errors
        log.warning("core invariant not compiled: %s", exc)
        return None
    return function


# -- the walk ---------------------------------------------------------------------------------------


@dataclass
class _Run:
    idx: Index
    entry_resources: bool = True
    ignore: frozenset[str] = frozenset()
    skip: frozenset[str] = frozenset()
    issues: list[ValidationIssue] = field(default_factory=list)

    def add(self, severity: str, code: str, diagnostics: str, expression: str) -> None:
        self.issues.append(ValidationIssue(severity, code, diagnostics, expression))


def check(
    resource: dict[str, Any],
    root: str | None = None,
    *,
    entry_resources: bool = True,
    ignore: frozenset[str] = frozenset(),
    skip: frozenset[str] = frozenset(),
) -> list[ValidationIssue]:
    """Every base R4 finding for ``resource`` (a JSON object with ``resourceType``).

    ``entry_resources=False`` skips ``Bundle.entry.resource`` (the caller validates them one by one);
    ``ignore``: invariant keys the caller checks itself; ``skip``: element definition paths (e.g.
    ``Bundle.entry.request`` of a batch) the caller checks itself, present but not walked.
    """
    idx = index()
    run = _Run(idx, entry_resources, ignore, skip)
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or resource_type not in idx.resources:
        return []
    _resource(run, resource, root or resource_type, None)
    return run.issues


def _resource(run: _Run, resource: dict[str, Any], where: str, container: dict[str, Any] | None) -> None:
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or resource_type not in run.idx.resources:
        return  # refused by the structure checks
    identifier = resource.get("id")
    if identifier is not None and not (isinstance(identifier, str) and ID_PATTERN.fullmatch(identifier)):
        shown = json.dumps(identifier)[:80]
        run.add(
            "error",
            "value",
            f"Invalid resource id {shown}: 1 to 64 characters A-Z a-z 0-9 - . (R4 datatypes.html#id)",
            f"{where}.id",
        )
    ctx = Context(resource, container if container is not None else resource)
    _rules_on(run, run.idx.type_rules.get(resource_type, []), resource, where, ctx)
    _children(run, resource, resource_type, where, ctx)


def _rules_on(run: _Run, rules: list[Rule], value: Any, where: str, ctx: Context) -> None:
    for rule in rules:
        if rule.key in run.ignore:
            continue
        reporting = REPORTING.get(rule.key)
        if reporting is not None:
            run.issues.extend(reporting(value, where))
            continue
        result: bool | None = None
        native = NATIVE.get(rule.key)
        special = _NATIVE_FOR.get(rule.key)
        if special is not None and rule.type_path == special[0]:
            native = special[1]
        if native is not None:
            result = native(value, ctx)
        if result is None and rule.simple is not None:
            result = rule.simple(value)
        if result is None:
            result = _evaluate(run, rule, value, where, ctx)
            if result is None:
                continue
        if not result:
            severity = "error" if rule.severity == "error" else "warning"
            run.add(severity, "invariant", f"{rule.key}: {rule.human}", where)


def _evaluate(run: _Run, rule: Rule, value: Any, where: str, ctx: Context) -> bool | None:
    function = _compiled(rule.expression)
    if function is None:
        return None
    node = value
    if not (isinstance(value, dict) and "resourceType" in value):
        node = ResourceNode.create_node(value, rule.type_path)  # type: ignore[no-untyped-call]
    env = {"resource": ctx.resource, "rootResource": ctx.root_resource}
    try:
        result = fhirpath_safety.bounded(lambda: function(node, env), _LIMITS)
    except (Exception, fhirpath_safety.ExpressionLimitError) as exc:  # noqa: BLE001 - fhirpathpy raises bare exceptions
        run.add("warning", "invariant", f"{rule.key} could not be evaluated: {exc}", where)
        return None
    if result in ([], [True]) or result is True:
        return True
    if result in ([False], False):
        return False
    run.add("warning", "invariant", f"{rule.key} did not evaluate to a boolean", where)
    return None


_EMPTY = "ele-1: All FHIR elements must have a @value or children"


def _children(run: _Run, node: dict[str, Any], path: str, where: str, ctx: Context) -> None:
    slot = run.idx.children.get(path, {})
    for key, value in node.items():
        if key == "resourceType":
            continue
        shadow = key.startswith("_")
        child = slot.get(key[1:] if shadow else key)
        if child is not None and child.path in run.skip:
            continue
        at = f"{where}.{key[1:] if shadow else key}"
        if isinstance(value, list):
            if not value:
                run.add("error", "structure", f"{_EMPTY} (an array may not be empty: omit the element)", at)
                continue
            if child is not None and not shadow:
                _cardinality_of_array(run, child, len(value), at)
            items: list[tuple[str, Any]] = [(f"{at}[{i}]", v) for i, v in enumerate(value)]
        else:
            if child is not None and not shadow and child.max != 1 and value is not None:
                _cardinality_of_single(run, child, at)
            items = [(at, value)]
        for item_at, item in items:
            if item is None:
                continue
            if shadow:
                _element(run, item, item_at)
                continue
            if child is None:
                _unknown(run, item, item_at)
                continue
            _value(run, child, item, item_at, ctx)
    for definition, keys in run.idx.required.get(path, ()):
        # A primitive present only through its ``_name`` extensions counts (R4 json.html#primitive).
        if not any(k in node or f"_{k}" in node for k in keys):
            name = definition.rsplit(".", 1)[1].removesuffix("[x]")
            run.add(
                "error",
                "required",
                f"{definition}: minimum required = 1, but only found 0 ({_CARDINALITY})",
                f"{where}.{name}",
            )


# -- cardinality (R4 conformance-rules.html#cardinality, json.html#arrays) -------------------------


_CARDINALITY = "R4 conformance-rules.html#cardinality"
_ARRAYS = "R4 json.html#arrays"


def _max(child: Child) -> str:
    return "*" if child.max is None else str(child.max)


def _cardinality_of_array(run: _Run, child: Child, count: int, where: str) -> None:
    if child.max == 1:
        message = f"{child.path} does not repeat (max 1): it must not be a JSON array ({_ARRAYS})"
        run.add("error", "structure", message, where)
    elif child.max is not None and count > child.max:
        run.add(
            "error",
            "structure",
            f"{child.path}: maximum allowed = {child.max}, but found {count} ({_CARDINALITY})",
            where,
        )
    elif count < child.min:
        run.add(
            "error",
            "required",
            f"{child.path}: minimum required = {child.min}, but only found {count} ({_CARDINALITY})",
            where,
        )


def _cardinality_of_single(run: _Run, child: Child, where: str) -> None:
    if child.max == 0:
        run.add("error", "structure", f"{child.path}: maximum allowed = 0, but found 1", where)
    else:  # a repeating element is an array, even with one item (R4 json.html#arrays)
        message = f"{child.path} repeats (max {_max(child)}): it must be a JSON array ({_ARRAYS})"
        run.add("error", "structure", message, where)


def _unknown(run: _Run, item: Any, where: str) -> None:
    """An element the definitions do not hold (refused by the structure checks): only emptiness."""
    if item == {} or item == "":
        run.add("error", "structure", _EMPTY, where)


def _element(run: _Run, item: Any, where: str) -> None:
    """A primitive's ``_name`` object: id and extensions (R4 json.html#primitive)."""
    if not isinstance(item, dict):
        return
    if not any(k != "id" for k in item):
        run.add("error", "structure", _EMPTY, where)
        return
    ctx = Context({}, {})
    _children(run, item, "Element", where, ctx)


def _value(run: _Run, child: Child, item: Any, where: str, ctx: Context) -> None:
    code = child.type
    if code == "Resource" or (
        isinstance(item, dict) and "resourceType" in item and code in run.idx.resources
    ):
        if isinstance(item, dict):
            if child.path == "Bundle.entry.resource" and not run.entry_resources:
                return
            contained = child.path.endswith(".contained")
            _resource(run, item, where, ctx.root_resource if contained else None)
        return
    if isinstance(item, str):
        if item == "" or (code != "xhtml" and not item.strip()):
            run.add("error", "structure", f"{_EMPTY} (a string may not be empty or only white space)", where)
            return
    elif isinstance(item, dict) and not any(k != "id" for k in item):
        run.add("error", "structure", _EMPTY, where)
        return
    if child.binding is not None:
        _check_binding(run, child, child.binding, item, where)
    if child.rules:
        _rules_on(run, child.rules, item, where, ctx)
    if not isinstance(item, dict):
        return
    if child.children_at is not None:
        _children(run, item, child.children_at, where, ctx)
        return
    rules = run.idx.type_rules.get(child.profile or code, [])
    if child.profile and not rules:
        rules = run.idx.type_rules.get(code, [])
    _rules_on(run, rules, item, where, ctx)
    _children(run, item, code, where, ctx)


# -- required bindings (R4 terminologies.html#required) ---------------------------------------------

_LISTED = 12  # value sets up to this size are listed in the diagnostics


@cache
def expanded(url: str) -> Binding | None:
    """A value set of the core terminology, or None when it cannot be expanded from the shipped data
    (a code system not shipped, a filter): such bindings are not checked."""
    codes = r4_core.core_terminology().codes(url)
    if not codes:
        return None
    return Binding(
        url,
        frozenset(code for _, code in codes),
        frozenset(codes),
        frozenset(system for system, _ in codes),
    )


def _check_binding(run: _Run, child: Child, url: str, item: Any, where: str) -> None:
    """``code``: the code is one of the value set's; Coding / CodeableConcept: when a coding is from a
    code system of the value set, the concept (one of the codings) is in the value set. Codings of
    other systems only are not judged (they may be translations, terminologies.html#4.1.5)."""
    binding = expanded(url)
    if binding is None:
        return
    if child.type == "code":
        if isinstance(item, str) and item not in binding.codes:
            _not_in(run, child, binding, json.dumps(item)[:80], where)
        return
    if not isinstance(item, dict):
        return
    raw = [item] if child.type == "Coding" else item.get("coding")
    if not isinstance(raw, list):
        return
    codings = [
        (c["system"], c["code"])
        for c in raw
        if isinstance(c, dict) and c.get("system") in binding.systems and isinstance(c.get("code"), str)
    ]
    if codings and not any(pair in binding.pairs for pair in codings):
        _not_in(run, child, binding, ", ".join(f"{s}|{c}" for s, c in codings)[:160], where)


def _not_in(run: _Run, child: Child, binding: Binding, shown: str, where: str) -> None:
    listing = ""
    if len(binding.codes) <= _LISTED:
        listing = f" (one of {', '.join(sorted(binding.codes))})"
    run.add(
        "error",
        "code-invalid",
        f"{child.path}: code {shown} is not in the required value set {binding.url}{listing}",
        where,
    )
