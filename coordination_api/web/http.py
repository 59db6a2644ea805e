"""HTTP details shared by all interactions: formats, content types, ETags, Prefer (R4 http.html)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson
from flask import Response, current_app, g, request

from coordination_api.config import Settings
from coordination_api.errors import Category, FhirError
from coordination_api.search.dates import format_http_date
from coordination_api.search.paging import Signer, use_signer

FHIR_JSON = "application/fhir+json"
JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir", "text/json"}
GENERIC_JSON = {"application/json", "text/json"}
JSON_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir", "text/json"}


def settings() -> Settings:
    """The settings of the app serving this request, typed."""
    current: Settings = current_app.config["SETTINGS"]
    return current


def base_url() -> str:
    """The FHIR base as configured, else as the client reached it."""
    configured = settings().public_base_url
    if configured:
        return configured
    # Once per request: werkzeug rebuilds host_url (IRI decoding) on every access.
    # (kept on the request itself: an app context, hence g, can outlive one request in tests)
    url = getattr(request, "coordination_base_url", None)
    if url is None:
        # url_root keeps the script root (X-Forwarded-Prefix behind trusted proxies: ProxyFix x_prefix).
        url = request.url_root.rstrip("/") + "/fhir"
        request.coordination_base_url = url  # type: ignore[attr-defined]
    return str(url)


def wants_pretty() -> bool:
    return request.args.get("_pretty", "").lower() == "true"


def _media_types(header: str) -> list[tuple[str, dict[str, str]]]:
    """``type/subtype`` and parameters of each item of an Accept or Content-Type header."""
    out: list[tuple[str, dict[str, str]]] = []
    for item in header.split(","):
        media, *raw_params = item.split(";")
        params: dict[str, str] = {}
        for raw in raw_params:
            key, _, value = raw.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        if media.strip():
            out.append((media.strip().lower(), params))
    return out


def _fhir_version_ok(params: dict[str, str]) -> bool:
    """The fhirVersion MIME-type parameter, when given, must name R4 (R4 http.html#version-parameter)."""
    version = params.get("fhirversion")
    return version is None or version == "4.0" or version.startswith("4.0.")


def check_accept() -> None:
    """JSON only: XML (or another format) asked for by _format or Accept → 406 (R4 http.html#mime-type).

    A generic JSON type (``application/json``, ``text/json``) is answered with that type, as the
    spec recommends; everything else gets ``application/fhir+json``.
    """
    fmt = request.args.get("_format")
    if fmt is not None:
        base = fmt.split(";")[0].strip().lower()
        if base not in JSON_FORMATS:
            raise FhirError(
                Category.NOT_ACCEPTABLE, f"_format '{fmt}' is not supported; this server speaks JSON"
            )
        g.fhir_media_type = base if base in GENERIC_JSON else FHIR_JSON
        return
    accept = request.headers.get("Accept", "")
    if not accept.strip():
        return
    wrong_version = False
    for media, params in _media_types(accept):
        if params.get("q", "1").strip() in {"0", "0.0", "0.00", "0.000"}:
            continue
        if media in JSON_TYPES or media in {"*/*", "application/*", "*"}:
            if _fhir_version_ok(params):
                g.fhir_media_type = media if media in GENERIC_JSON else FHIR_JSON
                return
            wrong_version = True
    if wrong_version:
        raise FhirError(
            Category.NOT_ACCEPTABLE,
            f"Accept '{accept}' asks for another FHIR version; this server speaks 4.0",
        )
    raise FhirError(Category.NOT_ACCEPTABLE, f"Accept '{accept}' is not supported; use {FHIR_JSON}")


def check_content_type() -> None:
    """Request bodies must be FHIR JSON, R4 if a fhirVersion is given (415 otherwise)."""
    raw = request.headers.get("Content-Type", "")
    media, params = (_media_types(raw) or [("", {})])[0]
    if not media:
        raise FhirError(Category.UNSUPPORTED_MEDIA_TYPE, f"Missing Content-Type; use {FHIR_JSON}")
    if media not in JSON_TYPES:
        raise FhirError(
            Category.UNSUPPORTED_MEDIA_TYPE, f"Content-Type '{raw}' is not supported; use {FHIR_JSON}"
        )
    if not _fhir_version_ok(params):
        raise FhirError(
            Category.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type '{raw}' names another FHIR version; this server speaks 4.0",
        )


def read_body() -> bytes:
    limit = settings().max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise FhirError(Category.TOO_LARGE, f"Request body exceeds the maximum of {limit} bytes")
    data = request.get_data(cache=True)
    # Without a Content-Length (chunked), Werkzeug stops reading at the limit and returns what
    # it has: a body that reaches the limit is refused rather than parsed truncated.
    if len(data) > limit or (length is None and len(data) >= limit):
        raise FhirError(Category.TOO_LARGE, f"Request body exceeds the maximum of {limit} bytes")
    return data


def install_page_signer() -> None:
    """Page tokens of this request are signed with the server secret (the configured
    COORDINATION_SECRET_KEY, else the generated one the database keeps) and clamped to the cap."""
    app = current_app
    signer = app.extensions.get("page_token_signer")
    if signer is None:
        current = settings()
        secret = current.secret_key or app.extensions["auth"].store.shared_secret("page-token-key")
        key = hmac.new(b"coordination page token", str(secret).encode(), hashlib.sha256).digest()
        signer = app.extensions["page_token_signer"] = Signer(key, current.max_page_size)
    use_signer(signer)


def max_json_depth() -> int:
    limit = settings().max_json_depth
    return limit


def too_deep(limit: int) -> FhirError:
    return FhirError(
        Category.STRUCTURE,
        f"JSON nesting exceeds the maximum depth of {limit} nested arrays/objects "
        "(COORDINATION_MAX_JSON_DEPTH)",
    )


def check_depth(data: Any, limit: int) -> None:
    """Refuse JSON nested deeper than ``limit`` arrays/objects, before anything walks it recursively
    (model validation, profile rules, indexing): deep nesting must be a 400, never a RecursionError.
    Iterative on purpose; orjson itself stops at 1024 levels."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise too_deep(limit)
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))


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
        media = g.get("fhir_media_type", FHIR_JSON) if request else FHIR_JSON
        response.headers["Content-Type"] = media + "; charset=utf-8"
    else:
        del response.headers["Content-Type"]  # no body: no media type (not Flask's text/html default)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def version_headers(version: int, last_updated: int) -> dict[str, str]:
    return {"ETag": f'W/"{version}"', "Last-Modified": format_http_date(last_updated)}
