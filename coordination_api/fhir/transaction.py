"""transaction and batch: POST [base] with a Bundle (R4 http.html#transaction).

A transaction runs in ONE database transaction in the spec's order (DELETE, POST, PUT/PATCH,
GET/HEAD); ``urn:uuid:`` fullUrls and conditional references are resolved before anything is
written, and any failing entry rolls everything back. A batch runs each entry on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from flask import Response
from sqlalchemy.engine import Connection

from coordination_api.errors import Category, FhirError, outcome_for
from coordination_api.fhir.context import Services, WriteResult, services
from coordination_api.fhir.create import create_in
from coordination_api.fhir.delete import conditional_delete_in, delete_in
from coordination_api.fhir.http import base_url, check_content_type, fhir_json_response, prefer, read_body
from coordination_api.fhir.resources import check_type, parse_json, validate_resource
from coordination_api.fhir.search import bundle_json
from coordination_api.fhir.update import update_in
from coordination_api.fhir.write_common import find_matches
from coordination_api.search.dates import format_instant
from coordination_api.search.executor import run_search, snapshot_pk
from coordination_api.search.paging import PageToken
from coordination_api.storage.repository import Stored, new_id

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 304: "304 Not Modified"}


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
    digits = text.removeprefix("W/").strip('"')
    if not digits.isdigit():
        raise FhirError(Category.INVALID, f"{where}.request.ifMatch '{text}' is not a version ETag")
    return int(digits)


def parse_entry(index: int, raw: Any, base: str, bundle_type: str) -> Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise FhirError(Category.STRUCTURE, f"{where} must be an object", expression=where)
    req = raw.get("request")
    if not isinstance(req, dict):
        raise FhirError(
            Category.REQUIRED, f"{where}.request is required in a {bundle_type}", expression=where
        )
    method = str(req.get("method", "")).upper()
    if method not in ORDER:
        raise FhirError(
            Category.VALUE,
            f"{where}.request.method '{req.get('method')}' is not supported",
            expression=f"{where}.request.method",
        )
    url = req.get("url")
    if not isinstance(url, str) or not url:
        raise FhirError(
            Category.REQUIRED, f"{where}.request.url is required", expression=f"{where}.request.url"
        )
    relative = _strip_base(url, base)
    path, _, query = relative.partition("?")
    segments = [s for s in path.split("/") if s]
    if not segments:
        raise FhirError(Category.NOT_SUPPORTED, f"{where}.request.url '{url}' has no resource type")
    resource_type = segments[0]
    check_type(resource_type)
    res_id = segments[1] if len(segments) > 1 and segments[1] != "_search" else None
    version = segments[3] if len(segments) > 3 and segments[2] == "_history" else None
    resource = raw.get("resource")
    if method in {"POST", "PUT"}:
        if resource is None:
            raise FhirError(Category.REQUIRED, f"{where}.resource is required for {method}", expression=where)
        validate_resource(resource, resource_type, root=f"{where}.resource")
    if method == "PATCH":
        raise FhirError(
            Category.NOT_SUPPORTED,
            f"{where}: PATCH is not supported in Bundles by this server",
            expression=f"{where}.request.method",
        )
    return Entry(
        index=index,
        method=method,
        url=url,
        resource_type=resource_type,
        res_id=res_id,
        version=version,
        params=parse_qsl(query, keep_blank_values=True),
        full_url=raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None,
        resource=resource if isinstance(resource, dict) else None,
        if_none_exist=req.get("ifNoneExist") if isinstance(req.get("ifNoneExist"), str) else None,
        if_match=_etag(req.get("ifMatch"), where),
    )


def _rewrite(node: Any, resolve: Any) -> Any:
    """Replace every Reference.reference through ``resolve`` (urn:uuid and conditional references)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                out[key] = resolve(value)
            else:
                out[key] = _rewrite(value, resolve)
        return out
    if isinstance(node, list):
        return [_rewrite(item, resolve) for item in node]
    return node


