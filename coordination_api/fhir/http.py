"""HTTP details shared by all interactions: formats, content types, ETags, Prefer (R4 http.html)."""

from __future__ import annotations

import re
from typing import Any

import orjson
from flask import Response, current_app, request

from coordination_api.errors import Category, FhirError
from coordination_api.search.dates import format_http_date

FHIR_JSON = "application/fhir+json"
JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir", "text/json"}
JSON_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir", "text/json"}
XML_MARKERS = ("xml", "turtle", "ttl")
_ETAG = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')


def base_url() -> str:
    """The FHIR base as configured, else as the client reached it."""
    configured: str = current_app.config["SETTINGS"].public_base_url
    if configured:
        return configured
    return request.host_url.rstrip("/") + "/fhir"


def wants_pretty() -> bool:
    return request.args.get("_pretty", "").lower() == "true"


def check_accept() -> None:
    """JSON only: XML (or another format) asked for by _format or Accept → 406 (R4 http.html#mime-type)."""
    fmt = request.args.get("_format")
    if fmt is not None:
        base = fmt.split(";")[0].strip().lower()
        if base not in JSON_FORMATS:
            raise FhirError(
                Category.NOT_ACCEPTABLE, f"_format '{fmt}' is not supported; this server speaks JSON"
            )
        return
    accept = request.headers.get("Accept", "")
    if not accept:
        return
    for item in accept.split(","):
        media = item.split(";")[0].strip().lower()
        if media in JSON_TYPES or media in {"*/*", "application/*", "*"}:
            return
    raise FhirError(Category.NOT_ACCEPTABLE, f"Accept '{accept}' is not supported; use {FHIR_JSON}")


def check_content_type() -> None:
    """Request bodies must be FHIR JSON (415 otherwise)."""
    raw = request.headers.get("Content-Type", "")
    media = raw.split(";")[0].strip().lower()
    if media in JSON_TYPES:
        return
    if not media:
        raise FhirError(Category.UNSUPPORTED_MEDIA_TYPE, f"Missing Content-Type; use {FHIR_JSON}")
    raise FhirError(
        Category.UNSUPPORTED_MEDIA_TYPE, f"Content-Type '{raw}' is not supported; use {FHIR_JSON}"
    )


def read_body() -> bytes:
    limit: int = current_app.config["SETTINGS"].max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise FhirError(Category.TOO_LARGE, f"Request body exceeds the maximum of {limit} bytes")
    data = request.get_data(cache=True)
    if len(data) > limit:
        raise FhirError(Category.TOO_LARGE, f"Request body exceeds the maximum of {limit} bytes")
    return data


def parse_etag(value: str | None, header: str) -> int | None:
    if value is None or value.strip() == "":
        return None
    match = _ETAG.match(value)
    if not match:
        raise FhirError(Category.INVALID, f"{header} '{value}' is not a version ETag like W/\"3\"")
    return int(match.group(1))


def prefer(name: str) -> str | None:
    """A value of the Prefer header (RFC 7240), e.g. prefer("return") → "minimal"."""
    for part in request.headers.get("Prefer", "").split(";"):
        for item in part.split(","):
            key, _, value = item.strip().partition("=")
            if key.strip().lower() == name:
                return value.strip().strip('"').lower()
    return None


def fhir_json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A FHIR JSON response; ``body`` is a dict, or already-encoded JSON text/bytes, or None."""
    pretty = wants_pretty() if request else False
    if body is None:
        payload = b""
    elif isinstance(body, str | bytes):
        payload = body.encode() if isinstance(body, str) else body
        if pretty:
            payload = orjson.dumps(orjson.loads(payload), option=orjson.OPT_INDENT_2)
    else:
        payload = orjson.dumps(body, option=orjson.OPT_INDENT_2 if pretty else 0)
    response = Response(payload, status=status)
    if payload:
        response.headers["Content-Type"] = FHIR_JSON + "; charset=utf-8"
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def version_headers(version: int, last_updated: int) -> dict[str, str]:
    return {"ETag": f'W/"{version}"', "Last-Modified": format_http_date(last_updated)}
