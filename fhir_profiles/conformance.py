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
            self._expansions[url] = self._expand(url, frozenset())
        return self._expansions[url]

    def _expand(self, url: str, path: frozenset[str]) -> frozenset[Code] | None:
        """R4 ValueSet.compose: union of the includes minus the excludes (``path``: cycle guard).

        Falls back on a complete ``expansion`` when there is no compose we can compute.
        """
        definition = self.value_sets.get(url)
        if definition is None or url in path:
            return None
        path = path | {url}
        compose = definition.get("compose")
        codes = self._compose(compose, path) if isinstance(compose, dict) else None
        return _expansion(definition.get("expansion")) if codes is None else codes

    def _compose(self, compose: dict[str, Any], path: frozenset[str]) -> frozenset[Code] | None:
        codes: set[Code] = set()
        for include in compose.get("include", []):
            part = self._part(include, path)
            if part is None:
                return None
            codes |= part
        for exclude in compose.get("exclude", []):
            part = self._part(exclude, path)
            if part is None:
                return None
            codes -= part
        return frozenset(codes)

    def _part(self, include: dict[str, Any], path: frozenset[str]) -> set[Code] | None:
        """One compose.include/exclude: its system part and value sets intersect (R4 valueset.html)."""
        if include.get("filter"):
            return None
        system = include.get("system")
        parts: list[set[Code]] = []
        if include.get("concept"):
            parts.append({(system, str(c["code"])) for c in include["concept"]})
        elif system:
            code_system = self.code_systems.get(system)
            if code_system is None or code_system.get("content", "complete") != "complete":
                return None
            parts.append({(system, code) for code in _all_codes(code_system.get("concept", []))})
        for nested in include.get("valueSet", []):
            inner = self._expand(str(nested).split("|")[0], path)
            if inner is None:
                return None
            parts.append(set(inner))
        if not parts:
            return set()
        result = parts[0]
        for part in parts[1:]:
            result &= part
        return result


def _expansion(expansion: Any) -> frozenset[Code] | None:
    """Codes of a stored ValueSet.expansion, when it is there and complete (not one page of it)."""
    if not isinstance(expansion, dict) or "contains" not in expansion:
        return None
    codes: set[Code] = set()

    def walk(items: list[dict[str, Any]]) -> None:
        for item in items:
            if isinstance(item, dict):
                if item.get("code") and not item.get("abstract"):
                    codes.add((item.get("system"), str(item["code"])))
                walk(item.get("contains", []))

    walk(expansion["contains"])
    total = expansion.get("total")
    if isinstance(total, int) and total > len(codes):
        return None
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
            if not isinstance(data, dict):
                continue
            if data.get("resourceType") == "Bundle":
                for entry in data.get("entry") or []:
                    resource = entry.get("resource") if isinstance(entry, dict) else None
                    if isinstance(resource, dict) and resource.get("resourceType") in CONFORMANCE_TYPES:
                        yield resource
            elif data.get("resourceType") in CONFORMANCE_TYPES:
                yield data


@cache
def shipped() -> Conformance:
    return Conformance.from_directories()
