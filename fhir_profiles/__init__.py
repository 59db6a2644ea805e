"""Conformance artefacts shipped as data, and the code that loads them.

This package imports nothing of ours (see ARCHITECTURE.md).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"


def _load(name: str) -> Any:
    with (DATA_DIR / name).open(encoding="utf-8") as handle:
        return json.load(handle)


@cache
def search_parameters() -> tuple[dict[str, Any], ...]:
    """The SearchParameter resources we index and search with: every R4 core one (the official
    bundle, ``data/r4-core``), then our own (e.g. NdE event-type), which win on a shared code."""
    from fhir_profiles import r4_core  # imports this package

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