class TransactionProcessor:
    """Runs a transaction's entries in one database transaction."""

    def __init__(
        self, conn: Connection, svc: Services, base: str, urn_map: dict[str, str] | None = None
    ) -> None:
        self.conn = conn
        self.svc = svc
        self.base = base
        self.urn_map: dict[str, str] = dict(urn_map or {})
        self._conditional_refs: dict[str, str] = {}

    def run(self, entries: list[Entry]) -> None:
        ordered = sorted(entries, key=lambda e: (ORDER[e.method], e.index))
        seen_targets: set[str] = set()
        for entry in ordered:
            key = f"{entry.method} {entry.resource_type}/{entry.res_id}" if entry.res_id else ""
            if key and entry.method != "GET" and key in seen_targets:
                raise FhirError(Category.INVALID, f"{entry.where}: {key} appears twice in the transaction")
            seen_targets.add(key)
        for entry in ordered:
            if entry.method == "DELETE":
                self._guard(entry, self._delete)
        for entry in ordered:  # decide every id before rewriting references
            if entry.method == "POST":
                self._guard(entry, self._plan_post)
            elif entry.method == "PUT":
                self._guard(entry, self._plan_put)
        for entry in ordered:
            if entry.resource is not None and entry.method in {"POST", "PUT"}:
                entry.resource = self._guard(entry, lambda e: _rewrite(e.resource, self._resolve))
        for entry in ordered:
            if entry.method in {"POST", "PUT"} and entry.result is None:
                self._guard(entry, self._write)
        for entry in ordered:
            if entry.method in {"GET", "HEAD"}:
                self._guard(entry, lambda e: read_entry(self.conn, self.svc, e, self.base))

    @staticmethod
    def _guard(entry: Entry, action: Any) -> Any:
        try:
            return action(entry)
        except FhirError as exc:
            exc.diagnostics = f"{entry.where} ({entry.method} {entry.url}): {exc.diagnostics}"
            for issue in exc.issues:
                issue.diagnostics = f"{entry.where}: {issue.diagnostics}"
            raise

    def _delete(self, entry: Entry) -> None:
        if entry.res_id:
            entry.result = delete_in(self.conn, self.svc, entry.resource_type, entry.res_id, entry.if_match)
        else:
            entry.result = conditional_delete_in(self.conn, self.svc, entry.resource_type, entry.params)
        entry.result.status = 204 if entry.result.stored is None else 200

    def _plan_post(self, entry: Entry) -> None:
        if entry.if_none_exist:
            matches = find_matches(self.conn, self.svc, entry.resource_type, _criteria(entry.if_none_exist))
            if len(matches) > 1:
                raise FhirError(
                    Category.PRECONDITION_FAILED,
                    f"ifNoneExist '{entry.if_none_exist}' matches {len(matches)} resources",
                )
            if matches:
                entry.result = WriteResult(200, matches[0])
                self._map(entry, matches[0].res_type, matches[0].res_id)
                return
        preset = self.urn_map.get(entry.full_url or "") if not entry.if_none_exist else None
        if preset and preset.startswith(entry.resource_type + "/"):
            entry.res_id = preset.split("/", 1)[1]  # id reserved up front (chunked import)
            return
        entry.res_id = new_id()
        self._map(entry, entry.resource_type, entry.res_id)

    def _plan_put(self, entry: Entry) -> None:
        assert entry.resource is not None
        if entry.res_id is None:
            if not entry.params:
                raise FhirError(Category.INVALID, "PUT needs Type/id or Type?criteria")
            matches = find_matches(self.conn, self.svc, entry.resource_type, entry.params)
            if len(matches) > 1:
                raise FhirError(
                    Category.PRECONDITION_FAILED,
                    f"conditional update criteria match {len(matches)} resources",
                )
            entry.res_id = matches[0].res_id if matches else (entry.resource.get("id") or new_id())
            entry.resource = {**entry.resource, "id": entry.res_id}
        self._map(entry, entry.resource_type, entry.res_id)

    def _map(self, entry: Entry, resource_type: str, res_id: str) -> None:
        if entry.full_url:
            self.urn_map[entry.full_url] = f"{resource_type}/{res_id}"

    def _resolve(self, reference: str) -> str:
        if reference in self.urn_map:
            return self.urn_map[reference]
        if reference.startswith("urn:uuid:") or reference.startswith("urn:oid:"):
            raise FhirError(
                Category.INVALID, f"Reference '{reference}' does not match any fullUrl in the Bundle"
            )
        if "?" in reference and "/" not in reference.split("?")[0]:
            if reference not in self._conditional_refs:
                resource_type, _, query = reference.partition("?")
                check_type(resource_type)
                matches = find_matches(self.conn, self.svc, resource_type, _criteria(query))
                if len(matches) != 1:
                    raise FhirError(
                        Category.PRECONDITION_FAILED,
                        f"Conditional reference '{reference}' matches {len(matches)} resources, not one",
                    )
                self._conditional_refs[reference] = f"{resource_type}/{matches[0].res_id}"
            return self._conditional_refs[reference]
        return reference

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


def _criteria(text: str) -> list[tuple[str, str]]:
    query = text.split("?", 1)[1] if "?" in text else text
    params = parse_qsl(query, keep_blank_values=True)
    if not params:
        raise FhirError(Category.INVALID, f"Criteria '{text}' has no search parameters")
    return params


