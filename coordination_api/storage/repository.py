"""Resource repository: current rows, history rows and index rows, written together.

Every write method takes an open connection so that callers (a single interaction, a whole
transaction Bundle, an import chunk) decide the one database transaction it belongs to.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import orjson
from sqlalchemy import Engine, Table, and_, delete, insert, literal, select, tuple_, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

if TYPE_CHECKING:
    import psycopg

from coordination_api.errors import Category, FhirError
from coordination_api.search.dates import format_instant
from coordination_api.search.registry import SearchRegistry
from coordination_api.storage.engine import WRITE, close_reader, is_postgres, open_reader, placeholder
from coordination_api.storage.indexer import FOLLOWS, SECURITY_CONTEXT, UNRESOLVED, index_rows
from coordination_api.storage.schema import (
    INDEX_TABLES,
    conditional_create,
    history_compartment,
    idx_compartment,
    idx_reference,
    resource,
    resource_history,
)

log = logging.getLogger(__name__)


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
    # The patients whose compartment holds this version, when the write that made it just indexed
    # them (None = not known here: ask idx_compartment).
    compartment: tuple[str, ...] | None = field(default=None, compare=False)
    # True when the update that returned this made no version: the body was the current content.
    unchanged: bool = field(default=False, compare=False)

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    def json(self) -> dict[str, Any]:
        if self.content is None:
            return {}
        data: dict[str, Any] = orjson.loads(self.content)
        return data


def check_if_match(if_match: int | None, current: Stored) -> None:
    """R4 http.html#concurrency: a version-aware write names the version it replaces (412 otherwise)."""
    if if_match is not None and if_match != current.version:
        raise FhirError(
            Category.PRECONDITION_FAILED,
            # Not naming the current version: it is not the caller's to learn.
            f'Version conflict: If-Match W/"{if_match}" is not the current version; read it again',
        )


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


# What the server sets on every version: the only difference a no-op update may have. The rest of
# meta (profile, security, tag, source) is content: a change of it makes a version, as in HAPI.
_SERVER_META = ("versionId", "lastUpdated")


def _same_content(current: Stored, content: str, new: dict[str, Any]) -> bool:
    """Whether ``new`` (serialized as ``content``) says what the ``current`` version says, server-set
    meta aside (a no-op update). Equal content serializes to the same length whatever the key order,
    so a length that differs (the server-set values' own lengths aside) settles most changes for
    free; otherwise the dicts are compared, then their canonical bytes, since dict equality holds
    ``1 == 1.0 == True`` and a decimal's precision is content."""
    if current.content is None or current.deleted:
        return False
    if len(content) - len(str(new["meta"]["versionId"])) != len(current.content) - len(str(current.version)):
        return False  # lastUpdated is a fixed-length instant
    old: dict[str, Any] = orjson.loads(current.content)
    if old.keys() != new.keys() or any(v != old[k] for k, v in new.items() if k != "meta"):
        return False
    old_meta, new_meta = _content_meta(old), _content_meta(new)
    if old_meta != new_meta:
        return False
    sort = orjson.OPT_SORT_KEYS
    return orjson.dumps({**old, "meta": old_meta}, option=sort) == orjson.dumps(
        {**new, "meta": new_meta}, option=sort
    )


def _content_meta(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (resource.get("meta") or {}).items() if k not in _SERVER_META}


_LOCAL_TAIL = re.compile(r"^([A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?)/?$")
# An absolute Reference.reference somewhere in the body (the only case worth a walk).
_ABSOLUTE_REFERENCE = re.compile(rb'"reference":"[A-Za-z][A-Za-z0-9+.\-]*://')
_DEFAULT_PORTS = {"http": 80, "https": 443}


def localized(body: dict[str, Any], bases: tuple[str, ...]) -> dict[str, Any]:
    """``body`` with every Reference.reference to one of ``bases`` made relative (R4 references.html
    3.1.3.5: a reference to the server's own base is the same as a relative one), so that
    compartments, chains, includes and the access policy see one form. The comparison is the URL's
    (RFC 3986 6.2.2-6.2.3): scheme and host in any case, a default port, repeated or trailing slashes."""
    if not bases or not _ABSOLUTE_REFERENCE.search(orjson.dumps(body)):
        return body
    keys = [k for k in (_url_key(b) for b in bases) if k is not None]
    result: dict[str, Any] = _localize(body, keys)
    return result


