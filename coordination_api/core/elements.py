"""The FHIR type of each JSON property, read from the fhir.resources (R4B) models.

One place knows how the models spell element types, for the code that walks a resource's
JSON alongside its definition: the JSON representation check (R4 json.html#primitive) and
the link rewriting of transactions (R4 http.html#trules).
"""

from __future__ import annotations

import types
import typing
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.backboneelement import BackboneElement
from fhir_core.fhirabstractmodel import FHIRAbstractModel

_INTEGERS = {"integer", "positiveInt", "unsignedInt", "integer64"}
_LINKS = {"uri", "url", "oid", "uuid"}  # canonical is a uri too, but never a Bundle link


@dataclass(frozen=True)
class ElementType:
    """``json``: boolean | integer | decimal | string | object | resource | other; ``fhir``: the FHIR
    type (``date``, ``positiveInt``, ``HumanName``; ``BackboneElement`` for a type's own parts);
    ``many``: the element repeats (a JSON array, R4 json.html#arrays)."""

    json: str
    link: bool = False
    model: type | None = None
    fhir: str = ""
    many: bool = False


def resource_model(resource_type: str) -> type[FHIRAbstractModel]:
    return get_fhir_model_class(resource_type)


@cache
def element_types(model: type) -> dict[str, ElementType]:
    """JSON property name (``birthDate``, ``_birthDate``, ``valueQuantity``…) → its type."""
    fields: dict[str, Any] = getattr(model, "model_fields", {})
    out = {}
    for name, field in fields.items():
        out[field.alias or name] = _classify(field.annotation)
    return out


def _fhir_name(metadata: tuple[Any, ...]) -> str:
    for meta in metadata:
        name = getattr(meta, "__visit_name__", "")
        if isinstance(name, str) and name:
            return name
    return "string"


def _classify(annotation: Any) -> ElementType:
    pending = [(annotation, False)]
    while pending:
        current, many = pending.pop()
        if current is bool:
            return ElementType("boolean", fhir="boolean", many=many)
        origin = typing.get_origin(current)
        if origin is typing.Annotated:
            base = typing.get_args(current)[0]
            fhir = _fhir_name(current.__metadata__)
            if fhir in _INTEGERS:
                return ElementType("integer", fhir=fhir, many=many)
            if fhir == "decimal":
                return ElementType("decimal", fhir=fhir, many=many)
            link = fhir in _LINKS or base is uuid.UUID
            return ElementType("string", link=link, fhir=fhir, many=many)
        if origin in (typing.Union, types.UnionType, list):
            pending.extend((arg, many or origin is list) for arg in typing.get_args(current))
            continue
        get_model = getattr(current, "get_model_klass", None)
        if get_model is not None:
            element_model: type = get_model()
            if element_model.__name__ in {"Resource", "DomainResource"}:
                return ElementType("resource", fhir="Resource", many=many)
            fhir = "BackboneElement" if issubclass(element_model, BackboneElement) else element_model.__name__
            return ElementType("object", model=element_model, fhir=fhir, many=many)
    return ElementType("other")


@cache
def choice_groups(model: type) -> dict[str, tuple[bool, tuple[str, ...]]]:
    """Choice elements (R4 formats.html#choice): ``value`` → (required, (``valueQuantity``, …))."""
    fields: dict[str, Any] = getattr(model, "model_fields", {})
    groups: dict[str, tuple[bool, tuple[str, ...]]] = {}
    for name, field in fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        prefix = extra.get("one_of_many")
        if isinstance(prefix, str):
            required, names = groups.get(prefix, (False, ()))
            required = required or extra.get("one_of_many_required") is True
            groups[prefix] = (required, (*names, field.alias or name))
    return groups
