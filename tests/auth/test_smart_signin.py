"""SMART sign-in as the spec says (issue 19): the ID token checked by a standard OIDC client, the scope
rule (nothing dropped silently), the refresh-token rule, plain OAuth error messages, the consent page."""

from __future__ import annotations

import html
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.integrations.base_client.sync_openid import OpenIDMixin
from flask import Flask
from flask.testing import FlaskClient
from joserfc.errors import ClaimError, InvalidClaimError
from joserfc.jwk import RSAKey
from sqlalchemy import select

from auth import messages
from auth.schema import oauth_token
from auth.secrets import digest
from coordination_api.accounts import create_practitioner_user
from tests.conftest import _truncate
from tests.factories import create_care_team, create_patient
from tests.support.auth import (
    FHIR_AUD,
    PASSWORD,
    REDIRECT,
    TOKEN_URL,
    assertion_claims,
    assertion_token,
    authorize_url,
    csrf_token_of,
    exchange_code,
    jwks_client,
    log_in,
    pkce_pair,
    practitioner_user,
    sign_assertion,
)

_RSA = RSAKey.generate_key(2048, private=True, auto_kid=True)
ALL = "openid fhirUser profile launch/patient patient/*.rs user/*.rs offline_access online_access"


@pytest.fixture(autouse=True)
def _session_key_ready(app: Flask) -> None:
    _truncate(app)
    app.test_client().get("/fhir/.well-known/smart-configuration")


def _client(app: Flask, scope: str, auth: str = "none", name: str = "Cabinet app") -> tuple[str, str | None]:
    client_id, secret = app.extensions["auth"].store.create_client(name, scope, auth, [REDIRECT], None, None)
    return client_id, secret


def _browser(app: Flask, url: str) -> tuple[FlaskClient, Any]:
    """A logged-in browser and its answer to the authorize URL (the consent page or a redirect)."""
    browser = app.test_client()
    log_in(browser, "dr", PASSWORD, next_url=url)
    return browser, browser.get(url)


def _approve(browser: FlaskClient, url: str, page: Any, **form: str) -> str:
    done = browser.post(
        url, data={"csrf_token": csrf_token_of(page.get_data(as_text=True)), "decision": "approve", **form}
    )
    assert done.status_code == 302, done.get_data(as_text=True)
    return parse_qs(urlsplit(done.headers["Location"]).query)["code"][0]


def _tokens(
    app: Flask, client_id: str, scope: str, secret: str | None = None, **extra: str
) -> dict[str, Any]:
    verifier, challenge = pkce_pair()
    url = authorize_url(client_id, challenge, scope, **extra)
    browser, page = _browser(app, url)
    assert page.status_code == 200, page.get_data(as_text=True)
    code = _approve(browser, url, page)
    if secret is None:
        response = exchange_code(browser, client_id, code, verifier)
    else:
        response = browser.post(
            "/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
            },
            auth=(client_id, secret),
        )
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def _refused(app: Flask, client_id: str, scope: str) -> dict[str, list[str]]:
    """The authorize request's error redirect to the client (RFC 6749 4.1.2.1)."""
    _verifier, challenge = pkce_pair()
    _unused, page = _browser(app, authorize_url(client_id, challenge, scope))
    assert page.status_code == 302, page.get_data(as_text=True)
    assert page.headers["Location"].startswith(REDIRECT)
    return parse_qs(urlsplit(page.headers["Location"]).query)


# -- the ID token, checked by authlib's relying-party code ----------------------------------------------


class _RelyingParty(OpenIDMixin):  # type: ignore[misc]
    """authlib's OIDC client logic (discovery, JWKS from jwks_uri, iss/aud/nonce/at_hash checks),
    talking to the app through the Flask test client."""

    def __init__(self, http: FlaskClient, client_id: str) -> None:
        self.http = http
        self.client_id = client_id
        self.server_metadata: dict[str, Any] = {}

    def load_server_metadata(self) -> dict[str, Any]:
        if not self.server_metadata:
            # Discovery at the issuer, which is the FHIR base (OpenID Connect Discovery 1.0 section 4).
            answer = self.http.get("/fhir/.well-known/openid-configuration")
            assert answer.status_code == 200
            self.server_metadata = dict(answer.get_json())
        return self.server_metadata

    @contextmanager
    def _get_session(self) -> Iterator[Any]:
        http = self.http

        class Session:
            def request(self, method: str, uri: str, withhold_token: bool = False) -> Any:
                parts = urlsplit(uri)
                answer = http.open(parts.path, method=method)

                class Reply:
                    def raise_for_status(self) -> None:
                        assert answer.status_code == 200

                    def json(self) -> Any:
                        return answer.get_json()

                return Reply()

        yield Session()


