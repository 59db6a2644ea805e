"""Security layer: token endpoint attacks, authorization code + PKCE, login, care-team policy, audit."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from urllib.parse import parse_qs, urlsplit

from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import ECKey
from sqlalchemy import text, update

from auth.schema import oauth_token
from auth.secrets import digest
from coordination_api.app import create_app
from coordination_api.config import Settings
from tests.conftest import close_app, system_token
from tests.factories import (
    create_care_team,
    create_consent_deny,
    create_observation,
    create_patient,
    create_via,
)
from tests.support.auth import (
    PASSWORD,
    REDIRECT,
    RSA_KEY,
    TOKEN_URL,
    assertion_claims,
    assertion_token,
    audit_rows,
    authorization_code,
    authorize_url,
    b64url,
    bearer,
    exchange_code,
    jwks_client,
    log_in,
    pkce_pair,
    practitioner_user,
    public_client,
    session_key_ready,
    sign_assertion,
    user_token,
)

__all__ = ["session_key_ready"]  # autouse fixture: the auth pages' session key is loaded

# -- private_key_jwt client assertions ----------------------------------------------------------------


def test_rs384_assertion_is_accepted(anonymous_client: FlaskClient, app: Flask) -> None:
    client_id = jwks_client(app, RSA_KEY)
    response = assertion_token(anonymous_client, sign_assertion(assertion_claims(client_id)))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["scope"] == "system/Patient.rs"


def test_es384_assertion_is_accepted(anonymous_client: FlaskClient, app: Flask) -> None:
    key = ECKey.generate_key("P-384", private=True, auto_kid=True)
    client_id = jwks_client(app, key)
    response = assertion_token(anonymous_client, sign_assertion(assertion_claims(client_id), key, "ES384"))
    assert response.status_code == 200, response.get_json()


def test_alg_none_assertion_is_refused(anonymous_client: FlaskClient, app: Flask) -> None:
    client_id = jwks_client(app, RSA_KEY)
    header = b64url(b'{"alg":"none","typ":"JWT"}')
    payload = b64url(json.dumps(assertion_claims(client_id)).encode())
    response = assertion_token(anonymous_client, f"{header}.{payload}.")
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"
    assert "access_token" not in response.get_json()


def test_hs256_assertion_signed_with_public_key_is_refused(anonymous_client: FlaskClient, app: Flask) -> None:
    client_id = jwks_client(app, RSA_KEY)
    # joserfc refuses to build this key, so sign by hand, as an attacker would.
    public_pem = RSA_KEY.as_pem(private=False)
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": RSA_KEY.kid}).encode())
    payload = b64url(json.dumps(assertion_claims(client_id)).encode())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assertion = f"{header}.{payload}.{b64url(signature)}"
    response = assertion_token(anonymous_client, assertion)
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_assertion_with_wrong_audience_is_refused(anonymous_client: FlaskClient, app: Flask) -> None:
    client_id = jwks_client(app, RSA_KEY)
    assertion = sign_assertion(assertion_claims(client_id, aud="https://other.example/auth/token"))
    response = assertion_token(anonymous_client, assertion)
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_assertion_whose_iss_differs_from_sub_is_refused(anonymous_client: FlaskClient, app: Flask) -> None:
    client_id = jwks_client(app, RSA_KEY)
    other_id = jwks_client(app, RSA_KEY)
    assertion = sign_assertion(assertion_claims(client_id, iss=other_id))
    response = assertion_token(anonymous_client, assertion)
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_expired_assertion_is_refused(anonymous_client: FlaskClient, app: Flask) -> None:
    client_id = jwks_client(app, RSA_KEY)
    assertion = sign_assertion(assertion_claims(client_id, exp=int(time.time()) - 600))
    response = assertion_token(anonymous_client, assertion)
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_assertion_expiring_more_than_five_minutes_ahead_is_refused(
    anonymous_client: FlaskClient, app: Flask
) -> None:
    client_id = jwks_client(app, RSA_KEY)
    assertion = sign_assertion(assertion_claims(client_id, exp=int(time.time()) + 3600))
    response = assertion_token(anonymous_client, assertion)
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_replayed_assertion_jti_is_refused(anonymous_client: FlaskClient, app: Flask) -> None:
    client_id = jwks_client(app, RSA_KEY)
    assertion = sign_assertion(assertion_claims(client_id))
    assert assertion_token(anonymous_client, assertion).status_code == 200
    replay = assertion_token(anonymous_client, assertion)
    assert replay.status_code in (400, 401)
    assert replay.get_json()["error"] == "invalid_client"


# -- access tokens on the FHIR API -----------------------------------------------------------------


def test_request_without_token_is_401_with_challenge(anonymous_client: FlaskClient) -> None:
    response = anonymous_client.get("/fhir/Patient")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_unknown_token_is_401_invalid_token(anonymous_client: FlaskClient) -> None:
    response = anonymous_client.get("/fhir/Patient", headers=bearer("not-a-token"))
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
    assert anonymous_client.get("/fhir/Patient", headers=bearer(token)).status_code == 200
    revoked = anonymous_client.post("/auth/revoke", data={"token": token}, auth=(client_id, secret))
    assert revoked.status_code == 200
    response = anonymous_client.get("/fhir/Patient", headers=bearer(token))
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
    response = anonymous_client.get("/fhir/Patient", headers=bearer(token))
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
    assert anonymous_client.get("/fhir/Observation", headers=bearer(token)).status_code == 403


def test_read_scope_cannot_create(anonymous_client: FlaskClient) -> None:
    token = system_token(anonymous_client, "system/Patient.rs")
    response = anonymous_client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient"},
        headers=bearer(token, **{"Content-Type": "application/fhir+json"}),
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
    practitioner_id = practitioner_user(app)
    browser, client_id, code, verifier = authorization_code(app)
    body = exchange_code(browser, client_id, code, verifier).get_json()
    assert body["token_type"].lower() == "bearer"
    assert body["scope"] == "user/*.cruds"
    token = body["access_token"]
    info = app.extensions["auth"].token(token)
    assert info.practitioner_id == practitioner_id


def test_pkce_plain_is_refused(anonymous_client: FlaskClient, app: Flask) -> None:
    practitioner_user(app)
    client_id = public_client(app)
    browser = app.test_client()
    log_in(browser, "dr", PASSWORD)
    url = authorize_url(
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
    practitioner_user(app)
    client_id = public_client(app)
    browser = app.test_client()
    log_in(browser, "dr", PASSWORD)
    response = browser.get(authorize_url(client_id, None, "user/*.cruds"))
    location = response.headers.get("Location", "")
    assert response.status_code in (302, 400)
    if response.status_code == 302:
        assert parse_qs(urlsplit(location).query)["error"] == ["invalid_request"]
    assert "code=" not in location


def test_code_without_verifier_gets_no_token(anonymous_client: FlaskClient, app: Flask) -> None:
    practitioner_user(app)
    browser, client_id, code, _verifier = authorization_code(app)
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
    practitioner_user(app)
    client_id, _secret = app.extensions["auth"].store.create_client(
        "webapp", "user/*.cruds", "client_secret_basic", [REDIRECT], None, None
    )
    browser = app.test_client()
    log_in(browser, "dr", PASSWORD)
    response = browser.get(authorize_url(client_id, None, "user/*.cruds"))
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["error"] == ["invalid_request"]
    assert "code" not in query


def test_wrong_code_verifier_is_refused(anonymous_client: FlaskClient, app: Flask) -> None:
    practitioner_user(app)
    browser, client_id, code, _verifier = authorization_code(app)
    response = exchange_code(browser, client_id, code, secrets.token_urlsafe(48))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"


def test_code_reuse_is_refused_and_revokes_its_token(anonymous_client: FlaskClient, app: Flask) -> None:
    practitioner_user(app)
    browser, client_id, code, verifier = authorization_code(app)
    first = exchange_code(browser, client_id, code, verifier)
    token = first.get_json()["access_token"]
    assert anonymous_client.get("/fhir/Patient", headers=bearer(token)).status_code == 200
    second = exchange_code(browser, client_id, code, verifier)
    assert second.status_code == 400
    assert second.get_json()["error"] == "invalid_grant"
    assert anonymous_client.get("/fhir/Patient", headers=bearer(token)).status_code == 401


def test_unregistered_redirect_uri_is_not_redirected_to(anonymous_client: FlaskClient, app: Flask) -> None:
    practitioner_user(app)
    client_id = public_client(app)
    _verifier, challenge = pkce_pair()
    browser = app.test_client()
    log_in(browser, "dr", PASSWORD)
    url = authorize_url(client_id, challenge, "user/*.cruds", redirect_uri="https://evil.example/cb")
    response = browser.get(url)
    assert response.status_code == 400
    assert "Location" not in response.headers


def test_redirect_uri_mismatch_at_token_endpoint_is_refused(
    anonymous_client: FlaskClient, app: Flask
) -> None:
    practitioner_user(app)
    browser, client_id, code, verifier = authorization_code(app)
    response = exchange_code(browser, client_id, code, verifier, redirect="http://127.0.0.1:9999/other")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"


_REFRESH_BUG = (
    "BUG: auth/server.py AccessTokens.__init__ passes refresh_token_generator=lambda *a: ..., but authlib's "
    "BearerTokenGenerator.generate calls it with keyword arguments (client=, grant_type=, user=, scope=): "
    "TypeError -> 500 whenever offline_access/online_access is granted"
)


def test_offline_access_issues_a_refresh_token(anonymous_client: FlaskClient, app: Flask) -> None:
    practitioner_user(app)
    browser, client_id, code, verifier = authorization_code(app, "user/*.cruds offline_access")
    response = exchange_code(browser, client_id, code, verifier)
    assert response.status_code == 200
    assert response.get_json()["refresh_token"]


def test_refresh_token_reuse_revokes_the_family(anonymous_client: FlaskClient, app: Flask) -> None:
    practitioner_user(app)
    browser, client_id, code, verifier = authorization_code(app, "user/*.cruds offline_access")
    issued = exchange_code(browser, client_id, code, verifier)
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
    assert anonymous_client.get("/fhir/Patient", headers=bearer(new_access)).status_code == 401


def test_first_login_page_of_a_fresh_app_works(app: Flask, database_url: str) -> None:
    fresh = create_app(Settings(database_url=database_url))
    try:
        response = fresh.test_client().get("/auth/login")
        assert response.status_code == 200
    finally:
        close_app(fresh)


# -- login page ---------------------------------------------------------------------------------------


def test_login_does_not_redirect_off_site(anonymous_client: FlaskClient, app: Flask) -> None:
    practitioner_user(app)
    browser = app.test_client()
    for target in ("https://evil.example", "//evil.example/auth/authorize", "/\\evil.example"):
        response = log_in(browser, "dr", PASSWORD, next_url=target)
        assert response.status_code == 200, target
        assert "Location" not in response.headers


def test_login_with_wrong_password_is_401(anonymous_client: FlaskClient, app: Flask) -> None:
    practitioner_user(app)
    response = log_in(app.test_client(), "dr", "wrong-password-xyz")
    assert response.status_code == 401
    assert "csrf_token" in response.get_data(as_text=True)


def test_login_locks_out_after_five_failures(anonymous_client: FlaskClient, app: Flask) -> None:
    practitioner_user(app)
    browser = app.test_client()
    for _ in range(5):
        last = log_in(browser, "dr", "wrong-password-xyz")
    assert last.status_code in (401, 429)
    response = log_in(browser, "dr", PASSWORD)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0


def test_login_without_csrf_token_is_400(anonymous_client: FlaskClient, app: Flask) -> None:
    practitioner_user(app)
    browser = app.test_client()
    browser.get("/auth/login")
    response = browser.post("/auth/login", data={"username": "dr", "password": PASSWORD})
    assert response.status_code == 400


# -- care-team policy ---------------------------------------------------------------------------------


def test_care_team_through_organization_reads_patient(client: FlaskClient, app: Flask) -> None:
    practitioner_id = practitioner_user(app)
    patient_id = create_patient(client, "Inside")
    org_id = create_via(client, {"resourceType": "Organization", "name": "MSP"})
    create_via(
        client,
        {
            "resourceType": "PractitionerRole",
            "active": True,
            "practitioner": {"reference": f"Practitioner/{practitioner_id}"},
            "organization": {"reference": f"Organization/{org_id}"},
        },
    )
    create_care_team(client, patient_id, f"Organization/{org_id}")
    token = user_token(app)
    assert client.get(f"/fhir/Patient/{patient_id}", headers=bearer(token)).status_code == 200


def test_care_team_member_reads_patient(client: FlaskClient, app: Flask) -> None:
    practitioner_id = practitioner_user(app)
    patient_id = create_patient(client, "Inside")
    create_care_team(client, patient_id, f"Practitioner/{practitioner_id}")
    token = user_token(app)
    assert client.get(f"/fhir/Patient/{patient_id}", headers=bearer(token)).status_code == 200


def test_care_team_through_practitioner_role_reads_patient(client: FlaskClient, app: Flask) -> None:
    practitioner_id = practitioner_user(app)
    patient_id = create_patient(client, "Inside")
    role_id = create_via(
        client,
        {
            "resourceType": "PractitionerRole",
            "active": True,
            "practitioner": {"reference": f"Practitioner/{practitioner_id}"},
        },
    )
    create_care_team(client, patient_id, f"PractitionerRole/{role_id}")
    token = user_token(app)
    assert client.get(f"/fhir/Patient/{patient_id}", headers=bearer(token)).status_code == 200


def test_non_member_read_by_id_is_403(client: FlaskClient, app: Flask) -> None:
    practitioner_user(app)
    patient_id = create_patient(client, "Outside")
    observation_id = create_observation(client, patient_id)
    token = user_token(app)
    response = client.get(f"/fhir/Observation/{observation_id}", headers=bearer(token))
    assert response.status_code == 403
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_search_is_filtered_to_care_team_patients(client: FlaskClient, app: Flask) -> None:
    practitioner_id = practitioner_user(app)
    inside = create_patient(client, "Inside")
    outside = create_patient(client, "Outside")
    create_care_team(client, inside, f"Practitioner/{practitioner_id}")
    allowed = create_observation(client, inside)
    create_observation(client, outside)
    token = user_token(app)
    bundle = client.get("/fhir/Observation?_count=50", headers=bearer(token)).get_json()
    ids = {e["resource"]["id"] for e in bundle.get("entry", [])}
    assert ids == {allowed}


def test_search_include_does_not_leak_other_patients(client: FlaskClient, app: Flask) -> None:
    practitioner_id = practitioner_user(app)
    inside = create_patient(client, "Inside")
    outside = create_patient(client, "Outside")
    create_care_team(client, inside, f"Practitioner/{practitioner_id}")
    create_observation(client, inside)
    create_observation(client, outside)
    token = user_token(app)
    bundle = client.get("/fhir/Observation?_include=Observation:subject", headers=bearer(token)).get_json()
    patients = {
        e["resource"]["id"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] == "Patient"
    }
    assert patients == {inside}


def test_consent_deny_overrides_care_team(client: FlaskClient, app: Flask) -> None:
    practitioner_id = practitioner_user(app)
    patient_id = create_patient(client, "Opposed")
    create_care_team(client, patient_id, f"Practitioner/{practitioner_id}")
    create_consent_deny(client, patient_id, f"Practitioner/{practitioner_id}")
    token = user_token(app)
    assert client.get(f"/fhir/Patient/{patient_id}", headers=bearer(token)).status_code == 403


def test_consent_deny_wins_over_break_the_glass(client: FlaskClient, app: Flask) -> None:
    practitioner_id = practitioner_user(app)
    patient_id = create_patient(client, "Opposed")
    create_consent_deny(client, patient_id, f"Practitioner/{practitioner_id}")
    token = user_token(app)
    headers = bearer(token, **{"X-Break-The-Glass": "unconscious patient in the ER"})
    assert client.get(f"/fhir/Patient/{patient_id}", headers=headers).status_code == 403


def test_break_the_glass_grants_access_and_is_flagged(client: FlaskClient, app: Flask) -> None:
    practitioner_id = practitioner_user(app)
    patient_id = create_patient(client, "Emergency")
    token = user_token(app)
    reason = "unconscious patient in the ER"
    response = client.get(
        f"/fhir/Patient/{patient_id}", headers=bearer(token, **{"X-Break-The-Glass": reason})
    )
    assert response.status_code == 200
    rows = [
        r for r in audit_rows(app) if r.agent == f"Practitioner/{practitioner_id}" and r.subtype == "read"
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
    practitioner_user(app)
    patient_id = create_patient(client, "Emergency")
    token = user_token(app)
    response = client.get(
        f"/fhir/Patient/{patient_id}", headers=bearer(token, **{"X-Break-The-Glass": "urgent"})
    )
    assert response.status_code == 400


def test_break_the_glass_with_system_token_is_403(client: FlaskClient) -> None:
    patient_id = create_patient(client, "Emergency")
    response = client.get(
        f"/fhir/Patient/{patient_id}", headers={"X-Break-The-Glass": "unconscious patient in the ER"}
    )
    assert response.status_code == 403


def test_refused_request_is_audited_with_failure_outcome(client: FlaskClient, app: Flask) -> None:
    practitioner_id = practitioner_user(app)
    patient_id = create_patient(client, "Outside")
    token = user_token(app)
    assert client.get(f"/fhir/Patient/{patient_id}", headers=bearer(token)).status_code == 403
    rows = [r for r in audit_rows(app) if r.agent == f"Practitioner/{practitioner_id}"]
    assert [(r.subtype, r.outcome, bool(r.break_glass)) for r in rows] == [("read", "4", False)]


def test_unauthenticated_request_is_audited_with_failure_outcome(
    anonymous_client: FlaskClient, app: Flask
) -> None:
    assert anonymous_client.get("/fhir/Patient").status_code == 401
    rows = audit_rows(app)
    assert [(r.subtype, r.outcome, r.client_id) for r in rows] == [("search-type", "4", None)]
