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
    """The R4 SearchParameter resources we index and search with, then our own (e.g. NdE event-type)."""
    entries = [
        *_load("search-parameters.json").get("entry", []),
        *_load("search-parameters-local.json")["entry"],
    ]
    return tuple(entry["resource"] for entry in entries)


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
