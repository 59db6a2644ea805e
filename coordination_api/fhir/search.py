"""search-type interaction: GET [base]/[type]?… and POST [base]/[type]/_search (R4 http.html#search)."""

from __future__ import annotations

from urllib.parse import urlencode

import orjson
from flask import Response, request

from coordination_api.errors import Category, FhirError, Issue, operation_outcome
from coordination_api.fhir import access
from coordination_api.fhir.context import services
from coordination_api.fhir.resources import check_type
from coordination_api.fhir.subsetting import select_elements, summarize
from coordination_api.search.compiler import SearchQuery
from coordination_api.search.executor import SearchResult, run_search, snapshot_pk
from coordination_api.search.paging import PageToken
from coordination_api.storage.repository import Stored
from coordination_api.web.http import base_url, fhir_json_response, prefer

_HTTP_ONLY = {"_format", "_pretty"}


def request_params() -> list[tuple[str, str]]:
    """Search parameters of a GET query string or a POST _search form (``_page`` included)."""
    params = [(k, v) for k, v in request.args.items(multi=True) if k not in _HTTP_ONLY]
    if request.method == "POST":
        media = (request.mimetype or "").lower()
        if media and media != "application/x-www-form-urlencoded":
            raise FhirError(
                Category.UNSUPPORTED_MEDIA_TYPE,
                "POST _search takes application/x-www-form-urlencoded parameters",
            )
        params += [(k, v) for k, v in request.form.items(multi=True) if k not in _HTTP_ONLY]
    return params


def _entry_json(stored: Stored, base: str, mode: str, query: SearchQuery) -> str:
    if query.summary in {"true", "text", "data"}:
        content = orjson.dumps(summarize(stored.json(), query.summary)).decode()
    elif query.elements and mode == "match":  # "does not apply to included resources" (R4)
        content = orjson.dumps(select_elements(stored.json(), query.elements)).decode()
    else:
        content = stored.content or "{}"
    full_url = f"{base}/{stored.res_type}/{stored.res_id}"
    return (
        f'{{"fullUrl":{orjson.dumps(full_url).decode()},"resource":{content},"search":{{"mode":"{mode}"}}}}'
    )


def bundle_json(query: SearchQuery, result: SearchResult, base: str, link_base: str, token: PageToken) -> str:
    """Assemble the searchset Bundle from stored JSON without re-encoding each resource."""
    # A later page's self link is that page (R4 search.html#paging); the first page's is the search.
    later = token.after is not None or token.offset > 0
    links = [{"relation": "self", "url": _link(link_base, query.used, token if later else None)}]
    if result.has_next or result.has_previous:
        first = PageToken(token.params, 0, query.count, token.bound)
        links.append({"relation": "first", "url": _link(link_base, [], first)})
    if result.has_previous and result.first_key is not None:
        offset = max(0, token.offset - query.count)
        prev = PageToken(token.params, offset, query.count, token.bound, result.first_key, backward=True)
        links.append({"relation": "previous", "url": _link(link_base, [], prev)})
    if result.has_next and result.last_key is not None:
        nxt = PageToken(token.params, token.offset + query.count, query.count, token.bound, result.last_key)
        links.append({"relation": "next", "url": _link(link_base, [], nxt)})
    entries = [_entry_json(s, base, "match", query) for s in result.matches]
    entries += [_entry_json(s, base, "include", query) for s in result.included]
    issues = list(query.issues)
    if result.truncated_includes:
        issues.append(Issue("warning", "too-costly", "Included resources were truncated"))
    if issues:
        outcome = orjson.dumps(operation_outcome(issues)).decode()
        entries.append(f'{{"resource":{outcome},"search":{{"mode":"outcome"}}}}')
    head: dict[str, object] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        head["total"] = result.total
    head_json = orjson.dumps({**head, "link": links}).decode()
    if not entries:  # FHIR JSON has no empty arrays
        return head_json
    return head_json[:-1] + ',"entry":[' + ",".join(entries) + "]}"


def _link(link_base: str, params: list[tuple[str, str]], token: PageToken | None) -> str:
    if token is not None:
        return f"{link_base}?{urlencode([('_page', token.encode())])}"
    return f"{link_base}?{urlencode(params)}" if params else link_base


def _beside_page(query: SearchQuery, names: list[str], strict: bool) -> None:
    """A page token carries its search: parameters sent beside it are not applied, which a strict
    client is told with a 400, a lenient one in the Bundle's OperationOutcome."""
    if not names:
        return
    listed = ", ".join(sorted(set(names)))
    message = f"Parameters sent with _page are not applied (the page token carries the search): {listed}"
    if strict:
        raise FhirError(Category.INVALID, message)
    query.issues.append(Issue("warning", "not-supported", message))


def search(resource_type: str) -> Response:
    check_type(resource_type, write=False)
    access.require(resource_type, "s")
    svc = services()
    params = request_params()
    strict = prefer("handling") == "strict"
    page = next((v for k, v in params if k == "_page"), None)
    with svc.repo.reading() as conn:
        if page is not None:
            token = PageToken.decode(page)
            query = svc.compiler.compile(
                resource_type, token.params, base_url=base_url(), strict=strict, hop_guard=access.hop_guard
            )
            _beside_page(query, [name for name, _ in params if name != "_page"], strict)
            query.count, query.offset = token.count, token.offset
            query.set_cursor(token.after, token.backward)
        else:
            query = svc.compiler.compile(
                resource_type, params, base_url=base_url(), strict=strict, hop_guard=access.hop_guard
            )
            token = PageToken([p for p in params if p[0] != "_page"], 0, query.count, snapshot_pk(conn))
        query.max_pk = token.bound
        access.secure(query)
        result = run_search(conn, svc.repo, query, svc.settings.max_include_results)
        access.note_results(conn, result.matches + result.included)
        if query.summary == "count" or query.count == 0:
            access.note_counted(conn, query)
    link_base = f"{base_url()}/{resource_type}"
    return fhir_json_response(bundle_json(query, result, base_url(), link_base, token))
