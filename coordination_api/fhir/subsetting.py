"""``_summary`` and ``_elements`` (R4 search.html#summary, #elements)."""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
ALWAYS = ("resourceType", "id", "meta")


@cache
def _summary_elements(resource_type: str) -> frozenset[str]:
    """Top-level elements flagged isSummary (from fhir.resources metadata), by JSON name."""
    names: set[str] = set()
    model = get_fhir_model_class(resource_type)
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("summary_element_property"):
            names.add(field.alias or name)
    return frozenset(names)


@cache
def _mandatory_elements(resource_type: str) -> frozenset[str]:
    model = get_fhir_model_class(resource_type)
    names: set[str] = set()
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("element_required"):
            names.add(field.alias or name)
    return frozenset(names)


def _tagged(out: dict[str, Any]) -> dict[str, Any]:
    meta = dict(out.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    meta["tag"] = [*tags, SUBSETTED]
    out["meta"] = meta
    return out


def _keep(resource: dict[str, Any], allowed: frozenset[str] | set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in resource.items():
        name = key[1:] if key.startswith("_") else key
        if key in ALWAYS or name in allowed:
            out[key] = value
            continue
        # Choice elements: "deceasedBoolean" is kept when "deceased" is asked for.
        for element in allowed:
            if key.startswith(element) and len(key) > len(element) and key[len(element)].isupper():
                out[key] = value
                break
    return out


def summarize(resource: dict[str, Any], mode: str) -> dict[str, Any]:
    resource_type = resource.get("resourceType", "")
    if mode == "true":
        allowed = set(_summary_elements(resource_type)) | set(_mandatory_elements(resource_type))
        return _tagged(_keep(resource, allowed))
    if mode == "text":
        return _tagged(_keep(resource, {"text", *_mandatory_elements(resource_type)}))
    if mode == "data":
        return _tagged({k: v for k, v in resource.items() if k != "text"})
    return resource


def select_elements(resource: dict[str, Any], elements: list[str]) -> dict[str, Any]:
    resource_type = resource.get("resourceType", "")
    allowed = {e.split(".")[-1] if e.startswith(resource_type + ".") else e for e in elements}
    allowed |= set(_mandatory_elements(resource_type))
    return _tagged(_keep(resource, allowed))
