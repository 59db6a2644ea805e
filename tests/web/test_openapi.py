"""``GET /openapi.json``: served without a token, in step with the routes, a well-formed OpenAPI 3.1 document.

openapi-spec-validator is not a dependency: the structure is checked here against the rules of
OpenAPI 3.1.0 that a reader relies on (spec.openapis.org/oas/v3.1.0, sections 4.8.1-4.8.30).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from flask import Flask
from flask.testing import FlaskClient

from coordination_api.openapi import document_bytes

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
STATUS = re.compile(r"^([1-5][0-9][0-9]|[1-5]XX|default)$")
SCHEME_TYPES = {"apiKey", "http", "mutualTLS", "oauth2", "openIdConnect"}


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(document_bytes())
    return loaded


def routes(app: Flask) -> dict[str, set[str]]:
    """Every non-FHIR route of the app, as an OpenAPI path (``<x>`` → ``{x}``), with its methods."""
    out: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule == "/fhir" or rule.rule.startswith("/fhir/"):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        methods = {m.lower() for m in rule.methods or ()} - {"head", "options"}
        out.setdefault(path, set()).update(methods)
    return out


def test_document_is_served_without_a_token(app: Flask) -> None:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == document()


def test_every_route_is_documented_with_its_methods(app: Flask) -> None:
    documented = {path: set(item) & METHODS for path, item in document()["paths"].items()}
    assert documented == routes(app)


def test_document_points_to_the_capability_statement_for_fhir() -> None:
    doc = document()
    assert doc["externalDocs"]["url"] == "/fhir/metadata"
    assert "/fhir/metadata" in doc["info"]["description"]
    assert not any(path.startswith("/fhir") for path in doc["paths"])


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_document_is_well_formed_openapi_3_1() -> None:
    doc = document()
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"])
    assert isinstance(doc["info"]["title"], str) and isinstance(doc["info"]["version"], str)
    schemes = doc["components"]["securitySchemes"]
    for name, scheme in schemes.items():
        assert scheme["type"] in SCHEME_TYPES, name
        if scheme["type"] == "oauth2":
            for flow in scheme["flows"].values():
                assert isinstance(flow["scopes"], dict), name
                assert "tokenUrl" in flow or "authorizationUrl" in flow, name
        if scheme["type"] == "http":
            assert scheme["scheme"] in {"bearer", "basic"}, name
    operation_ids: list[str] = []
    for path, item in doc["paths"].items():
        assert path.startswith("/"), path
        for method, operation in item.items():
            assert method in METHODS, f"{path}: {method}"
            operation_ids.append(operation["operationId"])
            assert operation["responses"], f"{method} {path}"
            for status, response in operation["responses"].items():
                assert STATUS.match(status), f"{method} {path}: {status}"
                described = _resolve(doc, response["$ref"]) if "$ref" in response else response
                assert isinstance(described["description"], str), f"{method} {path} {status}"
            for requirement in operation.get("security", doc.get("security", [])):
                assert set(requirement) <= set(schemes), f"{method} {path}: {requirement}"
            for parameter in operation.get("parameters", []):
                assert parameter["in"] in {"query", "header", "path", "cookie"}
                assert parameter["in"] != "path" or parameter["required"] is True
    assert len(operation_ids) == len(set(operation_ids))
    for ref in _refs(doc):
        _resolve(doc, ref)


def test_documented_no_token_endpoints_answer_without_one(client: FlaskClient, app: Flask) -> None:
    """An operation whose security is ``[{}]`` alone needs no credentials: a GET answers 2xx."""
    anonymous = app.test_client()
    for path, item in document()["paths"].items():
        operation = item.get("get")
        if operation is None or operation.get("security") != [{}] or "{" in path:
            continue
        if "200" not in operation["responses"] or "404" in operation["responses"]:
            continue  # a redirect, or Pro Santé Connect (404 when not configured)
        response = anonymous.get(path)
        assert response.status_code == 200, f"{path}: {response.status_code}"
