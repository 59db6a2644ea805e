"""Conformance artefacts shipped as data, and the code that loads them.

This package imports nothing of ours (see ARCHITECTURE.md).
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from typing import Any

from fhir_profiles import r4_core
from fhir_profiles.conformance import DATA_DIR

__all__ = ["DATA_DIR"]


def _load(name: str) -> Any:
    with (DATA_DIR / name).open(encoding="utf-8") as handle:
        return json.load(handle)


@cache
def search_parameters() -> tuple[dict[str, Any], ...]:
    """The SearchParameter resources we index and search with: every R4 core one (the official
    bundle, ``data/r4-core``), then our own (e.g. NdE event-type), which win on a shared code."""
    local = tuple(entry["resource"] for entry in _load("search-parameters-local.json")["entry"])
    return (*r4_core.search_parameters(), *local)


@cache
def r4_compat() -> dict[str, Any]:
    """R4 resource types and the R4B-only types/elements to refuse (we parse with R4B models)."""
    data: dict[str, Any] = _load("r4-compat.json")
    return data


@cache
def patient_compartment() -> dict[str, Any]:
    """The R4 Patient CompartmentDefinition."""
    data: dict[str, Any] = _load("compartment-patient.json")
    return data


@cache
def reference_elements() -> dict[str, tuple[tuple[str, frozenset[str]], ...]]:
    """Resource type -> its Reference-typed elements as (path below the type, target type names), from
    the R4 StructureDefinitions (r4-core/profiles-resources.json.gz). A target ``Resource`` means any;
    an element without targetProfile is read as any too (R4 references.html)."""

    with gzip.open(DATA_DIR / "r4-core" / "profiles-resources.json.gz", "rt", encoding="utf-8") as handle:
        bundle = json.load(handle)
    out: dict[str, tuple[tuple[str, frozenset[str]], ...]] = {}
    for entry in bundle.get("entry", []):
        sd = entry.get("resource") or {}
        if sd.get("resourceType") != "StructureDefinition" or sd.get("kind") != "resource":
            continue
        if sd.get("derivation") == "constraint":
            continue
        found: list[tuple[str, frozenset[str]]] = []
        for element in sd.get("snapshot", {}).get("element", []):
            for kind in element.get("type", []):
                if kind.get("code") != "Reference":
                    continue
                targets = frozenset(p.rsplit("/", 1)[-1] for p in kind.get("targetProfile", [])) or frozenset(
                    {"Resource"}
                )
                path = element["path"].split(".", 1)[1] if "." in element["path"] else ""
                found.append((path, targets))
        out[sd["type"]] = tuple(found)
    return out