def test_id_token_passes_a_standard_oidc_client(app: Flask, anonymous_client: FlaskClient) -> None:
    practitioner = practitioner_user(app)
    client_id, _ = _client(app, "openid fhirUser profile user/*.rs")
    body = _tokens(app, client_id, "openid fhirUser profile user/*.rs", nonce="n-0S6_WzA2Mj")
    assert set(body["scope"].split()) == {"openid", "fhirUser", "profile", "user/*.rs"}
    rp = _RelyingParty(anonymous_client, client_id)
    assert rp.load_server_metadata()["jwks_uri"].endswith("/auth/jwks")
    user = rp.parse_id_token(body, nonce="n-0S6_WzA2Mj")
    assert user["iss"] == FHIR_AUD and user["sub"] == "dr"
    # fhirUser: an absolute URL of the Practitioner (SMART App Launch 2, scopes-and-launch-context).
    assert user["fhirUser"] == f"{FHIR_AUD}/Practitioner/{practitioner}"
    assert user["at_hash"]  # checked against the access token by CodeIDToken
    # The same client logic refuses a wrong nonce and an access token the ID token was not made with.
    with pytest.raises(InvalidClaimError):
        rp.parse_id_token(body, nonce="another")
    with pytest.raises(InvalidClaimError):
        rp.parse_id_token({**body, "access_token": body["access_token"] + "x"}, nonce="n-0S6_WzA2Mj")
    with pytest.raises(ClaimError):  # aud is not this client (authlib then demands azp)
        _RelyingParty(anonymous_client, "another-client").parse_id_token(body, nonce="n-0S6_WzA2Mj")


# -- the scope rule: granted, listed as not granted, or refused ----------------------------------------------


def test_scopes_not_registered_are_listed_as_not_granted_and_left_out_of_the_token(app: Flask) -> None:
    practitioner_user(app)
    client_id, _ = _client(app, "openid fhirUser user/*.rs")
    asked = "openid fhirUser user/*.rs user/*.cruds offline_access system/*.rs weird/thing"
    verifier, challenge = pkce_pair()
    url = authorize_url(client_id, challenge, asked)
    browser, page = _browser(app, url)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    not_granted = text.split('id="not-granted"')[1]
    for scope in ("user/*.cruds", "offline_access", "system/*.rs", "weird/thing"):
        assert f"<code>{scope}</code>" in not_granted
    assert "non accordé : l&#39;application n&#39;est pas enregistrée" in not_granted
    assert "réservé aux services techniques" in not_granted and "accès inconnu" in not_granted
    granted = text.split('id="scopes"')[1].split("</ul>")[0]
    assert "<code>user/*.rs</code>" in granted and "user/*.cruds" not in granted
    code = _approve(browser, url, page)
    body = exchange_code(browser, client_id, code, verifier).get_json()
    # RFC 6749 3.3 / 5.1: the response's scope says exactly what was granted.
    assert body["scope"].split() == ["openid", "fhirUser", "user/*.rs"]
    assert "refresh_token" not in body and body["id_token"]


def test_openid_not_registered_is_refused_with_invalid_scope(app: Flask) -> None:
    practitioner_user(app)
    client_id, _ = _client(app, "user/*.cruds launch/patient offline_access")
    query = _refused(app, client_id, "openid fhirUser user/*.rs")
    assert query["error"] == ["invalid_scope"] and query["state"] == ["st4te"]
    assert "not registered for 'openid fhirUser'" in query["error_description"][0]


def test_nothing_grantable_or_no_scope_is_refused_with_invalid_scope(app: Flask) -> None:
    practitioner_user(app)
    client_id, _ = _client(app, "user/Patient.rs")
    query = _refused(app, client_id, "user/Observation.rs system/*.rs")
    assert query["error"] == ["invalid_scope"]
    assert query["error_description"] == [
        "none of the requested scopes can be granted to this client: "
        "user/Observation.rs (not-registered); system/*.rs (system-only)"
    ]
    query = _refused(app, client_id, "")
    assert query["error"] == ["invalid_scope"] and "'scope' is required" in query["error_description"][0]


