"""``GET /openapi.json``: the OpenAPI 3.1 description of the endpoints outside the FHIR API.

The document is data (``openapi.json`` next to this module), read once; the FHIR API is described by
its CapabilityStatement (``/fhir/metadata``), which the document links. No token, like the discovery
documents (CONTRACT).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from flask import Blueprint, Flask, Response

bp = Blueprint("openapi", __name__)


@cache
def document_bytes() -> bytes:
    return resources.files("coordination_api").joinpath("openapi.json").read_bytes()


@bp.get("/openapi.json")
def openapi() -> Response:
    response = Response(document_bytes(), mimetype="application/json")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