def _url_key(url: str) -> tuple[str, str, int | None, str] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    path = re.sub(r"/{2,}", "/", parts.path).rstrip("/")
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme), path


def _localize(value: Any, keys: list[tuple[str, str, int | None, str]]) -> Any:
    if isinstance(value, list):
        return [_localize(v, keys) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _localize(v, keys) for k, v in value.items()}
    ref = out.get("reference")
    if isinstance(ref, str) and "://" in ref:
        key = _url_key(ref)
        for scheme, host, port, path in keys:
            if key is None or key[:3] != (scheme, host, port) or not key[3].startswith(path + "/"):
                continue
            tail = _LOCAL_TAIL.match(key[3][len(path) + 1 :])
            if tail is not None:
                out["reference"] = tail.group(1)
                break
    return out


# Rows another layer derives from a resource and keeps beside it (the access policy's care-team,
# opposition, affiliation and Task-reach rows): per resource type, the table (with a ``res_pk``
# column) and the function that makes the rows (without ``res_pk``) from the resource as stored.
RowsOf = Callable[[dict[str, Any]], list[dict[str, Any]]]
DerivedRows = Mapping[str, tuple[Table, RowsOf]]


CURRENT_COLS = (
    resource.c.pk,
    resource.c.res_type,
    resource.c.res_id,
    resource.c.version,
    resource.c.last_updated,
    resource.c.deleted,
    resource.c.content,
)


_CURRENT_SQL: dict[tuple[str, str], str] = {}


def _current_sql(paramstyle: str, where: str) -> str:
    """``SELECT`` of :data:`CURRENT_COLS` as driver SQL, ``{m}`` in ``where`` standing for the
    driver's placeholder; built once per condition and paramstyle."""
    key = (where, paramstyle)
    sql = _CURRENT_SQL.get(key)
    if sql is None:
        mark = placeholder(paramstyle)
        columns = ", ".join(c.name for c in CURRENT_COLS)
        sql = _CURRENT_SQL[key] = f"SELECT {columns} FROM resource WHERE {where.replace('{m}', mark)}"
    return sql


_BY_KEY = "res_type = {m} AND res_id = {m}"


def _stored(row: Any) -> Stored | None:
    if row is None:
        return None
    pk, res_type, res_id, version, last_updated, deleted, content = row
    return Stored(pk, res_type, res_id, version, last_updated, bool(deleted), content)