# -- refresh tokens: offline_access / online_access, public and confidential clients ----------------------


def _refresh_row(app: Flask, refresh: str) -> Any:
    engine = app.extensions["coordination"].repo.engine
    with engine.connect() as conn:
        return conn.execute(
            select(oauth_token.c.refresh_expires_at).where(oauth_token.c.refresh_hash == digest(refresh))
        ).one()


def test_refresh_tokens_follow_offline_and_online_access_for_every_client(app: Flask) -> None:
    practitioner_user(app)
    public, _ = _client(app, "user/*.rs offline_access online_access")
    confidential, secret = _client(app, "user/*.rs offline_access online_access", "client_secret_basic")
    # Without offline_access / online_access: no refresh token, whatever the client.
    assert "refresh_token" not in _tokens(app, public, "user/*.rs")
    assert "refresh_token" not in _tokens(app, confidential, "user/*.rs", secret)
    # offline_access: a public client (PKCE, rotation with reuse detection) and a confidential one.
    policy = app.extensions["auth"].config.tokens
    for client_id, client_secret in ((public, None), (confidential, secret)):
        body = _tokens(app, client_id, "user/*.rs offline_access", client_secret)
        assert body["refresh_token"] and body["expires_in"] == policy.access_ttl
        expires = _refresh_row(app, body["refresh_token"]).refresh_expires_at
        assert abs(expires - (time.time() + policy.offline_ttl)) < 60
    # online_access: the grant ends online_ttl after the sign-in; refreshing never extends it.
    body = _tokens(app, public, "user/*.rs online_access")
    first = _refresh_row(app, body["refresh_token"]).refresh_expires_at
    assert abs(first - (time.time() + policy.online_ttl)) < 60
    time.sleep(1.1)
    again = app.test_client().post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": public},
    )
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["scope"] == "user/*.rs online_access"
    assert _refresh_row(app, again.get_json()["refresh_token"]).refresh_expires_at == first


# -- error messages a person can act on ------------------------------------------------------------------


_AUTHLIB_WORDS = re.compile(
    r"cannot authenticate with methods|does not exist on this server|in request\.|MUST"
)


def _plain(response: Any, error: str, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == error
    description: str = body["error_description"]
    assert description == messages.ascii_description(description) and not _AUTHLIB_WORDS.search(description)
    return description


def test_wrong_client_credentials_are_invalid_client_in_plain_words(
    anonymous_client: FlaskClient, app: Flask
) -> None:
    client_id, secret = _client(app, "system/*.rs", "client_secret_basic")
    token = anonymous_client.post
    form = {"grant_type": "client_credentials", "scope": "system/*.rs"}
    wrong = token("/auth/token", data=form, auth=(client_id, "not-the-secret"))
    assert _plain(wrong, "invalid_client", 401) == "unknown client or wrong secret"
    assert 'error_description="unknown client or wrong secret"' in wrong.headers["WWW-Authenticate"]
    unknown = token("/auth/token", data=form, auth=(str(uuid.uuid4()), secret or ""))
    assert _plain(unknown, "invalid_client", 401) == "unknown client or wrong secret"
    nothing = token("/auth/token", data=form)
    assert _plain(nothing, "invalid_client", 401).startswith("client authentication required")
    unknown_public = token(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": "x",
            "redirect_uri": REDIRECT,
            "client_id": "nobody",
        },
    )
    assert _plain(unknown_public, "invalid_client", 400) == "unknown client or wrong secret"


