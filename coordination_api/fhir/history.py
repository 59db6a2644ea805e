"""history at instance, type and system level (R4 http.html#history), newest first."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from flask import Response, request
from sqlalchemy import ColumnElement, func, select

from coordination_api.errors import Category, FhirError
from coordination_api.fhir import access
from coordination_api.fhir.context import services
from coordination_api.fhir.resources import check_type
from coordination_api.search.dates import InvalidDateError, format_instant, parse_range
from coordination_api.search.paging import PageToken
from coordination_api.storage.repository import now_us
from coordination_api.storage.schema import resource_history
from coordination_api.web.http import base_url, fhir_json_response


def _bound_params() -> tuple[list[tuple[str, str]], int, int, int]:
    """(params, offset, count, upper time bound) from the request or its _page token."""
    settings = services().settings
    page = request.args.get("_page")
    if page:
        token = PageToken.decode(page)
        return token.params, token.offset, token.count, token.bound
    params = [(k, v) for k, v in request.args.items(multi=True) if k in {"_since", "_at", "_count"}]
    count = settings.default_page_size
    for key, value in params:
        if key == "_count":
            if not value.isdigit():
                raise FhirError(Category.INVALID, f"_count '{value}' is not a whole number")
            count = min(int(value), settings.max_page_size)
    return params, 0, count, now_us()


def _filters(params: list[tuple[str, str]]) -> list[ColumnElement[bool]]:
    h = resource_history
    out: list[ColumnElement[bool]] = []
    for key, value in params:
        if key not in {"_since", "_at"}:
            continue
        try:
            low, high = parse_range(value)
        except InvalidDateError as exc:
            raise FhirError(Category.INVALID, f"{key}: {exc}") from exc
        if key == "_since":
            out.append(h.c.last_updated >= low)
        else:
            out.append(h.c.last_updated <= high)
    return out


def history(resource_type: str | None = None, res_id: str | None = None) -> Response:
    if resource_type is not None:
        check_type(resource_type, write=False)
        access.require(resource_type, "r")
    else:
        access.require_system_history()
    svc = services()
    params, offset, count, bound = _bound_params()
    h = resource_history
    where = [h.c.last_updated <= bound, *_filters(params)]
    if resource_type is not None:
        where.append(h.c.res_type == resource_type)
    if res_id is not None:
        where.append(h.c.res_id == res_id)
    # Each version is shown by the compartments it was in itself (issue 16).
    where.extend(access.version_visibility(h.c.res_pk, h.c.version, h.c.res_type))
    if resource_type in (None, "Subscription"):  # system history holds Subscriptions too
        where.extend(access.subscription_owner_filter(h.c.res_pk))
    with svc.repo.reading() as conn:
        if res_id is not None and resource_type is not None:
            current = svc.repo.current(conn, resource_type, res_id)
            if current is None:
                raise FhirError(Category.NOT_FOUND, f"{resource_type}/{res_id} is not known")
            access.check_stored(conn, current)
        total = int(conn.execute(select(func.count()).select_from(h).where(*where)).scalar_one())
        rows = conn.execute(
            select(
                h.c.res_type, h.c.res_id, h.c.version, h.c.last_updated, h.c.method, h.c.deleted, h.c.content
            )
            .where(*where)
            .order_by(h.c.last_updated.desc(), h.c.res_pk.desc(), h.c.version.desc())
            .limit(count)
            .offset(offset)
        ).all()
    base = base_url()
    entries = []
    for row in rows:
        full_url = f"{base}/{row.res_type}/{row.res_id}"
        method = row.method if row.method in {"POST", "PUT", "DELETE", "PATCH"} else "PUT"
        url = row.res_type if method == "POST" else f"{row.res_type}/{row.res_id}"
        entry: dict[str, Any] = {
            "fullUrl": full_url,
            "request": {"method": method, "url": url},
            "response": {
                "status": "201 Created"
                if method == "POST" or (row.version == 1 and not row.deleted)
                else ("204 No Content" if row.deleted else "200 OK"),
                "etag": f'W/"{row.version}"',
                "lastModified": format_instant(row.last_updated),
            },
        }
        encoded = orjson.dumps(entry).decode()
        if row.content and not row.deleted:
            encoded = encoded[:-1] + ',"resource":' + row.content + "}"
        entries.append(encoded)
    link_base = "/".join(p for p in (base, resource_type, res_id, "_history") if p)
    links = [{"relation": "self", "url": f"{link_base}?{urlencode(params)}" if params else link_base}]
    if offset + count < total:
        token = PageToken(params, offset + count, count, bound)
        links.append({"relation": "next", "url": f"{link_base}?{urlencode([('_page', token.encode())])}"})
    if offset > 0:
        token = PageToken(params, max(0, offset - count), count, bound)
        links.append({"relation": "previous", "url": f"{link_base}?{urlencode([('_page', token.encode())])}"})
    head = orjson.dumps({"resourceType": "Bundle", "type": "history", "total": total, "link": links}).decode()
    return fhir_json_response(head[:-1] + ',"entry":[' + ",".join(entries) + "]}")