class Repository:
    """Reads and writes resources; writes always include history and index rows."""

    def __init__(self, engine: Engine, registry: SearchRegistry, *, derived: DerivedRows) -> None:
        """``derived``: the index hook, written and cleared with each write of its types, in its
        transaction. Required (an empty mapping is a choice to make, not a default): a repository
        built without the access policy's rows would store CareTeams that grant nothing and
        oppositions that deny nothing, without a word."""
        for res_type, (table, _rows_of) in derived.items():
            if "res_pk" not in table.c:
                raise ValueError(f"derived rows of {res_type}: table {table.name} has no res_pk column")
        self.engine = engine
        self.registry = registry
        self.derived: Mapping[str, tuple[Table, RowsOf]] = MappingProxyType(dict(derived))
        # Hooks of the security layer: the access check on what is written ("before": the current
        # version, "after": the new one) and the audit row that commits with the write.
        self.guard: Callable[[Connection, list[Stored], str], None] | None = None
        self.before_commit: Callable[[Connection], None] | None = None
        # Called in the write transaction with what was just written (new versions, deletions):
        # the subscriptions' outbox rows are added here, so they commit or roll back with the data.
        self.on_written: list[Callable[[Connection, list[Stored]], None]] = []
        self._raw_sql: dict[str, str] = {}
        # Set by the app: the DBAPI connection of the current request, shared by its hot-path
        # statements (token, read, access check): one pool checkout instead of one each.
        self.request_raw: Callable[[], Any] | None = None
        self.before_write: Callable[[], None] | None = None
        # This server's own FHIR base(s) (configured, and as the current request reached it): absolute
        # references to them are stored relative.
        self.local_bases: Callable[[], tuple[str, ...]] = tuple
        # Called on every body before it is stored (in the write transaction): may complete it (e.g. a
        # Consent actor given by identifier gets its reference) or refuse it with a FhirError.
        self.prepare: list[Callable[[Connection, str, str | None, dict[str, Any]], dict[str, Any]]] = []
        # The newest version each write transaction made of each resource: a write hook may write
        # again what was just written (dispatch's offer on a new Task); the answer shows the last.
        self._latest: weakref.WeakKeyDictionary[Connection, dict[tuple[str, str], Stored]] = (
            weakref.WeakKeyDictionary()
        )

    @contextmanager
    def raw(self) -> Iterator[Any]:
        """A DBAPI connection: the request's own when there is one, else a pooled one."""
        shared = self.request_raw() if self.request_raw is not None else None
        if shared is not None:
            yield shared
            return
        connection = open_reader(self.engine)
        try:
            yield connection
        finally:
            close_reader(connection)

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """One write transaction (SQLite: BEGIN IMMEDIATE)."""
        if self.before_write is not None:
            self.before_write()
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            yield conn
            if self.before_commit is not None:
                self.before_commit(conn)

    def _reach_then_version(self, conn: Connection, current: Stored, if_match: int | None) -> None:
        """Reach before the version: a 412 must not tell someone who may not see the resource that it
        exists, nor its version (review 17, R4); except to one who could see the version she names
        (phase ``named``: e.g. the losers of a race to accept an offered Task get 412, as documented)."""
        try:
            self._check(conn, [current], "before")
        except FhirError as exc:
            if exc.category is not Category.FORBIDDEN or if_match is None or if_match == current.version:
                raise
            named = self.version(conn, current.res_type, current.res_id, if_match)
            if named is None or named.deleted:
                raise
            try:
                self._check(conn, [named], "named")
            except FhirError:
                raise exc from None
            check_if_match(if_match, current)
            raise
        check_if_match(if_match, current)

    def _check(self, conn: Connection, stored: list[Stored], phase: str) -> None:
        if phase == "after":
            self._remember(conn, stored)
        if self.guard is not None:
            self.guard(conn, stored, phase)
        if phase == "after":
            self._written(conn, stored)

    def _remember(self, conn: Connection, stored: list[Stored]) -> None:
        seen = self._latest.setdefault(conn, {})
        for item in stored:
            known = seen.get((item.res_type, item.res_id))
            if known is None or known.version < item.version:
                seen[(item.res_type, item.res_id)] = item

    def latest(self, conn: Connection, stored: Stored) -> Stored:
        """The newest version of ``stored``'s resource this transaction has written (itself if none)."""
        known = self._latest.get(conn, {}).get((stored.res_type, stored.res_id))
        return known if known is not None and known.version > stored.version else stored

    def _written(self, conn: Connection, stored: list[Stored]) -> None:
        for hook in self.on_written:
            hook(conn, stored)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    # -- reads ---------------------------------------------------------------------------------

    def read_current(self, res_type: str, res_id: str) -> Stored | None:
        """The hot read path: one pooled DBAPI call, no statement building, no transaction."""
        sql = _current_sql(self.engine.dialect.paramstyle, _BY_KEY)
        with self.raw() as connection:
            cursor = connection.cursor()
            cursor.execute(sql, (res_type, res_id))
            row = cursor.fetchone()
            cursor.close()
        return _stored(row)

    def raw_rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """A hot-path query in plain SQL with ``:name`` parameters, on one pooled DBAPI connection."""
        statement = self._raw_sql.get(sql)
        if statement is None:
            statement = sql
            if self.engine.dialect.paramstyle == "pyformat":  # psycopg: %(name)s
                statement = re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql.replace("%", "%%"))
            self._raw_sql[sql] = statement
        with self.raw() as connection:
            cursor = connection.cursor()
            cursor.execute(statement, params)
            rows = [tuple(row) for row in cursor.fetchall()]
            cursor.close()
        return rows

    def current(self, conn: Connection, res_type: str, res_id: str) -> Stored | None:
        # Driver SQL: the most frequent statement of the write and intake paths (issue 21).
        row = conn.exec_driver_sql(_current_sql(conn.dialect.paramstyle, _BY_KEY), (res_type, res_id))
        return _stored(row.first())

    def _current_locked(self, conn: Connection, res_type: str, res_id: str) -> Stored | None:
        """The current row under a row lock, for a version-aware (If-Match) update: of concurrent
        writers naming the same version one wins, the others see the new version (412) before any
        other check. A row another writer holds is about to change: 412 at once, rather than waiting
        with a pooled connection held (PostgreSQL; SQLite's write transactions are serialised)."""
        if not is_postgres(conn):
            return self.current(conn, res_type, res_id)
        stmt = select(*CURRENT_COLS).where(resource.c.res_type == res_type, resource.c.res_id == res_id)
        row = conn.execute(stmt.with_for_update(skip_locked=True)).first()
        if row is None and conn.execute(stmt).first() is not None:
            raise FhirError(
                Category.PRECONDITION_FAILED,
                f"{res_type}/{res_id} is being modified concurrently; read it again",
            )
        return Stored(*row) if row else None

    def version(self, conn: Connection, res_type: str, res_id: str, version: int) -> Stored | None:
        h = resource_history
        row = conn.execute(
            select(
                h.c.res_pk, h.c.res_type, h.c.res_id, h.c.version, h.c.last_updated, h.c.deleted, h.c.content
            ).where(h.c.res_type == res_type, h.c.res_id == res_id, h.c.version == version)
        ).first()
        return Stored(*row) if row else None

    def current_of_type(self, conn: Connection, res_type: str) -> list[Stored]:
        """Every current, not deleted resource of a type, in pk order (a small type: definitions)."""
        sql = _current_sql(conn.dialect.paramstyle, "res_type = {m} AND deleted = {m} ORDER BY pk")
        return [s for row in conn.exec_driver_sql(sql, (res_type, False)) if (s := _stored(row)) is not None]

    def by_pks(self, conn: Connection, pks: list[int]) -> dict[int, Stored]:
        out: dict[int, Stored] = {}
        for start in range(0, len(pks), 500):
            chunk = pks[start : start + 500]
            marks = ", ".join(["{m}"] * len(chunk))
            for row in conn.exec_driver_sql(
                _current_sql(conn.dialect.paramstyle, f"pk IN ({marks})"), tuple(chunk)
            ):
                stored = _stored(row)
                assert stored is not None
                out[stored.pk] = stored
        return out

    # -- writes --------------------------------------------------------------------------------

    def create(
        self,
        conn: Connection,
        res_type: str,
        body: dict[str, Any],
        res_id: str | None = None,
        method: str = "POST",
    ) -> Stored:
        """Insert version 1. A client-chosen id that exists already is a conflict."""
        return self.create_many(conn, [(res_type, res_id, body)], method)[0]

    def create_many(
        self, conn: Connection, items: list[tuple[str, str | None, dict[str, Any]]], method: str = "POST"
    ) -> list[Stored]:
        """Insert many new resources with a handful of statements (multi-row INSERT … RETURNING)."""
        if not items:
            return []
        ts = now_us()
        bases = self.local_bases()
        rows: list[dict[str, Any]] = []
        fulls: list[dict[str, Any]] = []
        for res_type, res_id, body in items:
            body = localized(body, bases)
            for prepare in self.prepare:
                body = prepare(conn, res_type, res_id, body)
            content, full = _with_meta(res_type, res_id or new_id(), body, 1, ts)
            rows.append(
                {
                    "res_type": res_type,
                    "res_id": full["id"],
                    "version": 1,
                    "last_updated": ts,
                    "deleted": False,
                    "content": content,
                }
            )
            fulls.append(full)
        statement = insert(resource).returning(resource.c.pk, sort_by_parameter_order=True)
        if all(res_id is None for _t, res_id, _b in items):
            # Server-assigned ids are random UUIDs: no conflict to recover from, so no savepoint.
            pks = [row[0] for row in conn.execute(statement, rows)]
            return self._created(conn, rows, fulls, pks, ts, method, fresh=True)
        try:
            with conn.begin_nested():
                pks = [row[0] for row in conn.execute(statement, rows)]
        except IntegrityError as exc:
            if len(items) == 1:
                raise FhirError(
                    Category.CONFLICT, f"{rows[0]['res_type']}/{rows[0]['res_id']} already exists"
                ) from exc
            # Name the resource that exists already: retry one at a time.
            return [
                self.create(conn, r["res_type"], b, r["res_id"], method)
                for r, (_t, _i, b) in zip(rows, items, strict=True)
            ]
        return self._created(conn, rows, fulls, pks, ts, method)

    def _created(
        self,
        conn: Connection,
        rows: list[dict[str, Any]],
        fulls: list[dict[str, Any]],
        pks: list[int],
        ts: int,
        method: str,
        *,
        fresh: bool = False,
    ) -> list[Stored]:
        """History, index rows and hooks of freshly inserted resources (``fresh``: ids the server has
        just drawn, which nothing can have referenced before)."""
        stored = [
            Stored(pk, row["res_type"], row["res_id"], 1, ts, False, row["content"])
            for pk, row in zip(pks, rows, strict=True)
        ]
        insert_rows(conn, resource_history, [self._history_row(s, method) for s in stored])
        patients = self._insert_index(conn, list(zip(stored, fulls, strict=True)), fresh=fresh)
        stored = [replace(s, compartment=patients.get(s.pk, ())) for s in stored]
        self._record_compartments(conn, stored)
        self._check(conn, stored, "after")
        return stored

    def current_many(self, conn: Connection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Stored]:
        """Current rows for many (type, id) pairs in one query per 500."""
        out: dict[tuple[str, str], Stored] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            stmt = select(*CURRENT_COLS).where(tuple_(resource.c.res_type, resource.c.res_id).in_(chunk))
            for row in conn.execute(stmt):
                out[(row.res_type, row.res_id)] = Stored(*row)
        return out

    def update(
        self,
        conn: Connection,
        res_type: str,
        res_id: str,
        body: dict[str, Any],
        if_match: int | None = None,
        method: str = "PUT",
    ) -> tuple[Stored, bool]:
        """Write a new version, or create it if absent (update-as-create). Returns (stored, created).
        A body equal to the current version's content (server-set meta aside) writes nothing: the
        current version comes back, marked ``unchanged``."""
        for _attempt in range(3):
            if if_match is None:
                current = self.current(conn, res_type, res_id)
            else:
                current = self._current_locked(conn, res_type, res_id)
            if current is None:
                if if_match is not None:
                    raise FhirError(
                        Category.PRECONDITION_FAILED, f"If-Match given but {res_type}/{res_id} does not exist"
                    )
                try:
                    return self.create(conn, res_type, body, res_id, method), True
                except FhirError as exc:
                    if exc.category is Category.CONFLICT:
                        continue  # created concurrently: update it instead
                    raise
            self._reach_then_version(conn, current, if_match)
            version = current.version + 1
            ts = max(now_us(), current.last_updated)
            body = localized(body, self.local_bases())
            for prepare in self.prepare:
                body = prepare(conn, res_type, res_id, body)
            content, full = _with_meta(res_type, res_id, body, version, ts)
            if _same_content(current, content, full):
                # A no-op update (HAPI's behaviour): no version, no history, no hooks; the answer is
                # the current version. The access rule still judges the write, as it would the new
                # version (same content, same compartments), and the audit records the attempt.
                current = replace(current, unchanged=True)
                if self.guard is not None:
                    self.guard(conn, [current], "after")
                return current, False
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
            self._clear_index(conn, stored.pk, stored.res_type)
            patients = self._insert_index(conn, [(stored, full)])
            stored = replace(stored, compartment=patients.get(stored.pk, ()))
            self._record_compartments(conn, [stored])
            self._check(conn, [stored], "after")
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
            self._reach_then_version(conn, current, if_match)
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
            # The compartment rows stay: they keep protecting the deleted resource's history.
            self._clear_index(conn, current.pk, res_type, keep_compartment=True)
            hc = history_compartment
            conn.execute(
                insert(hc).from_select(
                    ["res_pk", "version", "patient_id"],
                    select(hc.c.res_pk, literal(version), hc.c.patient_id).where(
                        hc.c.res_pk == current.pk, hc.c.version == current.version
                    ),
                )
            )
            conn.execute(delete(conditional_create).where(conditional_create.c.res_pk == current.pk))
            self._check(conn, [stored], "after")
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

    @staticmethod
    def _history_row(stored: Stored, method: str) -> dict[str, Any]:
        return {
            "res_pk": stored.pk,
            "version": stored.version,
            "res_type": stored.res_type,
            "res_id": stored.res_id,
            "last_updated": stored.last_updated,
            "method": method,
            "deleted": stored.deleted,
            "content": stored.content,
        }

    def _history(self, conn: Connection, stored: Stored, method: str) -> None:
        insert_rows(conn, resource_history, [self._history_row(stored, method)])

    def _clear_index(
        self, conn: Connection, pk: int, res_type: str | None = None, *, keep_compartment: bool = False
    ) -> None:
        for kind, table in INDEX_TABLES.items():
            if keep_compartment and kind == "compartment":
                continue
            conn.execute(delete(table).where(table.c.res_pk == pk))
        derived = self.derived.get(res_type or "")
        if derived is not None:
            conn.execute(delete(derived[0]).where(derived[0].c.res_pk == pk))

    def _insert_index(
        self, conn: Connection, items: list[tuple[Stored, dict[str, Any]]], *, fresh: bool = False
    ) -> dict[int, tuple[str, ...]]:
        """Index rows of many resources, one executemany per index table; returns each resource's
        compartment patients (the rows just written)."""
        batched: dict[str, list[dict[str, Any]]] = {}
        patients: dict[int, tuple[str, ...]] = {}
        derived_rows: dict[str, list[dict[str, Any]]] = {}
        for stored, full in items:
            derived = self.derived.get(stored.res_type)
            if derived is not None:
                # Derived rows (the access policy's) change with the resource.
                for row in derived[1](full):
                    derived_rows.setdefault(stored.res_type, []).append({**row, "res_pk": stored.pk})
            for kind, rows in index_rows(self.registry, stored.res_type, full).items():
                for row in rows:
                    row["res_pk"] = stored.pk
                batched.setdefault(kind, []).extend(rows)
                if kind == "compartment":
                    patients[stored.pk] = tuple(dict.fromkeys(row["patient_id"] for row in rows))
        for kind, rows in batched.items():
            if len(rows) >= COPY_THRESHOLD and is_postgres(conn):
                _copy_rows(conn, INDEX_TABLES[kind].name, rows)
            else:
                insert_rows(conn, INDEX_TABLES[kind], rows)
        for res_type, rows in derived_rows.items():
            insert_rows(conn, self.derived[res_type][0], rows)
        # What this batch follows is in the reference rows just built: no need to read them back.
        follows = (SECURITY_CONTEXT, FOLLOWS)
        following = {row["res_pk"] for row in batched.get("reference", ()) if row["param"] in follows}
        self._follow_contexts(conn, items, patients, following, fresh=fresh)
        return patients

    def _follow_contexts(
        self,
        conn: Connection,
        items: list[tuple[Stored, dict[str, Any]]],
        patients: dict[int, tuple[str, ...]],
        following: set[int],
        *,
        fresh: bool = False,
    ) -> None:
        """A resource is in the compartments of what it follows: a Binary of its securityContext (R4
        Binary: "the resource that determines access"), any other of what its Reference(Any) elements
        point at (Provenance.target, ...; docs/security.md). Kept in step, transitively, when a
        followed resource is written (created later, moved into other compartments)."""
        batch = {s.pk: s for s, _full in items}
        r = idx_reference
        # The followers to (re)compute: this batch's own, then those of what changed, round by round.
        todo = set(following)
        keys = [(s.res_type, s.res_id) for s, _full in items]
        for round_ in range(MAX_FOLLOW_DEPTH):
            # Nothing can follow a resource whose id was drawn a moment ago (a random UUID).
            for start in range(0, 0 if fresh and round_ == 0 else len(keys), 500):
                todo.update(
                    conn.execute(
                        select(r.c.res_pk).where(
                            r.c.param.in_((SECURITY_CONTEXT, FOLLOWS)),
                            tuple_(r.c.target_type, r.c.target_id).in_(keys[start : start + 500]),
                        )
                    ).scalars()
                )
            if not todo:
                return
            keys = []
            for pk in sorted(todo):
                if self._refollow(conn, pk, batch, patients):
                    follower = batch.get(pk) or self.by_pks(conn, [pk])[pk]
                    keys.append((follower.res_type, follower.res_id))
            todo = set()
            if not keys:
                return
        log.warning("compartments followed %d levels deep: the rest is left as it was", MAX_FOLLOW_DEPTH)

    @staticmethod
    def _follows(conn: Connection, pks: list[int]) -> list[tuple[str, str]]:
        r = idx_reference
        rows = conn.execute(
            select(r.c.target_type, r.c.target_id).where(
                r.c.res_pk.in_(pks), r.c.param.in_((SECURITY_CONTEXT, FOLLOWS))
            )
        ).all()
        return [(t, i) for t, i in rows if t and i]

    def _refollow(
        self, conn: Connection, pk: int, batch: dict[int, Stored], patients: dict[int, tuple[str, ...]]
    ) -> bool:
        """Recompute a follower's FOLLOWS compartment rows from what it follows; True if they changed."""
        c = idx_compartment
        wanted: list[str] = []
        for target_type, target_id in self._follows(conn, [pk]):
            wanted.extend(self._context_patients(conn, (target_type, target_id)))
        old = conn.execute(select(c.c.patient_id, c.c.param, c.c.res_type).where(c.c.res_pk == pk)).all()
        own = [p for p, param, _t in old if param != FOLLOWS]
        new = [p for p in dict.fromkeys(wanted) if p not in own]
        if set(new) == {p for p, param, _t in old if param == FOLLOWS}:
            if pk in batch:
                patients[pk] = tuple(dict.fromkeys([*own, *new]))
            return False
        stored = batch.get(pk) or self.by_pks(conn, [pk])[pk]
        if pk not in batch:
            # Moving a resource into other compartments is a write of it: whoever writes what it
            # follows must have been able to write it where it was.
            self._check(conn, [stored], "before")
        res_type = stored.res_type
        conn.execute(delete(c).where(c.c.res_pk == pk, c.c.param == FOLLOWS))
        if new:
            conn.execute(
                insert(c),
                [{"res_pk": pk, "res_type": res_type, "param": FOLLOWS, "patient_id": p} for p in new],
            )
        everyone = tuple(dict.fromkeys([*own, *new]))
        if pk in batch:
            patients[pk] = everyone  # its history rows are written with the batch's
            return True
        # Not rewritten: its current version follows.
        hc = history_compartment
        current = conn.execute(select(resource.c.version).where(resource.c.pk == pk)).scalar_one()
        conn.execute(delete(hc).where(hc.c.res_pk == pk, hc.c.version == current))
        if everyone:
            conn.execute(insert(hc), [{"res_pk": pk, "version": current, "patient_id": p} for p in everyone])
        return True

    @staticmethod
    def _record_compartments(conn: Connection, stored: list[Stored]) -> None:
        """The compartments of these new versions, kept with the version (vread, history)."""
        rows = [
            {"res_pk": s.pk, "version": s.version, "patient_id": p}
            for s in stored
            for p in s.compartment or ()
        ]
        if rows:
            insert_rows(conn, history_compartment, rows)

    @staticmethod
    def _context_patients(conn: Connection, context: tuple[str, str]) -> tuple[str, ...]:
        """The compartments of a followed resource: UNRESOLVED while it is not (yet) here."""
        if context[0] == "Patient":
            return (context[1],)
        target = conn.execute(
            select(resource.c.pk).where(resource.c.res_type == context[0], resource.c.res_id == context[1])
        ).scalar()
        if target is None:
            return (UNRESOLVED,)  # not (yet) here: nobody's until it is
        c = idx_compartment
        found = conn.execute(select(c.c.patient_id).where(c.c.res_pk == target).distinct()).scalars()
        return tuple(found)