def read_entry(conn: Connection, svc: Services, entry: Entry, base: str) -> None:
    """GET inside a Bundle: read, vread or search."""
    repo = svc.repo
    if entry.res_id:
        if entry.version:
            stored = (
                repo.version(conn, entry.resource_type, entry.res_id, int(entry.version))
                if entry.version.isdigit()
                else None
            )
        else:
            stored = repo.current(conn, entry.resource_type, entry.res_id)
        if stored is None:
            raise FhirError(Category.NOT_FOUND, f"{entry.resource_type}/{entry.res_id} is not known")
        if stored.deleted:
            raise FhirError(Category.DELETED, f"{entry.resource_type}/{entry.res_id} was deleted")
        entry.result = WriteResult(200, stored)
        entry.body = stored.content
        return
    query = svc.compiler.compile(entry.resource_type, entry.params, base_url=base)
    token = PageToken(entry.params, 0, query.count, snapshot_pk(conn))
    query.max_pk = token.bound
    result = run_search(conn, repo, query, svc.settings.max_include_results)
    entry.result = WriteResult(200, None)
    entry.body = bundle_json(query, result, base, f"{base}/{entry.resource_type}", token)


def _response_entry(entry: Entry, base: str, representation: bool) -> str:
    result = entry.result
    assert result is not None
    response: dict[str, Any] = {"status": STATUS_TEXT.get(result.status, str(result.status))}
    stored: Stored | None = result.stored
    out: dict[str, Any] = {}
    if stored is not None and not stored.deleted:
        out["fullUrl"] = f"{base}/{stored.res_type}/{stored.res_id}"
        response["etag"] = stored.etag
        response["lastModified"] = format_instant(stored.last_updated)
        if entry.method in {"POST", "PUT"}:
            response["location"] = result.location(base)
    if entry.method == "DELETE" and result.outcome is not None:
        response["outcome"] = result.outcome
    out["response"] = response
    encoded = orjson.dumps(out).decode()
    body = entry.body
    if body is None and representation and stored is not None and not stored.deleted:
        body = stored.content
    if body is not None:
        encoded = encoded[:-1] + ',"resource":' + body + "}"
    return encoded


def _error_entry(error: FhirError) -> str:
    return orjson.dumps({"response": {"status": str(error.status), "outcome": outcome_for(error)}}).decode()


def parse_bundle(body: bytes) -> tuple[str, list[Any]]:
    bundle = parse_json(body)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError(Category.INVALID, "POST to the base expects a Bundle of type transaction or batch")
    bundle_type = bundle.get("type")
    if bundle_type not in {"transaction", "batch"}:
        raise FhirError(
            Category.INVALID,
            f"Bundle.type must be 'transaction' or 'batch', not '{bundle_type}'",
            expression="Bundle.type",
        )
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise FhirError(Category.STRUCTURE, "Bundle.entry must be an array", expression="Bundle.entry")
    # The envelope itself (entries' resources are validated one by one, with their own paths).
    envelope = {k: v for k, v in bundle.items() if k != "entry"}
    validate_resource(envelope, "Bundle")
    return str(bundle_type), entries


def process_transaction(svc: Services, raw_entries: list[Any], base: str) -> list[Entry]:
    entries = [parse_entry(i, raw, base, "transaction") for i, raw in enumerate(raw_entries)]
    with svc.repo.writing() as conn:
        TransactionProcessor(conn, svc, base).run(entries)
    return entries


def transaction_or_batch() -> Response:
    check_content_type()
    svc = services()
    bundle_type, raw_entries = parse_bundle(read_body())
    if len(raw_entries) > svc.settings.max_transaction_entries:
        raise FhirError(
            Category.TOO_COSTLY,
            f"Bundle has {len(raw_entries)} entries; the limit is {svc.settings.max_transaction_entries}",
        )
    base = base_url()
    representation = prefer("return") != "minimal"
    if bundle_type == "transaction":
        entries = process_transaction(svc, raw_entries, base)
        parts = [_response_entry(e, base, representation) for e in entries]
        kind = "transaction-response"
    else:
        parts = [_batch_entry(svc, i, raw, base, representation) for i, raw in enumerate(raw_entries)]
        kind = "batch-response"
    head = orjson.dumps({"resourceType": "Bundle", "type": kind}).decode()
    return fhir_json_response(head[:-1] + ',"entry":[' + ",".join(parts) + "]}")


def _batch_entry(svc: Services, index: int, raw: Any, base: str, representation: bool) -> str:
    try:
        entry = parse_entry(index, raw, base, "batch")
        if entry.method in {"GET", "HEAD"}:
            with svc.repo.reading() as conn:
                read_entry(conn, svc, entry, base)
        else:
            with svc.repo.writing() as conn:
                processor = TransactionProcessor(conn, svc, base)
                processor.run([entry])
        return _response_entry(entry, base, representation)
    except FhirError as error:
        return _error_entry(error)
