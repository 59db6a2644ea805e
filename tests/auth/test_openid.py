"""OpenID Connect on the code grant (SMART App Launch 2: ``openid fhirUser`` gives an id_token)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from flask import Flask
from flask.testing import FlaskClient

from tests.support.auth import (
    FHIR_AUD,
    PASSWORD,
    approve,
    authorize_url,
    exchange_code,
    log_in,
    pkce_pair,
    practitioner_user,
    public_client,
    verified_claims,
)


def _token_response(app: Flask, scope: str, **extra: str) -> tuple[str, dict[str, Any]]:
    """Log in, approve, exchange the code: (client_id, token response)."""
    client_id = public_client(app, scope)
    verifier, challenge = pkce_pair()
    browser = app.test_client()
    url = authorize_url(client_id, challenge, scope, **extra)
    browser.get(url)
    log_in(browser, "dr", PASSWORD, next_url=url)
    done = approve(browser, url)
    assert done.status_code == 302, done.get_data(as_text=True)
    code = parse_qs(urlsplit(done.headers["Location"]).query)["code"][0]
    response = exchange_code(browser, client_id, code, verifier)
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return client_id, body


def test_openid_fhiruser_gives_a_signed_id_token_naming_the_practitioner(
    app: Flask, anonymous_client: FlaskClient
) -> None:
    practitioner = practitioner_user(app)
    client_id, body = _token_response(app, "openid fhirUser user/*.rs", nonce="n-0S6_WzA2Mj")
    claims = verified_claims(anonymous_client, body["id_token"])
    assert claims["iss"] == FHIR_AUD
    assert claims["aud"] in (client_id, [client_id])
    assert claims["sub"] == "dr"
    assert claims["fhirUser"] == f"{FHIR_AUD}/Practitioner/{practitioner}"
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["exp"] > claims["iat"]
    assert "at_hash" in claims


def test_no_id_token_without_openid(app: Flask, anonymous_client: FlaskClient) -> None:
    practitioner_user(app)
    _client_id, body = _token_response(app, "user/*.rs")
    assert "id_token" not in body


def test_openid_without_fhiruser_has_no_fhiruser_claim(app: Flask, anonymous_client: FlaskClient) -> None:
    practitioner_user(app)
    _client_id, body = _token_response(app, "openid user/*.rs")
    claims = verified_claims(anonymous_client, body["id_token"])
    assert claims["sub"] == "dr" and "fhirUser" not in claims


def test_openid_discovery_at_the_issuer(anonymous_client: FlaskClient) -> None:
    smart = anonymous_client.get("/fhir/.well-known/smart-configuration").get_json()
    assert "sso-openid-connect" in smart["capabilities"]
    discovery = anonymous_client.get("/fhir/.well-known/openid-configuration")
    assert discovery.status_code == 200
    body = discovery.get_json()
    assert body["issuer"] == smart["issuer"] == FHIR_AUD
    assert body["jwks_uri"] == smart["jwks_uri"]
    assert body["id_token_signing_alg_values_supported"] == ["RS256"]
    assert "fhirUser" in body["claims_supported"]
