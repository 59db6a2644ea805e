"""SearchParameter registry built from the definitions shipped in ``fhir_profiles``."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import fhir_profiles
from coordination_api.search.expressions import Extractor, compile_expression, restrict_to_type

# Parameters answered from resource columns, not index tables (R4 search.html#all).
COLUMN_PARAMS = {"_id", "_lastUpdated"}
# Result parameters (R4 search.html#return) and other control parameters.
CONTROL_PARAMS = {
    "_sort",
    "_count",
    "_include",
    "_revinclude",
    "_summary",
    "_total",
    "_elements",
    "_contained",
    "_containedType",
    "_format",
    "_pretty",
    "_page",
}


@dataclass(frozen=True)
class SearchParam:
    """One search parameter as it applies to one resource type."""

    code: str
    type: str
    url: str
    expression: str
    targets: tuple[str, ...]
    modifiers: tuple[str, ...]
    comparators: tuple[str, ...]
    parts: tuple[str, ...] = field(default=())

    @cached_property
    def extractor(self) -> Extractor:
        return compile_expression(list(self.parts))

    def extract(self, resource: dict[str, Any]) -> list[Any]:
        return self.extractor(resource)


class SearchRegistry:
    """Which parameters each resource type supports, with their compiled extractors."""

    def __init__(self, definitions: tuple[dict[str, Any], ...], resource_types: frozenset[str]) -> None:
        self.resource_types = resource_types
        self._by_type: dict[str, dict[str, SearchParam]] = {t: {} for t in resource_types}
        for definition in definitions:
            self._add(definition)

    @classmethod
    def default(cls, resource_types: frozenset[str]) -> SearchRegistry:
        return cls(fhir_profiles.search_parameters(), resource_types)

    def _add(self, definition: dict[str, Any]) -> None:
        unusable = definition.get("type") == "composite" or not definition.get("expression")
        if unusable and definition.get("code") not in COLUMN_PARAMS:
            return
        bases = definition.get("base", [])
        types = self.resource_types if "Resource" in bases or "DomainResource" in bases else bases
        for resource_type in types:
            if resource_type not in self._by_type:
                continue
            parts = restrict_to_type(definition.get("expression", ""), resource_type)
            if not parts and definition["code"] not in COLUMN_PARAMS:
                continue
            targets = tuple(definition.get("target", []))
            self._by_type[resource_type][definition["code"]] = SearchParam(
                code=definition["code"],
                type=definition["type"],
                url=definition.get("url", ""),
                expression=" | ".join(parts),
                targets=targets,
                modifiers=tuple(definition.get("modifier", [])),
                comparators=tuple(definition.get("comparator", [])),
                parts=tuple(parts),
            )

    def params(self, resource_type: str) -> dict[str, SearchParam]:
        return self._by_type.get(resource_type, {})

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self._by_type.get(resource_type, {}).get(code)

    def indexed(self, resource_type: str) -> list[SearchParam]:
        """Parameters whose values are written to index tables for this type."""
        return [p for p in self.params(resource_type).values() if p.code not in COLUMN_PARAMS and p.parts]