def test_private_key_jwt_failures_say_what_is_wrong(anonymous_client: FlaskClient, app: Flask) -> None:
    client_id = jwks_client(app, _RSA)
    cases = {
        "'aud' must be this server's token URL": assertion_claims(
            client_id, aud="https://other.example/auth/token"
        ),
        "'iss' and 'sub' must both be your client_id": assertion_claims(client_id, iss="someone-else"),
        "'jti' is missing": assertion_claims(client_id, jti=None),
        "'exp' is missing or more than five minutes ahead": assertion_claims(client_id, exp=None),
    }
    for expected, claims in cases.items():
        described = _plain(
            assertion_token(anonymous_client, sign_assertion(claims, _RSA)), "invalid_client", 400
        )
        assert described.startswith("client assertion (private_key_jwt): ") and expected in described
    assertion = sign_assertion(assertion_claims(client_id), _RSA)
    assert assertion_token(anonymous_client, assertion).status_code == 200
    replay = _plain(assertion_token(anonymous_client, assertion), "invalid_client", 400)
    assert "already used" in replay
    garbage = _plain(assertion_token(anonymous_client, "not.a-jwt"), "invalid_client", 400)
    assert "not a signed JWT" in garbage
    stranger = sign_assertion(assertion_claims(str(uuid.uuid4())), _RSA)
    assert _plain(assertion_token(anonymous_client, stranger), "invalid_client", 400) == (
        "unknown client or wrong secret"
    )
    assert TOKEN_URL.endswith("/auth/token")


def test_grant_errors_are_plain(anonymous_client: FlaskClient, app: Flask) -> None:
    practitioner_user(app)
    client_id, _ = _client(app, "user/*.rs offline_access")
    verifier, challenge = pkce_pair()
    url = authorize_url(client_id, challenge, "user/*.rs offline_access")
    browser, page = _browser(app, url)
    code = _approve(browser, url, page)
    bad_verifier = exchange_code(browser, client_id, code, "x" * 50)
    assert "code_verifier" in _plain(bad_verifier, "invalid_grant", 400)
    used = exchange_code(browser, client_id, code, verifier)
    assert "unknown, expired or already used" in _plain(used, "invalid_grant", 400)
    refresh = anonymous_client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": "nope", "client_id": client_id}
    )
    assert "sign in again" in _plain(refresh, "invalid_grant", 400)
    svc, secret = _client(app, "system/*.rs", "client_secret_basic")
    missing = anonymous_client.post("/auth/introspect", data={}, auth=(svc, secret or ""))
    assert _plain(missing, "invalid_request", 400) == "missing 'token'"


# -- the consent page ---------------------------------------------------------------------------------------


def test_consent_page_names_the_practitioner_and_explains_each_scope(client: FlaskClient, app: Flask) -> None:
    practitioner = practitioner_user(app)
    mine = create_patient(client, "Durand")
    create_care_team(client, mine, f"Practitioner/{practitioner}")
    client_id, _ = _client(app, ALL, name="Logiciel du cabinet")
    _verifier, challenge = pkce_pair()
    url = authorize_url(
        client_id, challenge, "openid fhirUser launch/patient patient/*.rs user/*.rs offline_access"
    )
    _b, page = _browser(app, url)
    text = html.unescape(page.get_data(as_text=True))
    assert re.search(r'id="practitioner-name">Greg House<', text)  # her Practitioner's name, not "dr"
    assert re.search(r'id="client-name">Logiciel du cabinet<', text)
    assert "lire et rechercher les données des patients dont vous faites partie de l'équipe de soins" in text
    assert "lire et rechercher les données du patient choisi, et de lui seul" in text
    assert "l'application recevra le patient que vous choisissez ci-dessous" in text
    assert re.search(rf'<option value="{mine}">Durand[^<]*</option>', text)
    assert "votre identité professionnelle" in text
    assert "garder l'accès même lorsque vous n'utilisez pas l'application : jusqu'à 90 jours" in text
    assert 'id="not-granted"' not in text


def test_consent_page_escapes_everything(app: Flask) -> None:
    create_practitioner_user(app, "dr", "10101010101", PASSWORD, "<img src=x onerror=alert(1)>", "Greg")
    client_id, _ = _client(app, "user/*.rs", name="<script>alert('app')</script>")
    _verifier, challenge = pkce_pair()
    url = authorize_url(client_id, challenge, 'user/*.rs "><script>alert(2)</script>')
    _b, page = _browser(app, url)
    assert page.status_code == 200
    raw = page.get_data(as_text=True)
    assert "<script>" not in raw and "<img" not in raw
    assert "&lt;script&gt;alert(&#39;app&#39;)&lt;/script&gt;" in raw
    assert "Greg &lt;img src=x onerror=alert(1)&gt;" in raw
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in raw.split('id="not-granted"')[1]
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
