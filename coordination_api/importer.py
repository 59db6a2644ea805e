"""``coordination import``: Bundles and NDJSON into the store, in chunked transactions.

Transaction/batch Bundles (Synthea's included) keep their own semantics: ``urn:uuid`` fullUrls
and conditional references are resolved across chunks. Collection Bundles and NDJSON lines
(e.g. Bulk Data exports) are upserts by id, so an export imports back unchanged.
The import is the operator's own: it may add identifiers of the server's reserved namespaces
(coordination/namespaces.py), which an export of intake's patients and stays carries.
"""

from __future__ import annotations

import gc
import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from coordination_api.coordination import namespaces
from coordination_api.errors import FhirError
from coordination_api.fhir.context import Services
from coordination_api.fhir.transaction import ORDER, Entry, TransactionProcessor, parse_entry
from coordination_api.storage.repository import new_id

Progress = Callable[[str, int], AbstractContextManager[Any]]


@dataclass
class ImportSummary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def render(self) -> str:
        lines = [
            f"created: {self.created}",
            f"updated: {self.updated}",
            f"unchanged: {self.unchanged}",
            f"failed: {self.failed}",
        ]
        for reason, count in self.reasons.most_common(20):
            lines.append(f"  {count} x {reason}")
        return "\n".join(lines)

    def merge(self, other: ImportSummary) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.failed += other.failed
        self.reasons.update(other.reasons)

    def fail(self, error: FhirError) -> None:
        self.failed += 1
        where = [e for issue in error.issues for e in (issue.expression or [])]
        reason = error.diagnostics[:200] + (f" [{', '.join(where[:3])}]" if where else "")
        self.reasons[reason] += 1

    def count(self, entries: list[Entry]) -> None:
        for entry in entries:
            status = entry.result.status if entry.result else 0
            if status == 201:
                self.created += 1
            elif status == 200 and entry.method == "PUT" and not _unchanged(entry):
                self.updated += 1
            else:
                self.unchanged += 1


def _unchanged(entry: Entry) -> bool:
    stored = entry.result.stored if entry.result else None
    return stored is not None and stored.unchanged


def _upsert_entry(resource: dict[str, Any]) -> dict[str, Any]:
    resource_type = resource.get("resourceType")
    res_id = resource.get("id")
    if res_id:
        return {"resource": resource, "request": {"method": "PUT", "url": f"{resource_type}/{res_id}"}}
    return {"resource": resource, "request": {"method": "POST", "url": str(resource_type)}}


