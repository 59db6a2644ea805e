"""Resource repository: current rows, history rows and index rows, written together.

Every write method takes an open connection so that callers (a single interaction, a whole
transaction Bundle, an import chunk) decide the one database transaction it belongs to.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, and_, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from coordination_api.errors import Category, FhirError
from coordination_api.search.dates import format_instant
from coordination_api.search.registry import SearchRegistry
from coordination_api.storage.engine import WRITE
from coordination_api.storage.indexer import index_rows
from coordination_api.storage.schema import (
    INDEX_TABLES,
    conditional_create,
    resource,
    resource_history,
)


@dataclass(frozen=True)
class Stored:
    """One stored version of a resource."""

    pk: int
    res_type: str
    res_id: str
    version: int
    last_updated: int
    deleted: bool
    content: str | None

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    def json(self) -> dict[str, Any]:
        if self.content is None:
            return {}
        data: dict[str, Any] = orjson.loads(self.content)
        return data


def now_us() -> int:
    """Current time in epoch microseconds, truncated to the millisecond we publish."""
    return (time.time_ns() // 1_000_000) * 1000


def new_id() -> str:
    return str(uuid.uuid4())


def _with_meta(
    resource_type: str, res_id: str, body: dict[str, Any], version: int, ts: int
) -> tuple[str, dict[str, Any]]:
    """The canonical stored JSON (id and meta set by the server) and the dict it encodes."""
    meta = dict(body.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = format_instant(ts)
    out: dict[str, Any] = {"resourceType": resource_type, "id": res_id, "meta": meta}
    for key, value in body.items():
        if key not in out:
            out[key] = value
    return orjson.dumps(out).decode(), out


_CURRENT_COLS = (
    resource.c.pk,
    resource.c.res_type,
    resource.c.res_id,
    resource.c.version,
    resource.c.last_updated,
    resource.c.deleted,
    resource.c.content,
)


class Repository:
    """Reads and writes resources; writes always include history and index rows."""

    def __init__(self, engine: Engine, registry: SearchRegistry) -> None:
        self.engine = engine
        self.registry = registry

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """One write transaction (SQLite: BEGIN IMMEDIATE)."""
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    # -- reads ---------------------------------------------------------------------------------

    def current(self, conn: Connection, res_type: str, res_id: str) -> Stored | None:
        row = conn.execute(
            select(*_CURRENT_COLS).where(resource.c.res_type == res_type, resource.c.res_id == res_id)
        ).first()
        return Stored(*row) if row else None

    def version(self, conn: Connection, res_type: str, res_id: str, version: int) -> Stored | None:
        h = resource_history
        row = conn.execute(
            select(
                h.c.res_pk, h.c.res_type, h.c.res_id, h.c.version, h.c.last_updated, h.c.deleted, h.c.content
            ).where(h.c.res_type == res_type, h.c.res_id == res_id, h.c.version == version)
        ).first()
        return Stored(*row) if row else None

    def by_pks(self, conn: Connection, pks: list[int]) -> dict[int, Stored]:
        out: dict[int, Stored] = {}
        for start in range(0, len(pks), 500):
            chunk = pks[start : start + 500]
            for row in conn.execute(select(*_CURRENT_COLS).where(resource.c.pk.in_(chunk))):
                out[row.pk] = Stored(*row)
        return out

    # -- writes --------------------------------------------------------------------------------

    def create(
        self, conn: Connection, res_type: str, body: dict[str, Any], res_id: str | None = None
    ) -> Stored:
        """Insert version 1. A client-chosen id that exists already is a conflict."""
        res_id = res_id or new_id()
        ts = now_us()
        content, full = _with_meta(res_type, res_id, body, 1, ts)
        try:
            with conn.begin_nested():
                pk = conn.execute(
                    insert(resource)
                    .values(
                        res_type=res_type,
                        res_id=res_id,
                        version=1,
                        last_updated=ts,
                        deleted=False,
                        content=content,
                    )
                    .returning(resource.c.pk)
                ).scalar_one()
        except IntegrityError as exc:
            raise FhirError(Category.CONFLICT, f"{res_type}/{res_id} already exists") from exc
        stored = Stored(pk, res_type, res_id, 1, ts, False, content)
        self._history(conn, stored, "POST")
        self._index(conn, stored, full, fresh=True)
        return stored

    def update(
        self,
        conn: Connection,
        res_type: str,
        res_id: str,
        body: dict[str, Any],
        if_match: int | None = None,
        method: str = "PUT",
    ) -> tuple[Stored, bool]:
        """Write a new version, or create it if absent (update-as-create). Returns (stored, created)."""
        for _attempt in range(3):
            current = self.current(conn, res_type, res_id)
            if current is None:
                if if_match is not None:
                    raise FhirError(
                        Category.PRECONDITION_FAILED, f"If-Match given but {res_type}/{res_id} does not exist"
                    )
                try:
                    return self.create(conn, res_type, body, res_id), True
                except FhirError as exc:
                    if exc.category is Category.CONFLICT:
                        continue  # created concurrently: update it instead
                    raise
            if if_match is not None and if_match != current.version:
                raise FhirError(
                    Category.PRECONDITION_FAILED,
                    f'Version conflict: If-Match W/"{if_match}" but current version is {current.version}',
                )
            version = current.version + 1
            ts = max(now_us(), current.last_updated)
            content, full = _with_meta(res_type, res_id, body, version, ts)
            result = conn.execute(
                update(resource)
                .where(resource.c.pk == current.pk, resource.c.version == current.version)
                .values(version=version, last_updated=ts, deleted=False, content=content)
            )
            if result.rowcount != 1:
                if if_match is not None:
                    raise FhirError(Category.PRECONDITION_FAILED, "Resource was modified concurrently")
                continue
            stored = Stored(current.pk, res_type, res_id, version, ts, False, content)
            self._history(conn, stored, method)
            self._index(conn, stored, full, fresh=False)
            return stored, current.deleted
        raise FhirError(Category.CONFLICT, f"{res_type}/{res_id} was modified concurrently; retry")

    def delete(
        self, conn: Connection, res_type: str, res_id: str, if_match: int | None = None
    ) -> Stored | None:
        """Logical delete: a new version marked deleted. None when there was nothing to delete."""
        for _attempt in range(3):
            current = self.current(conn, res_type, res_id)
            if current is None or current.deleted:
                return None
            if if_match is not None and if_match != current.version:
                raise FhirError(
                    Category.PRECONDITION_FAILED,
                    f'Version conflict: If-Match W/"{if_match}" but current version is {current.version}',
                )
            version = current.version + 1
            ts = max(now_us(), current.last_updated)
            result = conn.execute(
                update(resource)
                .where(resource.c.pk == current.pk, resource.c.version == current.version)
                .values(version=version, last_updated=ts, deleted=True, content=None)
            )
            if result.rowcount != 1:
                continue
            stored = Stored(current.pk, res_type, res_id, version, ts, True, None)
            self._history(conn, stored, "DELETE")
            self._clear_index(conn, current.pk)
            conn.execute(delete(conditional_create).where(conditional_create.c.res_pk == current.pk))
            return stored
        raise FhirError(Category.CONFLICT, f"{res_type}/{res_id} was modified concurrently; retry")

    def claim_conditional(self, conn: Connection, res_type: str, criteria_hash: str, pk: int) -> bool:
        """Record that ``pk`` was conditionally created for these criteria; False if another writer won."""
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(conditional_create).values(
                        res_type=res_type, criteria_hash=criteria_hash, res_pk=pk
                    )
                )
        except IntegrityError:
            return False
        return True

    def release_conditional(self, conn: Connection, res_type: str, criteria_hash: str) -> None:
        conn.execute(
            delete(conditional_create).where(
                and_(
                    conditional_create.c.res_type == res_type,
                    conditional_create.c.criteria_hash == criteria_hash,
                )
            )
        )

    # -- internals -----------------------------------------------------------------------------

    def _history(self, conn: Connection, stored: Stored, method: str) -> None:
        conn.execute(
            insert(resource_history).values(
                res_pk=stored.pk,
                version=stored.version,
                res_type=stored.res_type,
                res_id=stored.res_id,
                last_updated=stored.last_updated,
                method=method,
                deleted=stored.deleted,
                content=stored.content,
            )
        )

    def _clear_index(self, conn: Connection, pk: int) -> None:
        for table in INDEX_TABLES.values():
            conn.execute(delete(table).where(table.c.res_pk == pk))

    def _index(self, conn: Connection, stored: Stored, full: dict[str, Any], *, fresh: bool) -> None:
        if not fresh:
            self._clear_index(conn, stored.pk)
        for kind, rows in index_rows(self.registry, stored.res_type, full).items():
            for row in rows:
                row["res_pk"] = stored.pk
            conn.execute(insert(INDEX_TABLES[kind]), rows)
