"""The conformance artefacts we ship (StructureDefinition, ValueSet, CodeSystem), loaded once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"
PROFILE_DIRS = (DATA_DIR / "fr-core", DATA_DIR / "base")
CONFORMANCE_TYPES = ("StructureDefinition", "ValueSet", "CodeSystem")

Code = tuple[str | None, str]


class Conformance:
    """Artefacts by canonical URL, and value set expansions for binding checks."""

    def __init__(self, resources: list[dict[str, Any]]) -> None:
        self.resources = resources
        self.structure_definitions = _by_url(resources, "StructureDefinition")
        self.value_sets = _by_url(resources, "ValueSet")
        self.code_systems = _by_url(resources, "CodeSystem")
        self._expansions: dict[str, frozenset[Code] | None] = {}

    @classmethod
    def from_directories(cls, directories: tuple[Path, ...] = PROFILE_DIRS) -> Conformance:
        return cls(list(_read(directories)))

    def profiles_for(self, resource_type: str) -> list[str]:
        """Canonical URLs of the profiles of one resource type (CapabilityStatement.supportedProfile)."""
        return sorted(
            url
            for url, sd in self.structure_definitions.items()
            if sd.get("type") == resource_type and sd.get("kind") == "resource"
        )

    def codes(self, value_set: str) -> frozenset[Code] | None:
        """The (system, code) pairs a value set allows; None when it cannot be expanded here."""
        url = value_set.split("|")[0]
        if url not in self._expansions:
            self._expansions[url] = self._expand(url, set())
        return self._expansions[url]

    def _expand(self, url: str, visiting: set[str]) -> frozenset[Code] | None:
        definition = self.value_sets.get(url)
        if definition is None or url in visiting:
            return None
        visiting.add(url)
        codes: set[Code] = set()
        for include in definition.get("compose", {}).get("include", []):
            if include.get("filter"):
                return None
            system = include.get("system")
            if include.get("concept"):
                codes.update((system, str(c["code"])) for c in include["concept"])
            elif system:
                code_system = self.code_systems.get(system)
                if code_system is None:
                    return None
                codes.update((system, code) for code in _all_codes(code_system.get("concept", [])))
            for nested in include.get("valueSet", []):
                inner = self._expand(nested.split("|")[0], visiting)
                if inner is None:
                    return None
                codes.update(inner)
        for exclude in definition.get("compose", {}).get("exclude", []):
            codes.difference_update(
                (exclude.get("system"), str(c["code"])) for c in exclude.get("concept", [])
            )
        return frozenset(codes)


def _all_codes(concepts: list[dict[str, Any]]) -> Iterator[str]:
    for concept in concepts:
        yield str(concept["code"])
        yield from _all_codes(concept.get("concept", []))


def _by_url(resources: list[dict[str, Any]], resource_type: str) -> dict[str, dict[str, Any]]:
    return {str(r["url"]): r for r in resources if r.get("resourceType") == resource_type and r.get("url")}


def _read(directories: tuple[Path, ...]) -> Iterator[dict[str, Any]]:
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("resourceType") in CONFORMANCE_TYPES:
                yield data


@cache
def shipped() -> Conformance:
    return Conformance.from_directories()