def _read_file(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """(kind, raw entries): a transaction/batch keeps its entries, anything else becomes upserts."""
    text = path.read_bytes().removeprefix(b"\xef\xbb\xbf")  # RFC 8259 section 8.1: a BOM may be ignored
    stripped = text.lstrip()
    if path.suffix in {".ndjson", ".jsonl"} or (
        stripped[:1] == b"{" and b"\n{" in text.strip() and not _is_single_json(text)
    ):
        rows = [orjson.loads(line) for line in text.splitlines() if line.strip()]
        return "collection", [_upsert_entry(r) for r in rows]
    data = orjson.loads(text)
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        if data.get("type") in {"transaction", "batch"}:
            return str(data["type"]), list(data.get("entry") or [])
        return "collection", [
            _upsert_entry(e["resource"]) for e in data.get("entry") or [] if e.get("resource")
        ]
    if isinstance(data, dict):
        return "collection", [_upsert_entry(data)]
    raise ValueError("not a FHIR resource, Bundle or NDJSON file")


def _is_single_json(text: bytes) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _transaction_rank(raw: Any) -> tuple[int, int]:
    """R4 transaction order across chunks; conditional creates first so others may reference them."""
    request = raw.get("request") if isinstance(raw, dict) else None
    if not isinstance(request, dict):
        return (len(ORDER) + 1, 0)
    method = str(request.get("method", "")).upper()
    return (ORDER.get(method, len(ORDER)), 0 if request.get("ifNoneExist") else 1)


def _reserve_ids(raw_entries: list[Any]) -> dict[str, str]:
    """Give every unconditional POST its id before chunking, so references may point forward."""
    reserved: dict[str, str] = {}
    for raw in raw_entries:
        if not isinstance(raw, dict):
            continue
        request = raw.get("request") or {}
        full_url = raw.get("fullUrl")
        resource = raw.get("resource") or {}
        if request.get("method") == "POST" and not request.get("ifNoneExist") and isinstance(full_url, str):
            reserved[full_url] = f"{resource.get('resourceType')}/{new_id()}"
    return reserved


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def import_files(
    svc: Services, files: list[str], chunk_size: int, progress: Progress, jobs: int = 1
) -> ImportSummary:
    """Import each file; with ``jobs`` > 1 the independent entries are spread over worker processes."""
    summary = ImportSummary()
    base = svc.settings.public_base_url or "http://localhost/fhir"
    with _quiet_gc():
        for name in files:
            path = Path(name)
            try:
                kind, raw_entries = _read_file(path)
            except (ValueError, OSError, KeyError, TypeError) as exc:
                summary.failed += 1
                summary.reasons[f"{path.name}: unreadable ({exc})"] += 1
                continue
            urn_map: dict[str, str] = {}
            if kind == "transaction":
                raw_entries = sorted(raw_entries, key=_transaction_rank)
                urn_map = _reserve_ids(raw_entries)
            indexed = list(enumerate(raw_entries))
            first = [item for item in indexed if not _independent(item[1])] if jobs > 1 else indexed
            rest = [item for item in indexed if _independent(item[1])] if jobs > 1 else []
            with progress(path.name, len(raw_entries)) as bar:
                for chunk in _chunks(first, chunk_size):
                    _import_chunk(svc, chunk, base, urn_map, summary)
                    _refresh_statistics(svc)
                    bar.update(len(chunk))
                if rest:
                    _import_parallel(svc, rest, chunk_size, jobs, base, urn_map, summary, bar.update)
    if svc.stats is not None:
        # What the workers wrote too, and before the command exits (no background thread).
        svc.stats.refresh(wait=True, force=True)
    return summary


def _refresh_statistics(svc: Services, written: int = 0) -> None:
    """Between chunks: the planner keeps seeing the tables as they are (storage/stats.py), so the
    import's own lookups (conditional references, ``ifNoneExist``) stay index lookups as it grows."""
    if svc.stats is not None:
        svc.stats.add(written)
        svc.stats.refresh(wait=True)


@contextmanager
def _quiet_gc() -> Iterator[None]:
    """Imports allocate many short-lived dicts; fewer full collections keep throughput steady."""
    previous = gc.get_threshold()
    gc.set_threshold(50_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def _independent(raw: Any) -> bool:
    """Plain POSTs (ids reserved up front) and PUTs by id can run in any order, in any process."""
    request = raw.get("request") if isinstance(raw, dict) else None
    if not isinstance(request, dict):
        return False
    method, url = str(request.get("method", "")).upper(), str(request.get("url", ""))
    if method == "POST":
        return not request.get("ifNoneExist")
    return method == "PUT" and "?" not in url


# Set in the parent just before forking: children inherit the app, its compiled models and the data.
_FORKED: tuple[Services, list[tuple[int, Any]], dict[str, str], str] | None = None


def _worker_range(start: int, stop: int) -> ImportSummary:
    assert _FORKED is not None
    svc, items, urn_map, base = _FORKED
    if svc.stats is not None:
        svc.stats.enabled = False  # the parent analyzes (_import_parallel)
    summary = ImportSummary()
    with _quiet_gc():
        _import_chunk(svc, items[start:stop], base, dict(urn_map), summary)
    return summary


def _import_parallel(
    svc: Services,
    items: list[tuple[int, Any]],
    chunk_size: int,
    jobs: int,
    base: str,
    urn_map: dict[str, str],
    summary: ImportSummary,
    advance: Callable[[int], object],
) -> None:
    """Fork ``jobs`` workers (no re-import, no pickling of the entries); each opens its own connections."""
    global _FORKED  # read by the forked children only
    svc.repo.engine.dispose()  # children must not inherit (and share) the parent's pooled connections
    _FORKED = (svc, items, urn_map, base)
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = {
                pool.submit(_worker_range, start, min(start + chunk_size, len(items))): min(
                    chunk_size, len(items) - start
                )
                for start in range(0, len(items), chunk_size)
            }
            for future in as_completed(futures):
                done = future.result()
                summary.merge(done)
                # Only this process analyzes (two ANALYZEs of one table would queue on its lock).
                _refresh_statistics(svc, done.created + done.updated)
                advance(futures[future])
    finally:
        _FORKED = None


def _import_chunk(
    svc: Services,
    chunk: list[tuple[int, Any]],
    base: str,
    urn_map: dict[str, str],
    summary: ImportSummary,
) -> None:
    entries: list[Entry] = []
    for index, raw in chunk:
        try:
            entries.append(parse_entry(index, raw, base, "transaction"))
        except FhirError as exc:
            summary.fail(exc)
    if not entries:
        return
    try:
        with svc.repo.writing() as conn, namespaces.writing_as(namespaces.operator):
            processor = TransactionProcessor(conn, svc, base, urn_map)
            processor.run(entries)
        urn_map.update(processor.urn_map)
        summary.count(entries)
    except FhirError:
        # One bad entry must not sink its neighbours: fall back to one transaction per entry.
        for entry in entries:
            _import_one(svc, entry, base, urn_map, summary)


def _import_one(
    svc: Services, entry: Entry, base: str, urn_map: dict[str, str], summary: ImportSummary
) -> None:
    entry.result = None
    try:
        with svc.repo.writing() as conn, namespaces.writing_as(namespaces.operator):
            processor = TransactionProcessor(conn, svc, base, urn_map)
            processor.run([entry])
        urn_map.update(processor.urn_map)
        summary.count([entry])
    except FhirError as exc:
        summary.fail(exc)
