"""The protocol library: PlanDefinitions and ActivityDefinitions loaded from JSON files, by url.

The shipped French templates live in ``fhir_profiles/data/protocols``; a CPTS loads a folder of its own
with ``coordination protocols load --dir PATH``. Files hold one resource or a Bundle of them.

Two modes (both idempotent):
- ``missing`` (``coordination db upgrade``, at every start): create a definition only when no resource
  has its url yet, so a copy the CPTS has edited is never overwritten;
- ``upsert`` (``coordination protocols load``): the resource with the same url and version is updated
  when its content differs, else a new one is created.
The shipped id is kept when it is free; otherwise the server assigns one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

import fhir_profiles
from coordination_api.core.services import Services
from coordination_api.core.validation import validate_resource
from coordination_api.core.writes import find_matches
from coordination_api.errors import Category, FhirError

SHIPPED_DIR = fhir_profiles.DATA_DIR / "protocols"
TYPES = ("ActivityDefinition", "PlanDefinition")  # definitions first: plans name them


@dataclass
class LoadResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def summary(self) -> str:
        return f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged"


def read_definitions(directory: Path) -> list[dict[str, Any]]:
    """The PlanDefinitions and ActivityDefinitions of every ``*.json`` file under ``directory``."""
    if not directory.is_dir():
        raise FhirError(Category.NOT_FOUND, f"{directory} is not a directory")
    found: list[dict[str, Any]] = []
    for path in sorted(directory.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FhirError(Category.STRUCTURE, f"{path.name}: not a readable JSON file ({exc})") from exc
        for resource in _resources(data):
            if resource.get("resourceType") not in TYPES:
                raise FhirError(
                    Category.NOT_SUPPORTED,
                    f"{path.name}: a protocol library holds {' and '.join(TYPES)} only, "
                    f"not {resource.get('resourceType')}",
                )
            if not isinstance(resource.get("url"), str):
                raise FhirError(Category.REQUIRED, f"{path.name}: a library definition needs a url")
            try:
                found.append(validate_resource(resource))
            except FhirError as exc:
                raise FhirError(exc.category, f"{path.name}: {exc.diagnostics}", issues=exc.issues) from exc
    found.sort(key=lambda r: TYPES.index(r["resourceType"]))
    return found


def _resources(data: Any) -> Iterator[dict[str, Any]]:
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        for entry in data.get("entry") or []:
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                yield entry["resource"]
    elif isinstance(data, dict):
        yield data


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in {"id", "meta"}}


def _upsert(conn: Connection, svc: Services, resource: dict[str, Any], mode: str, result: LoadResult) -> None:
    resource_type = resource["resourceType"]
    same_url = find_matches(conn, svc, resource_type, [("url", resource["url"])], limit=1000)
    version = resource.get("version")
    same = [s for s in same_url if s.json().get("version") == version]
    body = _content(resource)
    if mode == "missing" and same_url:
        result.unchanged += 1
        return
    if same:
        current = same[0]
        if _content(current.json()) == body:
            result.unchanged += 1
            return
        svc.repo.update(conn, resource_type, current.res_id, body)
        result.updated += 1
        return
    res_id = resource.get("id")
    if isinstance(res_id, str) and svc.repo.current(conn, resource_type, res_id) is not None:
        res_id = None  # the shipped id is taken (by another definition, or a deleted one)
    svc.repo.create(conn, resource_type, body, res_id if isinstance(res_id, str) else None)
    result.created += 1


def load_definitions(svc: Services, directory: Path | None = None, *, mode: str = "upsert") -> LoadResult:
    """Load a folder of definitions (the shipped library by default) in one transaction."""
    if mode not in {"missing", "upsert"}:
        raise ValueError(f"unknown load mode {mode}")
    definitions = read_definitions(directory or SHIPPED_DIR)
    result = LoadResult()
    with svc.repo.writing() as conn:
        for resource in definitions:
            _upsert(conn, svc, resource, mode, result)
    return result
