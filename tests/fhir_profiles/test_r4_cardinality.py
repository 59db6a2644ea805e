"""The R4 (4.0.1) cardinalities of the core definitions against the fhir.resources R4B models (issue 18).

The models refuse a missing required element and an array where the element does not repeat (or the
reverse) before the base rules run; ``fhir_profiles.base_rules`` checks the same R4 cardinalities. This
test pins that the two agree for every element of every supported type, so a cardinality finding is
never reported twice nor R4 content refused for an R4B cardinality. Choice elements ``[x]`` with
min 1 are enforced by the models' one-of-many validators.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from coordination_api.core.elements import resource_model
from coordination_api.fhir.resources import NOT_STORED, supported_types
from fhir_profiles import base_rules


def _is_list(annotation: Any) -> bool:
    pending = [annotation]
    while pending:
        current = pending.pop()
        origin = typing.get_origin(current)
        if origin is list:
            return True
        if origin in (typing.Union, types.UnionType):
            pending.extend(typing.get_args(current))
    return False


def _model_of(annotation: Any) -> type | None:
    pending = [annotation]
    while pending:
        current = pending.pop()
        if typing.get_origin(current) in (typing.Union, types.UnionType, list):
            pending.extend(typing.get_args(current))
            continue
        get_model = getattr(current, "get_model_klass", None)
        if get_model is not None:
            model: type = get_model()
            return None if model.__name__ in {"Resource", "DomainResource"} else model
    return None


def test_the_models_enforce_the_r4_cardinalities() -> None:
    idx = base_rules.index()
    differences: list[str] = []
    seen: set[tuple[str, type]] = set()
    pending: list[tuple[str, type]] = [(t, resource_model(t)) for t in sorted(supported_types() | NOT_STORED)]
    while pending:
        path, model = pending.pop()
        if (path, model) in seen:
            continue
        seen.add((path, model))
        fields = {field.alias or name: field for name, field in getattr(model, "model_fields", {}).items()}
        for name, child in idx.children.get(path, {}).items():
            field = fields.get(name)
            if field is None:
                continue  # R4-only content (r4-compat.json r4_only_elements): refused by the model
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            if not child.path.endswith("[x]"):
                required = bool(extra.get("element_required")) or field.is_required()
                if (child.min >= 1) != required:
                    differences.append(f"{child.path}: R4 min {child.min}, model required {required}")
            elif child.min >= 1 and not extra.get("one_of_many_required"):
                differences.append(f"{child.path}: R4 min {child.min}, the model does not require one")
            if (child.max != 1) != _is_list(field.annotation):
                high = child.max or "*"
                differences.append(f"{child.path}: R4 max {high}, the model's list-ness differs")
            if child.max not in {1, None} or child.min > 1:
                differences.append(f"{child.path}: R4 {child.min}..{child.max} is not checked by the model")
            inner = _model_of(field.annotation)
            if inner is not None:
                pending.append((child.children_at or child.type, inner))
    assert len(seen) > 500  # every type, backbone element and datatype reached
    assert differences == []
