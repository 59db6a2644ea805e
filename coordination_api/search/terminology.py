"""Terminology for token modifiers (R4 search.html#token): ``:in`` / ``:not-in`` expand a ValueSet the
server ships, ``:above`` / ``:below`` walk the hierarchy of a CodeSystem the server ships.

Nothing is asked of a terminology server: what cannot be computed from the shipped data is refused
with a 400 naming the value set or code system.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

from coordination_api.errors import Category, FhirError
from fhir_profiles import r4_core

Code = tuple[str | None, str]


def value_set_codes(url: str, param: str) -> frozenset[Code]:
    """The (system, code) pairs of a shipped ValueSet, expanded once (cached by the Conformance)."""
    codes = r4_core.terminology().codes(url)
    if codes is None:
        known = url.split("|")[0] in r4_core.terminology().value_sets
        why = "cannot be expanded by this server" if known else "is not a value set this server knows"
        raise FhirError(Category.NOT_SUPPORTED, f"Search parameter '{param}': value set '{url}' {why}")
    return codes


@cache
def _hierarchy(system: str) -> tuple[dict[str, set[str]], dict[str, set[str]]] | None:
    """(children, parents) of every code of a shipped, complete, is-a CodeSystem; None otherwise."""
    code_system = r4_core.terminology().code_systems.get(system)
    if code_system is None or code_system.get("content", "complete") != "complete":
        return None
    if code_system.get("hierarchyMeaning", "is-a") != "is-a":
        return None
    children: dict[str, set[str]] = {}
    parents: dict[str, set[str]] = {}
    for parent, concept in _concepts(code_system.get("concept", []), None):
        code = str(concept["code"])
        children.setdefault(code, set())
        parents.setdefault(code, set())
        links = [parent] if parent is not None else []
        # Some CodeSystems state the hierarchy as a property instead of nesting (R4 codesystem.html).
        links += [
            str(p["valueCode"])
            for p in concept.get("property", [])
            if p.get("code") in {"parent", "subsumedBy"} and p.get("valueCode")
        ]
        for link in links:
            parents[code].add(link)
            children.setdefault(link, set()).add(code)
    return children, parents


def _concepts(
    concepts: list[dict[str, Any]], parent: str | None
) -> Iterator[tuple[str | None, dict[str, Any]]]:
    for concept in concepts:
        if isinstance(concept, dict) and concept.get("code"):
            yield parent, concept
            yield from _concepts(concept.get("concept", []), str(concept["code"]))


def subsumed(system: str | None, code: str | None, modifier: str, param: str) -> frozenset[str]:
    """``:below``: the code and every code it subsumes; ``:above``: the code and its ancestors."""
    name = f"{param}:{modifier}"
    if not system or not code:
        raise FhirError(Category.INVALID, f"Search parameter '{name}': the value must be system|code")
    hierarchy = _hierarchy(system)
    if hierarchy is None:
        raise FhirError(
            Category.NOT_SUPPORTED,
            f"Search parameter '{name}': modifier ':{modifier}' is not supported for the code system "
            f"'{system}' (no hierarchy of it is shipped)",
        )
    links = hierarchy[0] if modifier == "below" else hierarchy[1]
    if code not in links:
        raise FhirError(Category.INVALID, f"Search parameter '{name}': '{code}' is not a code of '{system}'")
    found = {code}
    frontier = [code]
    while frontier:
        for other in links.get(frontier.pop(), ()):
            if other not in found:
                found.add(other)
                frontier.append(other)
    return frozenset(found)