# How deep a chain of followers (a Provenance of a Provenance of ...) is kept in step on a write.
MAX_FOLLOW_DEPTH = 8

# Bulk index rows go through COPY on PostgreSQL (several times cheaper than an executemany).
COPY_THRESHOLD = 200


def _copy_rows(conn: Connection, table: str, rows: list[dict[str, Any]]) -> None:
    """COPY ``rows`` into ``table`` on the connection's own DBAPI connection (same transaction)."""
    columns = list(rows[0])
    dbapi = cast("psycopg.Connection[Any]", conn.connection.dbapi_connection)
    with dbapi.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[c] for c in columns])


_INSERTS: dict[tuple[str, tuple[str, ...], str], str] = {}


def insert_rows(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """``INSERT`` of plain rows (str, int, float, bool, None) as driver SQL built once per table and
    column set: SQLAlchemy's statement building and caching were most of a create's CPU (issue 21).
    Driver errors are still wrapped (IntegrityError...) by ``exec_driver_sql``."""
    if not rows:
        return
    columns = tuple(rows[0])
    key = (table.name, columns, conn.dialect.paramstyle)
    sql = _INSERTS.get(key)
    if sql is None:
        mark = placeholder(conn.dialect.paramstyle)
        sql = _INSERTS[key] = (
            f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
        )
    conn.exec_driver_sql(sql, [tuple(row[c] for c in columns) for row in rows])
