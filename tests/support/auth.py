"""The authorization server from a client's side: client assertions, the authorization code flow with
PKCE through the real login and consent pages, user tokens, and the audit rows they leave."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import text

from coordination_api.accounts import create_practitioner_user

TOKEN_URL = "http://localhost/auth/token"
FHIR_AUD = "http://localhost/fhir"
REDIRECT = "http://127.0.0.1:9999/cb"
PASSWORD = "a-long-password-123"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# Key generation is slow: one RSA key for the whole module.
RSA_KEY = RSAKey.generate_key(2048, private=True, auto_kid=True)


@pytest.fixture(autouse=True)
def session_key_ready(app: Flask) -> None:
    """Work around the first-request session bug (see test_first_login_page_of_a_fresh_app_works):
    any request to the auth blueprint makes the app load its session key."""
    app.test_client().get("/fhir/.well-known/smart-configuration")


# -- helpers ----------------------------------------------------------------------------------------


def jwks_client(app: Flask, key: Any, scope: str = "system/*.rs") -> str:
    store = app.extensions["auth"].store
    jwks = KeySet([key]).as_dict(private=False)
    client_id, _ = store.create_client("jwt", scope, "private_key_jwt", [], jwks, None)
    return client_id


def assertion_claims(client_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "exp": now + 240,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def sign_assertion(claims: dict[str, Any], key: Any = RSA_KEY, alg: str = "RS384") -> str:
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])


def assertion_token(client: FlaskClient, assertion: str, scope: str = "system/Patient.rs") -> Any:
    return client.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        },
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def csrf_token_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def practitioner_user(app: Flask, username: str = "dr", rpps: str = "10101010101") -> str:
    return create_practitioner_user(app, username, rpps, PASSWORD, "House", "Greg")


def public_client(app: Flask, scope: str = "user/*.cruds offline_access openid fhirUser") -> str:
    client_id, _ = app.extensions["auth"].store.create_client("app", scope, "none", [REDIRECT], None, None)
    return client_id


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


def authorize_url(client_id: str, challenge: str | None, scope: str, **extra: str) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "st4te",
        "aud": FHIR_AUD,
    }
    if challenge is not None:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    params.update(extra)
    return "/auth/authorize?" + urlencode(params)


def log_in(browser: FlaskClient, username: str, password: str, next_url: str = "") -> Any:
    page = browser.get("/auth/login", query_string={"next": next_url} if next_url else None)
    csrf = csrf_token_of(page.get_data(as_text=True))
    return browser.post(
        "/auth/login", data={"username": username, "password": password, "csrf_token": csrf, "next": next_url}
    )


def approve(browser: FlaskClient, url: str) -> Any:
    page = browser.get(url)
    assert page.status_code == 200, page.get_data(as_text=True)
    return browser.post(
        url, data={"csrf_token": csrf_token_of(page.get_data(as_text=True)), "decision": "approve"}
    )


def authorization_code(
    app: Flask, scope: str = "user/*.cruds", username: str = "dr"
) -> tuple[FlaskClient, str, str, str]:
    """Log in and approve: (browser, client_id, code, verifier)."""
    client_id = public_client(app)
    verifier, challenge = pkce_pair()
    browser = app.test_client()
    url = authorize_url(client_id, challenge, scope)
    first = browser.get(url)
    assert first.status_code == 303 and first.headers["Location"].startswith("/auth/login?")
    login = log_in(browser, username, PASSWORD, next_url=url)
    assert login.status_code == 303 and login.headers["Location"] == url
    done = approve(browser, url)
    assert done.status_code == 302, done.get_data(as_text=True)
    location = urlsplit(done.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["st4te"]
    return browser, client_id, query["code"][0], verifier


def exchange_code(
    browser: FlaskClient, client_id: str, code: str, verifier: str, redirect: str = REDIRECT
) -> Any:
    return browser.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "client_id": client_id,
            "code_verifier": verifier,
        },
    )


def user_token(app: Flask, scope: str = "user/*.cruds", username: str = "dr") -> str:
    browser, client_id, code, verifier = authorization_code(app, scope, username)
    response = exchange_code(browser, client_id, code, verifier)
    assert response.status_code == 200, response.get_json()
    token: str = response.get_json()["access_token"]
    return token


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def audit_rows(app: Flask) -> list[Any]:
    engine = app.extensions["coordination"].repo.engine
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT pk, subtype, outcome, client_id, agent, entity, break_glass, content "
                    "FROM audit_event ORDER BY pk"
                )
            )
        )


def verified_claims(client: FlaskClient, id_token: str) -> dict[str, Any]:
    """An ID token's claims, once its signature checks against our published JWKS."""
    keys = KeySet.import_key_set(client.get("/auth/jwks").get_json())
    return dict(jwt.decode(id_token, keys).claims)
