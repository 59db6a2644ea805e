"""transaction and batch: POST [base] with a Bundle (R4 http.html#transaction).

A transaction runs in ONE database transaction in the spec's order (DELETE, POST, PUT/PATCH,
GET/HEAD, then conditional references); ``urn:uuid:`` fullUrls are replaced in every reference
and uri/url/oid/uuid element, a resource may be the target of one entry only, and any failing
entry rolls everything back. A batch runs each entry on its own, in the same order.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from flask import Response
from sqlalchemy.engine import Connection

from auth.policy import Principal
from coordination_api.core.versions import version_number
from coordination_api.core.writes import (
    check_update_body,
    conditional_delete_in,
    conditional_target,
    create_in,
    criteria_hash,
    delete_in,
    find_matches,
    one_match,
    parse_criteria,
    run_create_hooks,
    run_put_hooks,
    update_in,
)
from coordination_api.errors import Category, FhirError, Issue, operation_outcome, outcome_for
from coordination_api.fhir import access
from coordination_api.fhir.context import Services, WriteResult, services
from coordination_api.fhir.links import rewrite_links
from coordination_api.fhir.resources import (
    check_type,
    enforce_base,
    parse_json,
    supported_types,
    validate_resource,
)
from coordination_api.fhir.search import bundle_json
from coordination_api.search.dates import format_instant
from coordination_api.search.executor import run_search, snapshot_pk
from coordination_api.search.paging import PageToken
from coordination_api.storage.repository import Stored, new_id
from coordination_api.web.http import base_url, check_content_type, fhir_json_response, prefer, read_body

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_RESTFUL_URL = re.compile(r"^(?P<base>.+)/(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})$")
_RELATIVE_REFERENCE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")


@dataclass
class Entry:
    """One Bundle.entry, parsed."""

    index: int
    method: str
    url: str
    resource_type: str
    res_id: str | None
    version: str | None
    params: list[tuple[str, str]]
    full_url: str | None
    resource: dict[str, Any] | None
    if_none_exist: str | None
    if_match: int | None
    result: WriteResult | None = None
    body: str | None = None

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


def _strip_base(url: str, base: str) -> str:
    if base and url.startswith(base + "/"):
        return url[len(base) + 1 :]
    if "://" in url:
        path = urlsplit(url)
        query = f"?{path.query}" if path.query else ""
        parts = path.path.strip("/").split("/")
        if "fhir" in parts:
            parts = parts[parts.index("fhir") + 1 :]
        return "/".join(parts) + query
    return url.lstrip("/")


def _etag(value: Any, where: str) -> int | None:
    if value is None:
        return None
    text = str(value).strip()
    number = version_number(text.removeprefix("W/").strip('"'))
    if number is None:
        raise FhirError(
            Category.INVALID,
            f"{where}.request.ifMatch '{text}' is not a version ETag like W/\"3\"",
            expression=f"{where}.request.ifMatch",
        )
    return number


def _check_url_shape(method: str, segments: list[str], query: str, url: str, where: str) -> None:
    """The interactions a Bundle entry may carry (R4 http.html#summary), by URL shape."""
    expression = f"{where}.request.url"
    if any(s.startswith("$") for s in segments) or (len(segments) > 1 and segments[1].startswith("_")):
        raise FhirError(
            Category.NOT_SUPPORTED,
            f"{where}: '{url}' is not supported inside a Bundle",
            expression=expression,
        )
    if method == "POST" and len(segments) != 1:
        raise FhirError(
            Category.INVALID, f"{where}: a POST (create) url is '[type]', not '{url}'", expression=expression
        )
    if method in {"PUT", "DELETE"} and not (len(segments) == 2 or (len(segments) == 1 and query)):
        raise FhirError(
            Category.INVALID,
            f"{where}: a {method} url is '[type]/[id]' or '[type]?[criteria]', not '{url}'",
            expression=expression,
        )
    if method in {"GET", "HEAD"} and not (
        len(segments) <= 2 or (len(segments) == 4 and segments[2] == "_history")
    ):
        raise FhirError(
            Category.NOT_SUPPORTED,
            f"{where}: '{url}' is not supported inside a Bundle (read, vread and search are)",
            expression=expression,
        )


# SMART permission each entry needs (a GET without an id is a search).
_PERMISSION = {"GET": "r", "HEAD": "r", "POST": "c", "PUT": "u", "DELETE": "d"}


def parse_entry(index: int, raw: Any, base: str, bundle_type: str) -> Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise FhirError(Category.STRUCTURE, f"{where} must be an object", expression=where)
    req = raw.get("request")
    if not isinstance(req, dict):
        raise FhirError(
            Category.REQUIRED,
            f"{where}.request is required in a {bundle_type}",
            expression=f"{where}.request",
        )
    method = str(req.get("method", "")).upper()
    if method not in ORDER:
        raise FhirError(
            Category.VALUE,
            f"{where}.request.method '{req.get('method')}' is not one of GET, HEAD, POST, PUT, DELETE",
            expression=f"{where}.request.method",
        )
    if method == "PATCH":
        raise FhirError(
            Category.NOT_SUPPORTED,
            f"{where}: PATCH is not supported in Bundles by this server",
            expression=f"{where}.request.method",
        )
    url = req.get("url")
    if not isinstance(url, str) or not url:
        raise FhirError(
            Category.REQUIRED, f"{where}.request.url is required", expression=f"{where}.request.url"
        )
    path, _, query = _strip_base(url, base).partition("?")
    segments = [s for s in path.split("/") if s]
    if not segments:
        raise FhirError(
            Category.INVALID,
            f"{where}.request.url '{url}' has no resource type",
            expression=f"{where}.request.url",
        )
    _check_url_shape(method, segments, query, url, where)
    resource_type = segments[0]
    try:
        check_type(resource_type, write=method not in {"GET", "HEAD"})
        access.require(resource_type, _PERMISSION[method] if len(segments) > 1 or method != "GET" else "s")
    except FhirError as exc:
        raise FhirError(
            exc.category, f"{where}.request.url: {exc.diagnostics}", expression=f"{where}.request.url"
        ) from None
    resource = raw.get("resource")
    if method in {"POST", "PUT"}:
        if resource is None:
            raise FhirError(
                Category.REQUIRED,
                f"{where}.resource is required for {method}",
                expression=f"{where}.resource",
            )
        validate_resource(resource, resource_type, root=f"{where}.resource")
    if_none_exist = req.get("ifNoneExist")
    return Entry(
        index=index,
        method=method,
        url=url,
        resource_type=resource_type,
        res_id=segments[1] if len(segments) > 1 else None,
        version=segments[3] if len(segments) == 4 else None,
        params=parse_qsl(query, keep_blank_values=True),
        full_url=raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None,
        resource=resource if isinstance(resource, dict) else None,
        if_none_exist=if_none_exist if method == "POST" and isinstance(if_none_exist, str) else None,
        if_match=_etag(req.get("ifMatch"), where),
    )


def _is_conditional(reference: str) -> bool:
    """``Type?criteria``: a conditional reference (R4 http.html#trules, "Conditional References")."""
    head, sep, _ = reference.partition("?")
    return bool(sep) and "/" not in head and ":" not in head


def _conditional_types(node: Any) -> set[str]:
    """Resource types named by the conditional references under ``node``."""
    found: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key, value in current.items():
                if key == "reference" and isinstance(value, str) and _is_conditional(value):
                    found.add(value.partition("?")[0])
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(current, list):
            stack.extend(current)
    return found


class TransactionProcessor:
    """Runs entries in one database transaction; ``batch`` refuses links between entries. ``who``:
    the client whose Bundle this is, whose POST and PUT entries run the write hooks as its plain
    POST and PUT do; None for the operator's import, which loads resources as they were exported."""

    def __init__(
        self,
        conn: Connection,
        svc: Services,
        base: str,
        urn_map: dict[str, str] | None = None,
        *,
        batch: bool = False,
        who: Principal | None = None,
    ) -> None:
        self.conn = conn
        self.svc = svc
        self.base = base
        self.batch = batch
        self.who = who
        self.urn_map: dict[str, str] = dict(urn_map or {})
        self._conditional_refs: dict[str, str] = {}
        self._targets: dict[str, Entry] = {}
        self._conditional_creates: dict[str, Entry] = {}

    def run(self, entries: list[Entry]) -> None:
        ordered = sorted(entries, key=lambda e: (ORDER[e.method], e.index))
        for entry in ordered:
            if entry.method == "DELETE":
                _guard(entry, self._delete)
        for entry in ordered:  # decide every id before rewriting references
            if entry.method == "POST":
                _guard(entry, self._plan_post)
            elif entry.method == "PUT":
                _guard(entry, self._plan_put)
        self._write_all([e for e in ordered if e.method in {"POST", "PUT"} and e.result is None])
        for entry in ordered:  # a write hook may have written an entry's resource again
            if entry.method in {"POST", "PUT", "PATCH"} and entry.result and entry.result.stored:
                entry.result.stored = self.svc.repo.latest(self.conn, entry.result.stored)
        for entry in ordered:
            if entry.method in {"GET", "HEAD"}:
                _guard(entry, lambda e: read_entry(self.conn, self.svc, e, self.base))

    def _claim(self, entry: Entry, resource_type: str, res_id: str) -> None:
        """A resource can appear in a transaction once (R4 http.html#trules, steps 1-3)."""
        identity = f"{resource_type}/{res_id}"
        other = self._targets.setdefault(identity, entry)
        if other is not entry:
            raise FhirError(
                Category.INVALID,
                f"{identity} is the target of both {other.where} and {entry.where}; "
                "a resource can appear in a transaction only once",
                expression=entry.where,
            )

    def _delete(self, entry: Entry) -> None:
        if entry.res_id:
            self._claim(entry, entry.resource_type, entry.res_id)
            entry.result = delete_in(self.conn, self.svc, entry.resource_type, entry.res_id, entry.if_match)
        else:
            entry.result = conditional_delete_in(self.conn, self.svc, entry.resource_type, entry.params)
            if entry.result.stored is not None:
                self._claim(entry, entry.resource_type, entry.result.stored.res_id)
        entry.result.status = 204 if entry.result.stored is None else 200

    def _plan_post(self, entry: Entry) -> None:
        if self.who is not None:
            # Before the id is decided: a create hook may set the criteria (an NdE's resend).
            assert entry.resource is not None
            body = {k: v for k, v in entry.resource.items() if k != "id"}
            pending = run_create_hooks(
                self.conn, self.svc, self.who, entry.resource_type, body, entry.if_none_exist
            )
            entry.resource, entry.if_none_exist = pending.body, pending.if_none_exist
        if entry.if_none_exist:
            params = parse_criteria(entry.if_none_exist)
            key = criteria_hash(entry.resource_type, params)
            first = self._conditional_creates.setdefault(key, entry)
            if first is not entry:
                raise FhirError(
                    Category.INVALID,
                    f"{first.where} and {entry.where} conditionally create the same "
                    f"{entry.resource_type} ('{entry.if_none_exist}'); "
                    "a resource can appear in a transaction only once",
                    expression=f"{entry.where}.request.ifNoneExist",
                )
            match = one_match(
                self.conn,
                self.svc,
                entry.resource_type,
                params,
                lambda n: f"ifNoneExist '{entry.if_none_exist}' matches {n} resources",
                expression=f"{entry.where}.request.ifNoneExist",
            )
            if match is not None:
                entry.result = WriteResult(200, match)
                self._claim(entry, match.res_type, match.res_id)
                self._map(entry, match.res_type, match.res_id)
                return
        preset = self.urn_map.get(entry.full_url or "") if not entry.if_none_exist else None
        if preset and preset.startswith(entry.resource_type + "/"):
            entry.res_id = preset.split("/", 1)[1]  # id reserved up front (chunked import)
        else:
            entry.res_id = new_id()
            self._map(entry, entry.resource_type, entry.res_id)
        self._claim(entry, entry.resource_type, entry.res_id)

    def _plan_put(self, entry: Entry) -> None:
        assert entry.resource is not None
        if entry.res_id is None:
            entry.res_id = conditional_target(
                self.conn, self.svc, entry.resource_type, entry.params, entry.resource
            )
            entry.resource = {**entry.resource, "id": entry.res_id}
        self._claim(entry, entry.resource_type, entry.res_id)
        self._map(entry, entry.resource_type, entry.res_id)

    def _map(self, entry: Entry, resource_type: str, res_id: str) -> None:
        if entry.full_url:
            self.urn_map[entry.full_url] = f"{resource_type}/{res_id}"

    def _write_all(self, pending: list[Entry]) -> None:
        """Write POSTs and PUTs; conditional references are resolved last (R4 http.html#trules, step 5).

        An entry whose conditional references name a type the Bundle still has to write waits
        until those are written, so ``Organization?identifier=…`` finds an Organization created
        by the same transaction; a cycle is resolved against what is written so far.
        """
        needs = {e.index: _conditional_types(e.resource) for e in pending}
        while pending:
            waiting = Counter(e.resource_type for e in pending)
            ready = [
                e for e in pending if not any(waiting[t] - (t == e.resource_type) > 0 for t in needs[e.index])
            ] or pending
            for entry in ready:
                _guard(entry, self._rewrite)
            self._put_hooks(ready)
            self._write_bulk(ready)
            for entry in ready:
                if entry.result is None:
                    _guard(entry, self._write)
            pending = [e for e in pending if e.result is None]

    def _put_hooks(self, ready: list[Entry]) -> None:
        """A client's PUT entries run the write hooks once their references are resolved: the create
        hooks for an update-as-create, the update hooks otherwise (core/writes.run_put_hooks)."""
        puts = [e for e in ready if e.method == "PUT" and e.result is None]
        who = self.who
        if who is None or not puts:
            return
        current = self.svc.repo.current_many(self.conn, [(e.resource_type, e.res_id or "") for e in puts])

        def hooks(entry: Entry) -> None:
            assert entry.resource is not None and entry.res_id is not None
            check_update_body(entry.res_id, entry.resource)
            entry.resource = run_put_hooks(
                self.conn,
                self.svc,
                who,
                entry.resource_type,
                entry.res_id,
                entry.resource,
                current.get((entry.resource_type, entry.res_id)),
            )

        for entry in puts:
            _guard(entry, hooks)

    def _write_bulk(self, ready: list[Entry]) -> None:
        """Plain creates (POST, and PUT of an id that does not exist) in a few statements.

        Imports and large transactions are mostly these; conditional creates, updates of existing
        resources and If-Match writes go through the one-by-one path.
        """
        creates = [e for e in ready if e.method == "POST" and not e.if_none_exist and e.result is None]
        puts = [e for e in ready if e.method == "PUT" and e.if_match is None and e.result is None]
        if puts:
            for entry in puts:
                assert entry.resource is not None and entry.res_id is not None
                _guard(entry, lambda e: check_update_body(e.res_id or "", e.resource or {}))
            existing = self.svc.repo.current_many(
                self.conn, [(e.resource_type, e.res_id or "") for e in puts]
            )
            creates += [e for e in puts if (e.resource_type, e.res_id) not in existing]
        if len(creates) < 2:
            return
        for method in ("POST", "PUT"):  # the history records how each version was written
            group = [e for e in creates if e.method == method]
            items = []
            for entry in group:
                assert entry.resource is not None
                body = (
                    entry.resource
                    if method == "PUT"
                    else {k: v for k, v in entry.resource.items() if k != "id"}
                )
                items.append((entry.resource_type, entry.res_id, body))
            for entry, stored in zip(group, self.svc.repo.create_many(self.conn, items, method), strict=True):
                entry.result = WriteResult(201, stored)

    def _rewrite(self, entry: Entry) -> None:
        assert entry.resource is not None

        def reference(value: str, expression: str) -> str:
            return self._resolve(value, expression, entry)

        entry.resource = rewrite_links(
            entry.resource, f"{entry.where}.resource", reference, lambda v: self.urn_map.get(v, v)
        )

    def _resolve(self, reference: str, expression: str, entry: Entry) -> str:
        if reference in self.urn_map:
            return self.urn_map[reference]
        if reference.startswith(("urn:uuid:", "urn:oid:")):
            if self.batch:
                raise FhirError(
                    Category.INVALID,
                    f"Reference '{reference}' cannot be resolved: the entries of a batch are independent "
                    "and may not reference each other (use a transaction)",
                    expression=expression,
                )
            raise FhirError(
                Category.INVALID,
                f"Reference '{reference}' does not match any fullUrl in the Bundle",
                expression=expression,
            )
        if _is_conditional(reference):
            return self._resolve_conditional(reference, expression)
        # A relative reference inside an entry with a RESTful fullUrl is relative to that base
        # (bundle.html#references): it may name another entry of this Bundle.
        owner = _RESTFUL_URL.match(entry.full_url or "")
        if owner and "://" in owner["base"] and _RELATIVE_REFERENCE.match(reference):
            return self.urn_map.get(f"{owner['base']}/{reference}", reference)
        return reference

    def _resolve_conditional(self, reference: str, expression: str) -> str:
        if self.batch:
            raise FhirError(
                Category.INVALID,
                f"Conditional reference '{reference}' is allowed only in a transaction, not in a batch",
                expression=expression,
            )
        if reference not in self._conditional_refs:
            resource_type, _, query = reference.partition("?")
            if resource_type not in supported_types():
                raise FhirError(
                    Category.INVALID,
                    f"Conditional reference '{reference}' names an unknown resource type",
                    expression=expression,
                )
            matches = find_matches(self.conn, self.svc, resource_type, parse_criteria(query))
            if len(matches) != 1:
                raise FhirError(
                    Category.PRECONDITION_FAILED,
                    f"Conditional reference '{reference}' matches {len(matches)} resources, not one",
                    expression=expression,
                )
            self._conditional_refs[reference] = f"{resource_type}/{matches[0].res_id}"
        return self._conditional_refs[reference]

    def _write(self, entry: Entry) -> None:
        assert entry.resource is not None
        if entry.method == "POST":
            body = {k: v for k, v in entry.resource.items() if k != "id"}
            result = create_in(
                self.conn, self.svc, entry.resource_type, body, entry.if_none_exist, entry.res_id
            )
            if result.stored is not None and result.stored.res_id != entry.res_id:
                raise FhirError(Category.CONFLICT, "A concurrent conditional create won the race; retry")
            entry.result = result
        else:
            assert entry.res_id is not None
            entry.result = update_in(
                self.conn, self.svc, entry.resource_type, entry.res_id, entry.resource, entry.if_match
            )


def _guard(entry: Entry, action: Callable[[Entry], Any]) -> Any:
    """Run one step of an entry; a FhirError comes out naming that entry."""
    try:
        return action(entry)
    except FhirError as exc:
        raise _in_entry(exc, entry) from None


def _in_entry(error: FhirError, entry: Entry) -> FhirError:
    """Say which entry failed: diagnostics prefixed, FHIRPaths rooted at the entry."""
    prefix = f"{entry.where} ({entry.method} {entry.url}): "
    if not error.diagnostics.startswith(entry.where):
        error.diagnostics = prefix + error.diagnostics
    for issue in error.issues:
        if not issue.diagnostics.startswith(entry.where):
            issue.diagnostics = prefix + issue.diagnostics
        issue.expression = [_entry_expression(e, entry) for e in issue.expression or []] or [entry.where]
    return error


def _entry_expression(expression: str, entry: Entry) -> str:
    for root in ("Resource", entry.resource_type):
        if expression == root or expression.startswith(root + "."):
            return f"{entry.where}.resource{expression[len(root) :]}"
    return expression


def read_entry(conn: Connection, svc: Services, entry: Entry, base: str) -> None:
    """GET inside a Bundle: read, vread or search."""
    repo = svc.repo
    if entry.res_id:
        name = f"{entry.resource_type}/{entry.res_id}"
        if entry.version is not None:
            name += f"/_history/{entry.version}"
            number = version_number(entry.version)
            stored = (
                repo.version(conn, entry.resource_type, entry.res_id, number) if number is not None else None
            )
        else:
            stored = repo.current(conn, entry.resource_type, entry.res_id)
        if stored is None:
            raise FhirError(Category.NOT_FOUND, f"{name} is not known")
        if entry.version is None:
            access.check_stored(conn, stored)
        else:
            access.check_version(conn, stored)  # the version's own compartments decide
        if stored.deleted:
            raise FhirError(Category.DELETED, f"{name} was deleted")
        entry.result = WriteResult(200, stored)
        entry.body = stored.content
    else:
        query = svc.compiler.compile(
            entry.resource_type, entry.params, base_url=base, hop_guard=access.hop_guard
        )
        token = PageToken(entry.params, 0, query.count, snapshot_pk(conn))
        query.max_pk = token.bound
        access.secure(query)
        result = run_search(conn, repo, query, svc.settings.max_include_results)
        access.note_results(conn, result.matches + result.included)
        if query.summary == "count" or query.count == 0:
            access.note_counted(conn, query)
        entry.result = WriteResult(200, None)
        entry.body = bundle_json(query, result, base, f"{base}/{entry.resource_type}", token)
    if entry.method == "HEAD":
        entry.body = None


def _status(code: int) -> str:
    """Bundle.entry.response.status: the HTTP code and its reason phrase."""
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _response_entry(entry: Entry, base: str, mode: str) -> str:
    """One transaction-/batch-response entry; ``mode`` is the Prefer return value (R4 http.html#prefer)."""
    result = entry.result
    assert result is not None
    response: dict[str, Any] = {"status": _status(result.status)}
    stored: Stored | None = result.stored
    out: dict[str, Any] = {}
    if stored is not None:
        if not stored.deleted:
            out["fullUrl"] = f"{base}/{stored.res_type}/{stored.res_id}"
        if entry.method in {"POST", "PUT"}:
            response["location"] = result.location(base)
        response["etag"] = stored.etag
        response["lastModified"] = format_instant(stored.last_updated)
    if mode == "operationoutcome" and entry.method not in {"GET", "HEAD"}:
        response["outcome"] = result.outcome or operation_outcome(
            [Issue("information", "informational", f"{entry.method} {entry.url}: {response['status']}")]
        )
    elif entry.method == "DELETE" and result.outcome is not None and result.status == 200:
        response["outcome"] = result.outcome
    out["response"] = response
    encoded = orjson.dumps(out).decode()
    # return=minimal: "a Bundle with just the Bundle.entry.response populated for each entry".
    body = entry.body if mode != "minimal" else None
    if body is None and mode == "representation" and entry.method in {"POST", "PUT"} and stored is not None:
        body = stored.content
    if body is not None:
        encoded = encoded[:-1] + ',"resource":' + body + "}"
    return encoded


def _error_entry(error: FhirError) -> str:
    return orjson.dumps(
        {"response": {"status": _status(error.status), "outcome": outcome_for(error)}}
    ).decode()


def parse_bundle(body: bytes, max_entries: int) -> tuple[str, list[Any]]:
    """The Bundle's type and raw entries, its envelope checked (entries' resources come later)."""
    bundle = parse_json(body)
    if not isinstance(bundle, dict):
        raise FhirError(Category.STRUCTURE, "A FHIR resource must be a JSON object")
    if not isinstance(bundle.get("resourceType"), str):
        raise FhirError(Category.REQUIRED, "Missing 'resourceType'", expression="Resource")
    if bundle["resourceType"] != "Bundle":
        raise FhirError(
            Category.INVALID,
            f"POST to the base expects a Bundle of type transaction or batch, not a {bundle['resourceType']}",
        )
    bundle_type = bundle.get("type")
    if bundle_type not in {"transaction", "batch"}:
        raise FhirError(
            Category.INVALID,
            f"Bundle.type must be 'transaction' or 'batch', not '{bundle_type}'",
            expression="Bundle.type",
        )
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise FhirError(Category.STRUCTURE, "Bundle.entry must be an array", expression="Bundle.entry")
    if len(entries) > max_entries:
        raise FhirError(Category.TOO_COSTLY, f"Bundle has {len(entries)} entries; the limit is {max_entries}")
    # The envelope and each entry's fullUrl/request; each resource is validated with its entry.
    # In a batch a bad entry.request fails that entry only (parse_entry), not the whole Bundle.
    per_entry = {"resource", "request"} if bundle_type == "batch" else {"resource"}
    envelope = {
        **bundle,
        "entry": [
            {k: v for k, v in e.items() if k not in per_entry} if isinstance(e, dict) else e for e in entries
        ],
    }
    validate_resource(envelope, "Bundle", base=False)
    # bdl-* on the whole Bundle; entry.request (bdl-3) is checked entry by entry (400, or that entry's
    # failure in a batch); an empty transaction ("entry": []) stays accepted.
    whole = {k: v for k, v in bundle.items() if not (k == "entry" and v == [])}
    # In a batch, entry.request is judged with its entry (parse_entry), as for the model above.
    skip = frozenset({"Bundle.entry.request"}) if bundle_type == "batch" else frozenset()
    enforce_base(whole, "Bundle", entry_resources=False, ignore=frozenset({"bdl-3"}), skip=skip)
    return str(bundle_type), entries


def process_transaction(svc: Services, raw_entries: list[Any], base: str) -> list[Entry]:
    entries = [parse_entry(i, raw, base, "transaction") for i, raw in enumerate(raw_entries)]
    with svc.repo.writing() as conn:
        TransactionProcessor(conn, svc, base, who=access.principal()).run(entries)
    return entries


def process_batch(svc: Services, raw_entries: list[Any], base: str, mode: str) -> list[str]:
    """Each entry on its own, in the transaction order (R4 http.html#brules); answers in request order."""
    parts: dict[int, str] = {}
    entries: list[Entry] = []
    for index, raw in enumerate(raw_entries):
        try:
            entries.append(parse_entry(index, raw, base, "batch"))
        except FhirError as error:
            parts[index] = _error_entry(error)
    for entry in sorted(entries, key=lambda e: (ORDER[e.method], e.index)):
        try:
            if entry.method in {"GET", "HEAD"}:
                with svc.repo.reading() as conn:
                    _guard(entry, lambda e: read_entry(conn, svc, e, base))
            else:
                with svc.repo.writing() as conn:
                    TransactionProcessor(conn, svc, base, batch=True, who=access.principal()).run([entry])
            parts[entry.index] = _response_entry(entry, base, mode)
        except FhirError as error:
            parts[entry.index] = _error_entry(error)
    return [parts[index] for index in range(len(raw_entries))]


def transaction_or_batch() -> Response:
    check_content_type()
    svc = services()
    bundle_type, raw_entries = parse_bundle(read_body(), svc.settings.max_transaction_entries)
    base = base_url()
    mode = prefer("return") or "representation"
    if bundle_type == "transaction":
        entries = process_transaction(svc, raw_entries, base)
        parts = [_response_entry(e, base, mode) for e in entries]
    else:
        parts = process_batch(svc, raw_entries, base, mode)
    head = orjson.dumps({"resourceType": "Bundle", "type": f"{bundle_type}-response"}).decode()
    return fhir_json_response(head[:-1] + ',"entry":[' + ",".join(parts) + "]}")
