"""The official FHIR R4 (4.0.1) definition bundles shipped in ``data/r4-core`` (see its README), as data.

This module imports nothing of ours (see ARCHITECTURE.md).
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from typing import Any

from fhir_profiles.conformance import DATA_DIR, Conformance, shipped

CORE_DIR = DATA_DIR / "r4-core"


def read(name: str) -> dict[str, Any]:
    """One definition bundle by file stem, read now and not kept (the StructureDefinition bundles
    are large: their readers keep only what they need)."""
    with gzip.open(CORE_DIR / f"{name}.json.gz", "rt", encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


@cache
def bundle(name: str) -> dict[str, Any]:
    """One definition bundle by file stem, e.g. ``search-parameters``, ``valuesets`` (kept)."""
    return read(name)


def entries(data: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    return tuple(e["resource"] for e in data.get("entry", []) if isinstance(e.get("resource"), dict))


def resources(name: str) -> tuple[dict[str, Any], ...]:
    return entries(bundle(name))


@cache
def search_parameters() -> tuple[dict[str, Any], ...]:
    """Every R4 core SearchParameter, composites included."""
    return tuple(r for r in resources("search-parameters") if r.get("resourceType") == "SearchParameter")


def _by_url(kind: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for res in resources("valuesets"):
        if res.get("resourceType") == kind and isinstance(res.get("url"), str):
            out.setdefault(res["url"], res)
    return out


@cache
def value_sets() -> dict[str, dict[str, Any]]:
    """R4 core ValueSets by canonical url (``valuesets`` bundle)."""
    return _by_url("ValueSet")


@cache
def code_systems() -> dict[str, dict[str, Any]]:
    """R4 core CodeSystems by canonical url (``valuesets`` bundle)."""
    return _by_url("CodeSystem")


def _core_terminology_resources() -> list[dict[str, Any]]:
    return [r for r in resources("valuesets") if r.get("resourceType") in {"CodeSystem", "ValueSet"}]


@cache
def core_terminology() -> Conformance:
    """The R4 core CodeSystems and ValueSets alone: the base required bindings (R4 is the truth)."""
    return Conformance(_core_terminology_resources())


@cache
def terminology() -> Conformance:
    """The CodeSystems and ValueSets search can expand (``:in``, ``:not-in``, ``:above``, ``:below``):
    the R4 core ones, then ours (FR Core, base) which win on a shared url."""
    return Conformance([*_core_terminology_resources(), *shipped().resources])
