"""The single translator from exceptions to HTTP status + OperationOutcome (R4 http.html 3.1.0.4)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from connectors.errors import ConnectorError
from coordination_api.errors import (
    HTTP_CATEGORY,
    Category,
    FhirError,
    from_connector_error,
    from_database_error,
    outcome_for,
)
from coordination_api.web.http import fhir_json_response

log = logging.getLogger(__name__)

# app.extensions[ERROR_PAGES]: blueprint name -> how that blueprint shows an error (an HTML page with
# the error's status and headers); registered by the blueprint, used by the one translator below.
ERROR_PAGES = "error_pages"
ErrorPage = Callable[[FhirError], Response]


def from_http_exception(exc: HTTPException) -> FhirError:
    """Werkzeug's own errors (unknown route, body too large…) become FhirErrors."""
    status = exc.code or 500
    category = HTTP_CATEGORY.get(status, Category.INVALID if status < 500 else Category.EXCEPTION)
    headers: dict[str, str] = {}
    if status == 404:
        message = f"Unknown route: {request.method} {request.path}"
    elif status == 405:
        allowed = ", ".join(sorted(getattr(exc, "valid_methods", None) or []))
        message = f"Method {request.method} is not allowed on {request.path}; allowed: {allowed}"
        headers["Allow"] = allowed  # RFC 9110 section 15.5.6: a 405 carries Allow
    elif status == 413:
        message = "Request body exceeds the configured maximum size"
    else:
        message = exc.description or exc.name
    return FhirError(category, message, headers=headers)


def register_error_handlers(app: Flask) -> None:
    """The single translator from exceptions to HTTP status + OperationOutcome."""

    @app.errorhandler(FhirError)
    def _fhir_error(exc: FhirError) -> Response:
        return _render(exc)

    @app.errorhandler(ConnectorError)
    def _connector_error(exc: ConnectorError) -> Response:
        log.warning("outside service failed: %s", exc)
        return _render(from_connector_error(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return _render(from_http_exception(exc))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        database = from_database_error(exc)
        if database is not None:
            # The type and SQLSTATE only: the message may quote SQL parameters (patient data).
            orig = getattr(exc, "orig", None) or exc
            what = (
                "unavailable" if database.category is Category.TRANSIENT else "refused too large a statement"
            )
            log.warning(
                "database %s: %s (sqlstate %s)", what, type(orig).__name__, getattr(orig, "sqlstate", None)
            )
            return _render(database)
        request_id = getattr(g, "request_id", None) or str(uuid.uuid4())
        log.exception("unhandled error, request_id=%s", request_id)
        return _render(
            FhirError(Category.EXCEPTION, f"Internal error; quote request id {request_id} to the operator")
        )

    _render = render


def render(exc: FhirError) -> Response:
    """The one rendering of an error: an OperationOutcome, or the page of a blueprint for people
    (coordination_api/pages), with the error's status and headers. Also for the after-request hooks,
    whose exceptions Flask's handlers do not see."""
    pages: dict[str, ErrorPage] = current_app.extensions.get(ERROR_PAGES, {})
    as_page = pages.get(request.blueprint or _blueprint_of(request.path))
    if as_page is not None:
        response = as_page(exc)
    else:
        response = fhir_json_response(outcome_for(exc), status=exc.status)
    for key, value in exc.headers.items():
        response.headers[key] = value
    return response


def _blueprint_of(path: str) -> str:
    """The blueprint whose URL prefix holds ``path`` (an unknown route has no blueprint: ``/app/nope``
    still gets the pages' 404 page, not an OperationOutcome)."""
    for name, blueprint in current_app.blueprints.items():
        prefix = (blueprint.url_prefix or "").rstrip("/")
        if prefix and (path == prefix or path.startswith(f"{prefix}/")):
            return name
    return ""
