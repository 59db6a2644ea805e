"""SearchParameter registry built from the definitions shipped in ``fhir_profiles``."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import fhir_profiles
from coordination_api.search.expressions import (
    Extractor,
    RelativeExtractor,
    compile_elements,
    compile_expression,
    compile_relative,
    restrict_to_type,
)

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
class Component:
    """One component of a composite parameter: the type of the parameter its ``definition`` names,
    and an expression relative to the composite's element (R4 SearchParameter.component)."""

    type: str
    expression: str
    targets: tuple[str, ...] = ()

    @cached_property
    def extractor(self) -> RelativeExtractor:
        return compile_relative(self.expression)


# The types a component may have: those whose values the index tables hold.
COMPONENT_TYPES = {"token", "quantity", "date", "string", "number", "uri", "reference"}


@dataclass(frozen=True)
class SearchParam:
    """One search parameter as it applies to one resource type."""

    code: str
    type: str
    url: str
    expression: str
    targets: tuple[str, ...]
    parts: tuple[str, ...] = field(default=())
    # A composite's components, in definition order (its values are ``value0$value1...``).
    components: tuple[Component, ...] = field(default=())
    resource_type: str = ""

    @cached_property
    def extractor(self) -> Extractor:
        if self.type == "composite":
            return compile_elements(list(self.parts), self.resource_type)
        return compile_expression(list(self.parts))

    def extract(self, resource: dict[str, Any]) -> list[Any]:
        return self.extractor(resource)


class SearchRegistry:
    """Which parameters each resource type supports, with their compiled extractors."""

    def __init__(
        self,
        definitions: tuple[dict[str, Any], ...],
        resource_types: frozenset[str],
        references: tuple[dict[str, Any], ...] = (),
    ) -> None:
        """``references``: further definitions a composite's components may name (by url)."""
        self.resource_types = resource_types
        self._by_type: dict[str, dict[str, SearchParam]] = {t: {} for t in resource_types}
        self._by_url = {d["url"]: d for d in (*references, *definitions) if isinstance(d.get("url"), str)}
        for definition in definitions:
            self._add(definition)

    @classmethod
    def default(cls, resource_types: frozenset[str]) -> SearchRegistry:
        # The official R4 bundle (composites included), then ours.
        return cls(fhir_profiles.search_parameters(), resource_types)

    def _components(self, definition: dict[str, Any]) -> tuple[Component, ...] | None:
        """The components of a composite, None when one names no usable parameter."""
        out: list[Component] = []
        for component in definition.get("component", []):
            named = self._by_url.get(component.get("definition", ""))
            expression = component.get("expression")
            if named is None or named.get("type") not in COMPONENT_TYPES or not expression:
                return None
            out.append(Component(named["type"], expression, tuple(named.get("target", []))))
        return tuple(out) if len(out) >= 2 else None

    def _add(self, definition: dict[str, Any]) -> None:
        components: tuple[Component, ...] = ()
        if definition.get("type") == "composite":
            found = self._components(definition)
            if found is None:
                return
            components = found
        if not definition.get("expression") and definition.get("code") not in COLUMN_PARAMS:
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
                parts=tuple(parts),
                components=components,
                resource_type=resource_type,
            )

    def params(self, resource_type: str) -> dict[str, SearchParam]:
        return self._by_type.get(resource_type, {})

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self._by_type.get(resource_type, {}).get(code)

    def indexed(self, resource_type: str) -> list[SearchParam]:
        """Parameters whose values are written to index tables for this type."""
        return [p for p in self.params(resource_type).values() if p.code not in COLUMN_PARAMS and p.parts]
