"""Security layer: token endpoint attacks, authorization code + PKCE, login, care-team policy, audit."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
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
from joserfc.jwk import ECKey, KeySet, RSAKey
from sqlalchemy import text, update

from auth.schema import oauth_token
from auth.secrets import digest
from coordination_api.accounts import create_practitioner_user
from coordination_api.app import create_app
from coordination_api.config import Settings
from tests.conftest import close_app, system_token

TOKEN_URL = "http://localhost/auth/token"
FHIR_AUD = "http://localhost/fhir"
REDIRECT = "http://127.0.0.1:9999/cb"
PASSWORD = "a-long-password-123"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# Key generation is slow: one RSA key for the whole module.
_RSA = RSAKey.generate_key(2048, private=True, auto_kid=True)


@pytest.fixture(autouse=True)
def _session_key_ready(app: Flask) -> None:
    """Work around the first-request session bug (see test_first_login_page_of_a_fresh_app_works):
    any request to the auth blueprint makes the app load its session key."""
    app.test_client().get("/fhir/.well-known/smart-configuration")


# -- helpers ----------------------------------------------------------------------------------------


def _jwks_client(app: Flask, key: Any, scope: str = "system/*.rs") -> str:
    store = app.extensions["auth"].store
    jwks = KeySet([key]).as_dict(private=False)
    client_id, _ = store.create_client("jwt", scope, "private_key_jwt", [], jwks, None)
    return client_id


def _claims(client_id: str, **overrides: Any) -> dict[str, Any]:
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


def _sign(claims: dict[str, Any], key: Any = _RSA, alg: str = "RS384") -> str:
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])


def _assertion_token(client: FlaskClient, assertion: str, scope: str = "system/Patient.rs") -> Any:
    return client.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        },
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def _practitioner(app: Flask, username: str = "dr", rpps: str = "10101010101") -> str:
    return create_practitioner_user(app, username, rpps, PASSWORD, "House", "Greg")


def _public_client(app: Flask, scope: str = "user/*.cruds offline_access openid fhirUser") -> str:
    client_id, _ = app.extensions["auth"].store.create_client("app", scope, "none", [REDIRECT], None, None)
    return client_id


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, _b64(hashlib.sha256(verifier.encode()).digest())


def _authorize_url(client_id: str, challenge: str | None, scope: str, **extra: str) -> str:
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


def _login(browser: FlaskClient, username: str, password: str, next_url: str = "") -> Any:
    page = browser.get("/auth/login", query_string={"next": next_url} if next_url else None)
    csrf = _csrf(page.get_data(as_text=True))
    return browser.post(
        "/auth/login", data={"username": username, "password": password, "csrf_token": csrf, "next": next_url}
    )


def _approve(browser: FlaskClient, url: str) -> Any:
    page = browser.get(url)
    assert page.status_code == 200, page.get_data(as_text=True)
    return browser.post(url, data={"csrf_token": _csrf(page.get_data(as_text=True)), "decision": "approve"})


def _code(app: Flask, scope: str = "user/*.cruds", username: str = "dr") -> tuple[FlaskClient, str, str, str]:
    """Log in and approve: (browser, client_id, code, verifier)."""
    client_id = _public_client(app)
    verifier, challenge = _pkce()
    browser = app.test_client()
    url = _authorize_url(client_id, challenge, scope)
    first = browser.get(url)
    assert first.status_code == 303 and first.headers["Location"].startswith("/auth/login?")
    login = _login(browser, username, PASSWORD, next_url=url)
    assert login.status_code == 303 and login.headers["Location"] == url
    done = _approve(browser, url)
    assert done.status_code == 302, done.get_data(as_text=True)
    location = urlsplit(done.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["st4te"]
    return browser, client_id, query["code"][0], verifier


def _exchange(
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


def _user_token(app: Flask, scope: str = "user/*.cruds", username: str = "dr") -> str:
    browser, client_id, code, verifier = _code(app, scope, username)
    response = _exchange(browser, client_id, code, verifier)
    assert response.status_code == 200, response.get_json()
    token: str = response.get_json()["access_token"]
    return token


def _bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def _create(client: FlaskClient, resource: dict[str, Any]) -> str:
    response = client.post(
        f"/fhir/{resource['resourceType']}", json=resource, headers={"Content-Type": "application/fhir+json"}
    )
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["id"])


def _patient(client: FlaskClient, family: str) -> str:
    return _create(client, {"resourceType": "Patient", "name": [{"family": family}]})


def _observation(client: FlaskClient, patient_id: str) -> str:
    return _create(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "valueQuantity": {
                "value": 72,
                "unit": "/min",
                "system": "http://unitsofmeasure.org",
                "code": "/min",
            },
        },
    )


def _care_team(client: FlaskClient, patient_id: str, member: str) -> str:
    return _create(
        client,
        {
            "resourceType": "CareTeam",
            "status": "active",
            "subject": {"reference": f"Patient/{patient_id}"},
            "participant": [{"member": {"reference": member}}],
        },
    )


def _consent_deny(client: FlaskClient, patient_id: str, actor: str) -> str:
    return _create(
        client,
        {
            "resourceType": "Consent",
            "status": "active",
            "scope": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                        "code": "patient-privacy",
                    }
                ]
            },
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient_id}"},
            "policyRule": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]
            },
            "provision": {
                "type": "deny",
                "actor": [
                    {
                        "role": {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                    "code": "PRCP",
                                }
                            ]
                        },
                        "reference": {"reference": actor},
                    }
                ],
            },
        },
    )


def _audit_rows(app: Flask) -> list[Any]:
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


# -- private_key_jwt client assertions ----------------------------------------------------------------


def test_rs384_assertion_is_accepted(anonymous_client: FlaskClient, app: Flask) -> None:
    client_id = _jwks_client(app, _RSA)
    response = _assertion_token(anonymous_client, _sign(_claims(client_id)))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["scope"] == "system/Patient.rs"


def test_es384_assertion_is_accepted(anonymous_client: FlaskClient, app: Flask) -> None:
    key = ECKey.generate_key("P-384", private=True, auto_kid=True)
    client_id = _jwks_client(app, key)
    response = _assertion_token(anonymous_client, _sign(_claims(client_id), key, "ES384"))
    assert response.status_code == 200, response.get_json()


def test_alg_none_assertion_is_refused(anonymous_client: FlaskClient, app: Flask) -> None:
    client_id = _jwks_client(app, _RSA)
    header = _b64(b'{"alg":"none","typ":"JWT"}')
    payload = _b64(json.dumps(_claims(client_id)).encode())
    response = _assertion_token(anonymous_client, f"{header}.{payload}.")
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"
    assert "access_token" not in response.get_json()


def test_hs256_assertion_signed_with_public_key_is_refused(anonymous_client: FlaskClient, app: Flask) -> None:
    client_id = _jwks_client(app, _RSA)
    # joserfc refuses to build this key, so sign by hand, as an attacker would.
    public_pem = _RSA.as_pem(private=False)
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": _RSA.kid}).encode())
    payload = _b64(json.dumps(_claims(client_id)).encode())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assertion = f"{header}.{payload}.{_b64(signature)}"
    response = _assertion_token(anonymous_client, assertion)
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_assertion_with_wrong_audience_is_refused(anonymous_client: FlaskClient, app: Flask) -> None:
    client_id = _jwks_client(app, _RSA)
    assertion = _sign(_claims(client_id, aud="https://other.example/auth/token"))
    response = _assertion_token(anonymous_client, assertion)
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_assertion_whose_iss_differs_from_sub_is_refused(anonymous_client: FlaskClient, app: Flask) -> None:
    client_id = _jwks_client(app, _RSA)
    other_id = _jwks_client(app, _RSA)
    assertion = _sign(_claims(client_id, iss=other_id))
    response = _assertion_token(anonymous_client, assertion)
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_expired_assertion_is_refused(anonymous_client: FlaskClient, app: Flask) -> None:
    client_id = _jwks_client(app, _RSA)
    assertion = _sign(_claims(client_id, exp=int(time.time()) - 600))
    response = _assertion_token(anonymous_client, assertion)
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_assertion_expiring_more_than_five_minutes_ahead_is_refused(
    anonymous_client: FlaskClient, app: Flask
) -> None:
    client_id = _jwks_client(app, _RSA)
    assertion = _sign(_claims(client_id, exp=int(time.time()) + 3600))
    response = _assertion_token(anonymous_client, assertion)
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_replayed_assertion_jti_is_refused(anonymous_client: FlaskClient, app: Flask) -> None:
    client_id = _jwks_client(app, _RSA)
    assertion = _sign(_claims(client_id))
    assert _assertion_token(anonymous_client, assertion).status_code == 200
    replay = _assertion_token(anonymous_client, assertion)
    assert replay.status_code in (400, 401)
    assert replay.get_json()["error"] == "invalid_client"


# -- access tokens on the FHIR API -----------------------------------------------------------------


def test_request_without_token_is_401_with_challenge(anonymous_client: FlaskClient) -> None:
    response = anonymous_client.get("/fhir/Patient")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_unknown_token_is_401_invalid_token(anonymous_client: FlaskClient) -> None:
    response = anonymous_client.get("/fhir/Patient", headers=_bearer("not-a-token"))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_revoked_token_stops_working(anonymous_client: FlaskClient, app: Flask) -> None:
    store = app.extensions["auth"].store
    client_id, secret = store.create_client("svc", "system/*.rs", "client_secret_basic", [], None, None)
    issued = anonymous_client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/*.rs"},
        auth=(client_id, secret),
    )
    token = issued.get_json()["access_token"]
    assert anonymous_client.get("/fhir/Patient", headers=_bearer(token)).status_code == 200
    revoked = anonymous_client.post("/auth/revoke", data={"token": token}, auth=(client_id, secret))
    assert revoked.status_code == 200
    response = anonymous_client.get("/fhir/Patient", headers=_bearer(token))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_expired_token_is_401(anonymous_client: FlaskClient, app: Flask) -> None:
    token = system_token(anonymous_client, "system/*.rs")
    engine = app.extensions["coordination"].repo.engine
    with engine.begin() as conn:
        conn.execute(
            update(oauth_token)
            .where(oauth_token.c.token_hash == digest(token))
            .values(expires_at=int(time.time()) - 1)
        )
    response = anonymous_client.get("/fhir/Patient", headers=_bearer(token))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_scope_beyond_registration_is_invalid_scope(anonymous_client: FlaskClient, app: Flask) -> None:
    store = app.extensions["auth"].store
    client_id, secret = store.create_client("svc", "system/Patient.rs", "client_secret_basic", [], None, None)
    response = anonymous_client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
        auth=(client_id, secret),
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_scope"


def test_partly_allowed_scope_is_narrowed_to_registration(anonymous_client: FlaskClient, app: Flask) -> None:
    store = app.extensions["auth"].store
    client_id, secret = store.create_client("svc", "system/Patient.rs", "client_secret_basic", [], None, None)
    response = anonymous_client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/Patient.rs system/Observation.rs"},
        auth=(client_id, secret),
    )
    assert response.status_code == 200
    assert response.get_json()["scope"] == "system/Patient.rs"
    token = response.get_json()["access_token"]
    assert anonymous_client.get("/fhir/Observation", headers=_bearer(token)).status_code == 403


def test_read_scope_cannot_create(anonymous_client: FlaskClient) -> None:
    token = system_token(anonymous_client, "system/Patient.rs")
    response = anonymous_client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient"},
        headers=_bearer(token, **{"Content-Type": "application/fhir+json"}),
    )
    assert response.status_code == 403
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_metadata_and_smart_configuration_need_no_token(anonymous_client: FlaskClient) -> None:
    assert anonymous_client.get("/fhir/metadata").status_code == 200
    assert anonymous_client.get("/fhir/.well-known/smart-configuration").status_code == 200


def test_smart_configuration_advertises_endpoints_and_s256_only(anonymous_client: FlaskClient) -> None:
    body = anonymous_client.get("/fhir/.well-known/smart-configuration").get_json()
    assert body["code_challenge_methods_supported"] == ["S256"]
    assert body["token_endpoint"] == TOKEN_URL
    assert body["authorization_endpoint"] == "http://localhost/auth/authorize"
    assert body["introspection_endpoint"] == "http://localhost/auth/introspect"
    assert body["revocation_endpoint"] == "http://localhost/auth/revoke"
    assert body["jwks_uri"] == "http://localhost/auth/jwks"
    assert "private_key_jwt" in body["token_endpoint_auth_methods_supported"]
    assert {"RS384", "ES384"} <= set(body["token_endpoint_auth_signing_alg_values_supported"])
    assert {"authorization_code", "client_credentials"} <= set(body["grant_types_supported"])
    assert "client-confidential-asymmetric" in body["capabilities"]


# -- introspection ------------------------------------------------------------------------------------


def test_introspection_reports_live_token_active(anonymous_client: FlaskClient, app: Flask) -> None:
    token = system_token(anonymous_client, "system/Patient.rs")
    client_id, secret = app.extensions["auth"].store.create_client(
        "rs", "system/Patient.rs", "client_secret_basic", [], None, None
    )
    body = anonymous_client.post(
        "/auth/introspect", data={"token": token}, auth=(client_id, secret)
    ).get_json()
    assert body["active"] is True
    assert body["scope"] == "system/Patient.rs"
    assert body["exp"] > time.time()


def test_introspection_reports_revoked_token_inactive(anonymous_client: FlaskClient, app: Flask) -> None:
    store = app.extensions["auth"].store
    client_id, secret = store.create_client("svc", "system/*.rs", "client_secret_basic", [], None, None)
    token = anonymous_client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/*.rs"},
        auth=(client_id, secret),
    ).get_json()["access_token"]
    anonymous_client.post("/auth/revoke", data={"token": token}, auth=(client_id, secret))
    body = anonymous_client.post(
        "/auth/introspect", data={"token": token}, auth=(client_id, secret)
    ).get_json()
    assert body == {"active": False}


def test_introspection_reports_unknown_token_inactive(anonymous_client: FlaskClient, app: Flask) -> None:
    client_id, secret = app.extensions["auth"].store.create_client(
        "rs", "system/Patient.rs", "client_secret_basic", [], None, None
    )
    body = anonymous_client.post(
        "/auth/introspect", data={"token": "nope"}, auth=(client_id, secret)
    ).get_json()
    assert body == {"active": False}


# -- authorization code + PKCE ------------------------------------------------------------------------


def test_authorization_code_flow_issues_a_user_token(anonymous_client: FlaskClient, app: Flask) -> None:
    practitioner_id = _practitioner(app)
    browser, client_id, code, verifier = _code(app)
    body = _exchange(browser, client_id, code, verifier).get_json()
    assert body["token_type"].lower() == "bearer"
    assert body["scope"] == "user/*.cruds"
    token = body["access_token"]
    info = app.extensions["auth"].token(token)
    assert info.practitioner_id == practitioner_id


def test_pkce_plain_is_refused(anonymous_client: FlaskClient, app: Flask) -> None:
    _practitioner(app)
    client_id = _public_client(app)
    browser = app.test_client()
    _login(browser, "dr", PASSWORD)
    url = _authorize_url(
        client_id, None, "user/*.cruds", code_challenge="x" * 43, code_challenge_method="plain"
    )
    response = browser.get(url)
    location = response.headers.get("Location", "")
    assert response.status_code in (302, 400)
    if response.status_code == 302:
        assert location.startswith(REDIRECT)
        assert parse_qs(urlsplit(location).query)["error"] == ["invalid_request"]
    assert "code=" not in location


def test_pkce_missing_is_refused_at_authorize(anonymous_client: FlaskClient, app: Flask) -> None:
    _practitioner(app)
    client_id = _public_client(app)
    browser = app.test_client()
    _login(browser, "dr", PASSWORD)
    response = browser.get(_authorize_url(client_id, None, "user/*.cruds"))
    location = response.headers.get("Location", "")
    assert response.status_code in (302, 400)
    if response.status_code == 302:
        assert parse_qs(urlsplit(location).query)["error"] == ["invalid_request"]
    assert "code=" not in location


def test_code_without_verifier_gets_no_token(anonymous_client: FlaskClient, app: Flask) -> None:
    _practitioner(app)
    browser, client_id, code, _verifier = _code(app)
    response = browser.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": client_id,
        },
    )
    assert response.status_code == 400
    assert "access_token" not in response.get_json()


def test_confidential_client_without_pkce_is_refused_at_authorize(
    anonymous_client: FlaskClient, app: Flask
) -> None:
    _practitioner(app)
    client_id, _secret = app.extensions["auth"].store.create_client(
        "webapp", "user/*.cruds", "client_secret_basic", [REDIRECT], None, None
    )
    browser = app.test_client()
    _login(browser, "dr", PASSWORD)
    response = browser.get(_authorize_url(client_id, None, "user/*.cruds"))
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["error"] == ["invalid_request"]
    assert "code" not in query


def test_wrong_code_verifier_is_refused(anonymous_client: FlaskClient, app: Flask) -> None:
    _practitioner(app)
    browser, client_id, code, _verifier = _code(app)
    response = _exchange(browser, client_id, code, secrets.token_urlsafe(48))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"


def test_code_reuse_is_refused_and_revokes_its_token(anonymous_client: FlaskClient, app: Flask) -> None:
    _practitioner(app)
    browser, client_id, code, verifier = _code(app)
    first = _exchange(browser, client_id, code, verifier)
    token = first.get_json()["access_token"]
    assert anonymous_client.get("/fhir/Patient", headers=_bearer(token)).status_code == 200
    second = _exchange(browser, client_id, code, verifier)
    assert second.status_code == 400
    assert second.get_json()["error"] == "invalid_grant"
    assert anonymous_client.get("/fhir/Patient", headers=_bearer(token)).status_code == 401


def test_unregistered_redirect_uri_is_not_redirected_to(anonymous_client: FlaskClient, app: Flask) -> None:
    _practitioner(app)
    client_id = _public_client(app)
    _verifier, challenge = _pkce()
    browser = app.test_client()
    _login(browser, "dr", PASSWORD)
    url = _authorize_url(client_id, challenge, "user/*.cruds", redirect_uri="https://evil.example/cb")
    response = browser.get(url)
    assert response.status_code == 400
    assert "Location" not in response.headers


def test_redirect_uri_mismatch_at_token_endpoint_is_refused(
    anonymous_client: FlaskClient, app: Flask
) -> None:
    _practitioner(app)
    browser, client_id, code, verifier = _code(app)
    response = _exchange(browser, client_id, code, verifier, redirect="http://127.0.0.1:9999/other")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"


_REFRESH_BUG = (
    "BUG: auth/server.py AccessTokens.__init__ passes refresh_token_generator=lambda *a: ..., but authlib's "
    "BearerTokenGenerator.generate calls it with keyword arguments (client=, grant_type=, user=, scope=): "
    "TypeError -> 500 whenever offline_access/online_access is granted"
)


def test_offline_access_issues_a_refresh_token(anonymous_client: FlaskClient, app: Flask) -> None:
    _practitioner(app)
    browser, client_id, code, verifier = _code(app, "user/*.cruds offline_access")
    response = _exchange(browser, client_id, code, verifier)
    assert response.status_code == 200
    assert response.get_json()["refresh_token"]


def test_refresh_token_reuse_revokes_the_family(anonymous_client: FlaskClient, app: Flask) -> None:
    _practitioner(app)
    browser, client_id, code, verifier = _code(app, "user/*.cruds offline_access")
    issued = _exchange(browser, client_id, code, verifier)
    assert issued.status_code == 200
    old_refresh = issued.get_json()["refresh_token"]
    rotated = browser.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": old_refresh, "client_id": client_id},
    )
    assert rotated.status_code == 200, rotated.get_json()
    new_access = rotated.get_json()["access_token"]
    replay = browser.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": old_refresh, "client_id": client_id},
    )
    assert replay.status_code == 400
    assert replay.get_json()["error"] == "invalid_grant"
    assert anonymous_client.get("/fhir/Patient", headers=_bearer(new_access)).status_code == 401


def test_first_login_page_of_a_fresh_app_works(app: Flask, database_url: str) -> None:
    fresh = create_app(Settings(database_url=database_url))
    try:
        response = fresh.test_client().get("/auth/login")
        assert response.status_code == 200
    finally:
        close_app(fresh)


# -- login page ---------------------------------------------------------------------------------------


def test_login_does_not_redirect_off_site(anonymous_client: FlaskClient, app: Flask) -> None:
    _practitioner(app)
    browser = app.test_client()
    for target in ("https://evil.example", "//evil.example/auth/authorize", "/\\evil.example"):
        response = _login(browser, "dr", PASSWORD, next_url=target)
        assert response.status_code == 200, target
        assert "Location" not in response.headers


def test_login_with_wrong_password_is_401(anonymous_client: FlaskClient, app: Flask) -> None:
    _practitioner(app)
    response = _login(app.test_client(), "dr", "wrong-password-xyz")
    assert response.status_code == 401
    assert "csrf_token" in response.get_data(as_text=True)


def test_login_locks_out_after_five_failures(anonymous_client: FlaskClient, app: Flask) -> None:
    _practitioner(app)
    browser = app.test_client()
    for _ in range(5):
        last = _login(browser, "dr", "wrong-password-xyz")
    assert last.status_code in (401, 429)
    response = _login(browser, "dr", PASSWORD)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0


def test_login_without_csrf_token_is_400(anonymous_client: FlaskClient, app: Flask) -> None:
    _practitioner(app)
    browser = app.test_client()
    browser.get("/auth/login")
    response = browser.post("/auth/login", data={"username": "dr", "password": PASSWORD})
    assert response.status_code == 400


# -- care-team policy ---------------------------------------------------------------------------------


def test_care_team_through_organization_reads_patient(client: FlaskClient, app: Flask) -> None:
    practitioner_id = _practitioner(app)
    patient_id = _patient(client, "Inside")
    org_id = _create(client, {"resourceType": "Organization", "name": "MSP"})
    _create(
        client,
        {
            "resourceType": "PractitionerRole",
            "active": True,
            "practitioner": {"reference": f"Practitioner/{practitioner_id}"},
            "organization": {"reference": f"Organization/{org_id}"},
        },
    )
    _care_team(client, patient_id, f"Organization/{org_id}")
    token = _user_token(app)
    assert client.get(f"/fhir/Patient/{patient_id}", headers=_bearer(token)).status_code == 200


def test_care_team_member_reads_patient(client: FlaskClient, app: Flask) -> None:
    practitioner_id = _practitioner(app)
    patient_id = _patient(client, "Inside")
    _care_team(client, patient_id, f"Practitioner/{practitioner_id}")
    token = _user_token(app)
    assert client.get(f"/fhir/Patient/{patient_id}", headers=_bearer(token)).status_code == 200


def test_care_team_through_practitioner_role_reads_patient(client: FlaskClient, app: Flask) -> None:
    practitioner_id = _practitioner(app)
    patient_id = _patient(client, "Inside")
    role_id = _create(
        client,
        {
            "resourceType": "PractitionerRole",
            "active": True,
            "practitioner": {"reference": f"Practitioner/{practitioner_id}"},
        },
    )
    _care_team(client, patient_id, f"PractitionerRole/{role_id}")
    token = _user_token(app)
    assert client.get(f"/fhir/Patient/{patient_id}", headers=_bearer(token)).status_code == 200


def test_non_member_read_by_id_is_403(client: FlaskClient, app: Flask) -> None:
    _practitioner(app)
    patient_id = _patient(client, "Outside")
    observation_id = _observation(client, patient_id)
    token = _user_token(app)
    response = client.get(f"/fhir/Observation/{observation_id}", headers=_bearer(token))
    assert response.status_code == 403
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_search_is_filtered_to_care_team_patients(client: FlaskClient, app: Flask) -> None:
    practitioner_id = _practitioner(app)
    inside = _patient(client, "Inside")
    outside = _patient(client, "Outside")
    _care_team(client, inside, f"Practitioner/{practitioner_id}")
    allowed = _observation(client, inside)
    _observation(client, outside)
    token = _user_token(app)
    bundle = client.get("/fhir/Observation?_count=50", headers=_bearer(token)).get_json()
    ids = {e["resource"]["id"] for e in bundle.get("entry", [])}
    assert ids == {allowed}


def test_search_include_does_not_leak_other_patients(client: FlaskClient, app: Flask) -> None:
    practitioner_id = _practitioner(app)
    inside = _patient(client, "Inside")
    outside = _patient(client, "Outside")
    _care_team(client, inside, f"Practitioner/{practitioner_id}")
    _observation(client, inside)
    _observation(client, outside)
    token = _user_token(app)
    bundle = client.get("/fhir/Observation?_include=Observation:subject", headers=_bearer(token)).get_json()
    patients = {
        e["resource"]["id"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] == "Patient"
    }
    assert patients == {inside}


def test_consent_deny_overrides_care_team(client: FlaskClient, app: Flask) -> None:
    practitioner_id = _practitioner(app)
    patient_id = _patient(client, "Opposed")
    _care_team(client, patient_id, f"Practitioner/{practitioner_id}")
    _consent_deny(client, patient_id, f"Practitioner/{practitioner_id}")
    token = _user_token(app)
    assert client.get(f"/fhir/Patient/{patient_id}", headers=_bearer(token)).status_code == 403


def test_consent_deny_wins_over_break_the_glass(client: FlaskClient, app: Flask) -> None:
    practitioner_id = _practitioner(app)
    patient_id = _patient(client, "Opposed")
    _consent_deny(client, patient_id, f"Practitioner/{practitioner_id}")
    token = _user_token(app)
    headers = _bearer(token, **{"X-Break-The-Glass": "unconscious patient in the ER"})
    assert client.get(f"/fhir/Patient/{patient_id}", headers=headers).status_code == 403


def test_break_the_glass_grants_access_and_is_flagged(client: FlaskClient, app: Flask) -> None:
    practitioner_id = _practitioner(app)
    patient_id = _patient(client, "Emergency")
    token = _user_token(app)
    reason = "unconscious patient in the ER"
    response = client.get(
        f"/fhir/Patient/{patient_id}", headers=_bearer(token, **{"X-Break-The-Glass": reason})
    )
    assert response.status_code == 200
    rows = [
        r for r in _audit_rows(app) if r.agent == f"Practitioner/{practitioner_id}" and r.subtype == "read"
    ]
    assert len(rows) == 1
    assert bool(rows[-1].break_glass) is True
    assert rows[-1].outcome == "0"
    assert reason in rows[-1].content
    engine = app.extensions["coordination"].repo.engine
    with engine.connect() as conn:
        audited = (
            conn.execute(
                text("SELECT patient_id FROM audit_patient WHERE audit_pk = :pk"), {"pk": rows[-1].pk}
            )
            .scalars()
            .all()
        )
    assert audited == [patient_id]


def test_break_the_glass_with_short_reason_is_400(client: FlaskClient, app: Flask) -> None:
    _practitioner(app)
    patient_id = _patient(client, "Emergency")
    token = _user_token(app)
    response = client.get(
        f"/fhir/Patient/{patient_id}", headers=_bearer(token, **{"X-Break-The-Glass": "urgent"})
    )
    assert response.status_code == 400


def test_break_the_glass_with_system_token_is_403(client: FlaskClient) -> None:
    patient_id = _patient(client, "Emergency")
    response = client.get(
        f"/fhir/Patient/{patient_id}", headers={"X-Break-The-Glass": "unconscious patient in the ER"}
    )
    assert response.status_code == 403


def test_refused_request_is_audited_with_failure_outcome(client: FlaskClient, app: Flask) -> None:
    practitioner_id = _practitioner(app)
    patient_id = _patient(client, "Outside")
    token = _user_token(app)
    assert client.get(f"/fhir/Patient/{patient_id}", headers=_bearer(token)).status_code == 403
    rows = [r for r in _audit_rows(app) if r.agent == f"Practitioner/{practitioner_id}"]
    assert [(r.subtype, r.outcome, bool(r.break_glass)) for r in rows] == [("read", "4", False)]


def test_unauthenticated_request_is_audited_with_failure_outcome(
    anonymous_client: FlaskClient, app: Flask
) -> None:
    assert anonymous_client.get("/fhir/Patient").status_code == 401
    rows = _audit_rows(app)
    assert [(r.subtype, r.outcome, r.client_id) for r in rows] == [("search-type", "4", None)]
