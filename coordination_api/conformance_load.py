"""Load the shipped conformance artefacts into the store, so the API serves and searches them.

Run by ``coordination db upgrade`` after the migrations; idempotent (only changed artefacts get a
new version). Clients cannot write these types (see fhir/resources.READ_ONLY_TYPES).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import fhir_profiles
from coordination_api.storage.repository import Repository
from fhir_profiles.conformance import shipped

_NOT_ID = re.compile(r"[^A-Za-z0-9\-.]")


@dataclass
class LoadResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


def artefacts() -> list[dict[str, Any]]:
    """StructureDefinition, ValueSet, CodeSystem (FR Core data) and our SearchParameters."""
    out = []
    for resource in [*shipped().resources, *fhir_profiles.search_parameters()]:
        res_id = (
            resource.get("id") or _NOT_ID.sub("-", str(resource["url"]).rstrip("/").rsplit("/", 1)[-1])[:64]
        )
        out.append({**resource, "id": res_id})
    return out


def _comparable(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


def load_conformance(repo: Repository) -> LoadResult:
    result = LoadResult()
    items = artefacts()
    with repo.writing() as conn:
        existing = repo.current_many(conn, [(r["resourceType"], r["id"]) for r in items])
        creates = []
        for resource in items:
            key = (resource["resourceType"], resource["id"])
            current = existing.get(key)
            if current is None:
                creates.append((key[0], key[1], resource))
            elif current.deleted or _comparable(current.json()) != _comparable(resource):
                repo.update(conn, key[0], key[1], resource)
                result.updated += 1
            else:
                result.unchanged += 1
        repo.create_many(conn, creates)
        result.created = len(creates)
    return result
