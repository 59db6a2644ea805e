"""Evaluate SearchParameter FHIRPath expressions against a resource's JSON.

Most R4 search expressions are unions of plain paths (``Patient.name``), sometimes with
``as Type`` or ``.where(resolve() is Type)``. Those run on a small direct evaluator because
indexing happens on every write; everything else is compiled once with fhirpathpy (R4 model).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

import fhirpathpy
from fhirpathpy.models import models as fhirpath_models

Extractor = Callable[[dict[str, Any]], list[Any]]

_SIMPLE_PATH = re.compile(r"^[A-Z][A-Za-z]*(\.[a-z][A-Za-z0-9]*)+$")
_AS_SPACE = re.compile(r"^(?P<path>.+?)\s+as\s+(?P<type>[A-Za-z]+)$")
_AS_CALL = re.compile(r"^(?P<path>.+?)\.as\((?P<type>[A-Za-z]+)\)$")
_OF_TYPE_CALL = re.compile(r"^(?P<path>.+?)\.ofType\((?P<type>[A-Za-z]+)\)$")
_RESOLVE_IS = re.compile(r"^(?P<path>.+?)\.where\(resolve\(\)\s+is\s+(?P<type>[A-Za-z]+)\)$")
_RESOURCE_BASES = {"Resource", "DomainResource"}


def split_union(expression: str) -> list[str]:
    """Split on top-level ``|`` (not inside parentheses or quotes)."""
    parts: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    for char in expression:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == "|" and depth == 0 and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if current:
        parts.append("".join(current).strip())
    return [p for p in parts if p]


def _strip_parens(text: str) -> str:
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, char in enumerate(text):
            depth += char == "("
            depth -= char == ")"
            if depth == 0 and i < len(text) - 1:
                return text
        text = text[1:-1].strip()
    return text


def part_root(part: str) -> str:
    """The type a union member starts from (``Observation`` in ``Observation.code``)."""
    stripped = _strip_parens(part)
    match = re.match(r"^([A-Z][A-Za-z]*)", stripped)
    return match.group(1) if match else ""


def restrict_to_type(expression: str, resource_type: str) -> list[str]:
    """The union members of a (possibly multi-base) expression that apply to one type."""
    return [
        p
        for p in split_union(expression)
        if part_root(p) in {resource_type, *_RESOURCE_BASES} or not part_root(p)
    ]


@cache
def _choice_names() -> frozenset[str]:
    """Names of choice elements (``value[x]``) across all R4B models, from fhir.resources metadata."""
    from fhir.resources.R4B import fhirtypes  # noqa: PLC0415 - on first use only: it loads every R4B type model

    names: set[str] = set()
    for attr in dir(fhirtypes):
        if not attr.endswith("Type"):
            continue
        try:
            klass = getattr(fhirtypes, attr).get_model_klass()
        except (AttributeError, ImportError, TypeError, KeyError):
            continue
        for field in getattr(klass, "model_fields", {}).values():
            extra = field.json_schema_extra
            if isinstance(extra, dict) and isinstance(extra.get("one_of_many"), str):
                names.add(extra["one_of_many"])
    return frozenset(names)


def _simple_extractor(path: str, choice_type: str | None, resolve_type: str | None) -> Extractor | None:
    if not _SIMPLE_PATH.match(path):
        return None
    segments = path.split(".")[1:]
    if choice_type:
        segments[-1] = segments[-1] + choice_type[0].upper() + choice_type[1:]
    choices = _choice_names()
    expand = [seg in choices and not choice_type for seg in segments]
    if choice_type:
        expand[-1] = False

    def extract(resource: dict[str, Any]) -> list[Any]:
        nodes: list[Any] = [resource]
        for seg, is_choice in zip(segments, expand, strict=True):
            found: list[Any] = []
            for node in nodes:
                if not isinstance(node, dict):
                    continue
                value = node.get(seg)
                if value is None and is_choice:
                    n = len(seg)
                    for key, candidate in node.items():
                        if len(key) > n and key.startswith(seg) and key[n].isupper():
                            value = candidate
                            break
                if value is None:
                    continue
                if isinstance(value, list):
                    found.extend(value)
                else:
                    found.append(value)
            nodes = found
            if not nodes:
                return nodes
        if resolve_type:
            nodes = [n for n in nodes if isinstance(n, dict) and reference_type(n) == resolve_type]
        return nodes

    return extract


def reference_type(reference: dict[str, Any]) -> str | None:
    """The target type of a Reference: its ``type`` or the type segment of ``reference``."""
    if isinstance(reference.get("type"), str):
        return str(reference["type"])
    ref = reference.get("reference")
    if not isinstance(ref, str):
        return None
    segments = ref.split("/_history/")[0].split("/")
    return segments[-2] if len(segments) >= 2 else None


# FHIRPath extension(url) is every extension with that url (R4 fhirpath.html#functions,
# "extension(url : string)"); fhirpathpy 2.2 returns only the first, so an index would miss the others
# while a reader of the resource sees them all. The where() form is evaluated as the spec says.
_EXTENSION_CALL = re.compile(r"(?<=\.)extension\(\s*'(?P<url>[^'\\]*)'\s*\)")


def _fhirpath_extractor(expression: str) -> Extractor:
    expression = _EXTENSION_CALL.sub(lambda m: f"extension.where(url = '{m.group('url')}')", expression)
    compiled = fhirpathpy.compile(expression, model=fhirpath_models["r4"])

    def extract(resource: dict[str, Any]) -> list[Any]:
        result = compiled(resource, None)
        return list(result) if isinstance(result, list) else [result]

    return extract


_WHERE_EQ = re.compile(r"^(?P<path>.+?)\.where\((?P<field>[a-z][A-Za-z]*)\s*=\s*'(?P<value>[^']*)'\)$")
_EXISTS_NOT_FALSE = re.compile(r"^(?P<path>[A-Za-z.]+)\.exists\(\) and (?P=path) != false$")


def _special_extractor(text: str) -> Extractor | None:
    """Two frequent R4 shapes that fhirpathpy evaluates slowly, evaluated directly."""
    match = _WHERE_EQ.match(text)
    if match:
        base = _simple_extractor(match.group("path"), None, None)
        field, wanted = match.group("field"), match.group("value")
        if base is not None:
            path_of = base
            return lambda r: [n for n in path_of(r) if isinstance(n, dict) and n.get(field) == wanted]
    match = _EXISTS_NOT_FALSE.match(text)  # e.g. Patient.deceased: true unless absent or false
    if match:
        inner = _simple_extractor(match.group("path"), None, None)
        if inner is not None:

            def exists_not_false(resource: dict[str, Any]) -> list[Any]:
                nodes = inner(resource)
                return [bool(nodes) and not (len(nodes) == 1 and nodes[0] is False)]

            return exists_not_false
    return None


def _direct_extractor(part: str) -> Extractor | None:
    """The fast evaluator for the shapes it knows, None for anything else."""
    text = _strip_parens(part)
    special = _special_extractor(text)
    if special is not None:
        return special
    resolve_type = choice_type = None
    match = _RESOLVE_IS.match(text)
    if match:
        text, resolve_type = _strip_parens(match.group("path")), match.group("type")
    match = _AS_SPACE.match(text) or _AS_CALL.match(text)
    if match:
        text, choice_type = _strip_parens(match.group("path")), match.group("type")
    else:
        # ofType() on a choice element is its typed name (value.ofType(Quantity): valueQuantity).
        match = _OF_TYPE_CALL.match(text)
        if match and match.group("path").rsplit(".", 1)[-1] in _choice_names():
            text, choice_type = _strip_parens(match.group("path")), match.group("type")
        elif match:
            return None
    return _simple_extractor(text, choice_type, resolve_type)


def compile_part(part: str) -> Extractor:
    return _direct_extractor(part) or _fhirpath_extractor(_strip_parens(part))


# (element, resource) -> values: a composite component's expression runs on one element of the
# composite's base expression; ``%resource`` is the resource itself (R4 search.html#composite).
RelativeExtractor = Callable[[Any, dict[str, Any]], list[Any]]


def compile_relative(expression: str) -> RelativeExtractor:
    """An extractor for an expression relative to an element (a composite component)."""
    members: list[tuple[bool, Extractor]] = []
    for part in split_union(expression):
        text = _strip_parens(part)
        if text.startswith("%resource."):
            # Any capitalised root names "the node the path starts from" for the direct evaluator.
            rooted = "Resource." + text[len("%resource.") :]
            members.append((True, _direct_extractor(rooted) or _fhirpath_extractor(rooted)))
        else:
            members.append((False, _direct_extractor("Element." + text) or _fhirpath_extractor(text)))

    def extract(node: Any, resource: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for from_root, extractor in members:
            if from_root:
                out.extend(extractor(resource))
            elif isinstance(node, dict):
                out.extend(extractor(node))
        return out

    return extract


def compile_elements(parts: list[str], resource_type: str) -> Extractor:
    """The elements a composite's base expression selects; ``Observation`` alone is the resource."""
    return _union([(lambda r: [r]) if _strip_parens(p) == resource_type else compile_part(p) for p in parts])


def compile_expression(parts: list[str]) -> Extractor:
    """One extractor for the union of the given members."""
    extractors = [compile_part(p) for p in parts]
    return extractors[0] if len(extractors) == 1 else _union(extractors)


def _union(extractors: list[Extractor]) -> Extractor:
    def extract(resource: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for extractor in extractors:
            out.extend(extractor(resource))
        return out

    return extract
