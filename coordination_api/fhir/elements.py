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
from fhir_core.fhirabstractmodel import FHIRAbstractModel

_INTEGERS = {"integer", "positiveInt", "unsignedInt", "integer64"}
_LINKS = {"uri", "url", "oid", "uuid"}  # canonical is a uri too, but never a Bundle link


@dataclass(frozen=True)
class ElementType:
    """``json``: boolean | integer | decimal | string | object | resource | other."""

    json: str
    link: bool = False
    model: type | None = None


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


def _classify(annotation: Any) -> ElementType:
    pending = [annotation]
    while pending:
        current = pending.pop()
        if current is bool:
            return ElementType("boolean")
        origin = typing.get_origin(current)
        if origin is typing.Annotated:
            base = typing.get_args(current)[0]
            names = {getattr(meta, "__visit_name__", "") for meta in current.__metadata__}
            if names & _INTEGERS:
                return ElementType("integer")
            if "decimal" in names:
                return ElementType("decimal")
            return ElementType("string", link=bool(names & _LINKS) or base is uuid.UUID)
        if origin in (typing.Union, types.UnionType, list):
            pending.extend(typing.get_args(current))
            continue
        get_model = getattr(current, "get_model_klass", None)
        if get_model is not None:
            element_model: type = get_model()
            if element_model.__name__ in {"Resource", "DomainResource"}:
                return ElementType("resource")
            return ElementType("object", model=element_model)
    return ElementType("other")
