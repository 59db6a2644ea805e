"""Regression tests of the OAuth2 / login findings of issue 16, each played as the attack through HTTP
against the real app: refresh token shown by another client, username enumeration and lockout abuse,
lost updates on the failure counter, JWKS refetch on forged kids, Host-header audiences, PSC logins
below eidas1, ignored prompt / max_age, no logout, patient scopes without a patient."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import select, update

from auth.schema import login_failure
from coordination_api.app import create_app
from coordination_api.config import Settings
from tests.conftest import _truncate, close_app, system_token
from tests.factories import create_care_team, create_observation, create_patient
from tests.support.auth import (
    ASSERTION_TYPE,
    PASSWORD,
    REDIRECT,
    RSA_KEY,
    assertion_claims,
    authorize_url,
    bearer,
    csrf_token_of,
    exchange_code,
    jwks_client,
    log_in,
    pkce_pair,
    practitioner_user,
    public_client,
    sign_assertion,
    verified_claims,
)
from tests.support.oidc_provider import Provider, running_provider
from tests.support.psc import make_psc_app, psc_round_trip

WRONG = "wrong-password-xyz"


@pytest.fixture(autouse=True)
def _session_key_ready(app: Flask) -> None:
    app.test_client().get("/fhir/.well-known/smart-configuration")


def _own_app(database_url: str, **settings: Any) -> Flask:
    made = create_app(Settings(database_url=database_url, audit_reads="sync", **settings))
    made.config["TESTING"] = True
    made.test_client().get("/fhir/.well-known/smart-configuration")
    return made


def _engine(app: Flask) -> Any:
    return app.extensions["coordination"].repo.engine


def _failures(app: Flask, username: str) -> dict[str, int]:
    with _engine(app).connect() as conn:
        rows = conn.execute(
            select(login_failure.c.address, login_failure.c.failures).where(
                login_failure.c.username == username
            )
        ).all()
    return {str(address): int(failures) for address, failures in rows}


def _browser(app: Flask, address: str = "127.0.0.1") -> tuple[FlaskClient, str]:
    browser = app.test_client()
    browser.environ_base["REMOTE_ADDR"] = address
    return browser, csrf_token_of(browser.get("/auth/login").get_data(as_text=True))


def _post_login(browser: FlaskClient, csrf: str, username: str, password: str) -> Any:
    return browser.post("/auth/login", data={"username": username, "password": password, "csrf_token": csrf})


# -- 1. refresh tokens ---------------------------------------------------------------------------------


def _offline_tokens(app: Flask) -> tuple[FlaskClient, str, dict[str, Any]]:
    scope = "user/*.rs offline_access"
    client_id = public_client(app, scope)
    verifier, challenge = pkce_pair()
    browser = app.test_client()
    url = authorize_url(client_id, challenge, scope)
    log_in(browser, "dr", PASSWORD, next_url=url)
    page = browser.get(url)
    done = browser.post(
        url, data={"csrf_token": csrf_token_of(page.get_data(as_text=True)), "decision": "approve"}
    )
    code = parse_qs(urlsplit(done.headers["Location"]).query)["code"][0]
    issued = exchange_code(browser, client_id, code, verifier)
    assert issued.status_code == 200, issued.get_json()
    return browser, client_id, issued.get_json()


def test_refresh_token_shown_by_another_client_is_refused_and_stays_valid_for_its_owner(
    anonymous_client: FlaskClient, app: Flask
) -> None:
    practitioner_user(app)
    browser, owner, tokens = _offline_tokens(app)
    thief = public_client(app, "user/*.rs offline_access")
    stolen = browser.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": thief},
    )
    assert stolen.status_code == 400 and stolen.get_json()["error"] == "invalid_grant"
    # Not burned: its owner still refreshes, and the owner's access token still works.
    assert anonymous_client.get("/fhir/metadata", headers=bearer(tokens["access_token"])).status_code == 200
    mine = browser.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": owner},
    )
    assert mine.status_code == 200, mine.get_json()
    confidential, _secret = app.extensions["auth"].store.create_client(
        "other", "user/*.rs offline_access", "client_secret_basic", [REDIRECT], None, None
    )
    wrong_secret = browser.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": mine.get_json()["refresh_token"]},
        auth=(confidential, "not-the-secret"),
    )
    assert wrong_secret.status_code == 401
    again = browser.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": mine.get_json()["refresh_token"],
            "client_id": owner,
        },
    )
    assert again.status_code == 200, again.get_json()


# -- 2. login: enumeration, lockout, atomic counters ----------------------------------------------------


def test_unknown_user_and_wrong_password_get_the_same_answer_also_once_locked(
    anonymous_client: FlaskClient, app: Flask
) -> None:
    practitioner_user(app)
    answers: dict[str, list[Any]] = {"dr": [], "nobody-here": []}
    durations: dict[str, list[float]] = {"dr": [], "nobody-here": []}
    for username in answers:
        browser, csrf = _browser(app, f"10.1.0.{len(username)}")
        for _ in range(7):  # 5 failures lock (from this address), then 2 locked answers
            start = time.perf_counter()
            response = _post_login(browser, csrf, username, WRONG)
            durations[username].append(time.perf_counter() - start)
            body = response.get_data(as_text=True).replace(username, "USER")
            answers[username].append((response.status_code, response.headers.get("Retry-After"), body))
    assert [a[0] for a in answers["dr"]] == [401] * 5 + [429] * 2
    for known, unknown in zip(answers["dr"], answers["nobody-here"], strict=True):
        assert known[0] == unknown[0]
        assert (known[1] is None) == (unknown[1] is None)
        assert known[1] is None or abs(int(known[1]) - int(unknown[1])) <= 2
        assert _without_csrf(known[2]) == _without_csrf(unknown[2])
    # Both pay one argon2 verification, locked or not: an unknown name is not a fast path.
    assert min(durations["nobody-here"]) > 0.5 * min(durations["dr"])


def _csrf_in(body: str) -> str:
    return csrf_token_of(body) if 'name="csrf_token"' in body else ""


def _without_csrf(body: str) -> str:
    token = _csrf_in(body)
    return body.replace(token, "") if token else body


def test_sixteen_parallel_wrong_passwords_count_sixteen(database_url: str, app: Flask) -> None:
    own = _own_app(database_url, login_max_failures=16, login_account_max_failures=16)
    try:
        _truncate(own)
        practitioner_user(own)
        browsers = [_browser(own) for _ in range(16)]
        barrier = threading.Barrier(16)

        def attempt(pair: tuple[FlaskClient, str]) -> int:
            barrier.wait()
            return int(_post_login(pair[0], pair[1], "dr", WRONG).status_code)

        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(attempt, browsers))
        assert statuses == [401] * 16
        assert _failures(own, "dr") == {"127.0.0.1": 16, "*": 16}
        # The 16th failure reached the threshold: even the right password now waits.
        browser, csrf = _browser(own)
        locked = _post_login(browser, csrf, "dr", PASSWORD)
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    finally:
        close_app(own)


def test_parallel_wrong_passwords_get_no_more_checks_than_the_lockout_allows(
    anonymous_client: FlaskClient, app: Flask
) -> None:
    practitioner_user(app)
    browsers = [_browser(app, "10.4.0.1") for _ in range(16)]
    barrier = threading.Barrier(16)

    def attempt(pair: tuple[FlaskClient, str]) -> int:
        barrier.wait()
        return int(_post_login(pair[0], pair[1], "dr", WRONG).status_code)

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(attempt, browsers))
    # Counted before the check: exactly the 5 the lockout allows reach the password check.
    assert sorted(statuses) == [401] * 5 + [429] * 11
    assert _failures(app, "dr") == {"10.4.0.1": 5, "*": 5}


def test_address_throttle_counts_before_the_password_check(database_url: str, app: Flask) -> None:
    own = _own_app(database_url, login_failures_per_address=4)
    try:
        _truncate(own)
        browsers = [_browser(own, "10.2.0.1") for _ in range(12)]
        barrier = threading.Barrier(12)

        def attempt(pair: tuple[FlaskClient, str]) -> int:
            barrier.wait()
            return int(_post_login(pair[0], pair[1], f"user-{uuid.uuid4().hex[:8]}", WRONG).status_code)

        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(attempt, browsers))
        # Each attempt is recorded before it is judged: at most 4 ever reach the password check (none,
        # when all 12 are recorded before any is judged: the race is the attacker's loss either way).
        assert statuses.count(401) <= 4 and statuses.count(401) + statuses.count(429) == 12
    finally:
        close_app(own)


def test_lockout_backs_off_per_address_and_does_not_lock_the_victim_out_elsewhere(
    anonymous_client: FlaskClient, app: Flask
) -> None:
    practitioner_user(app)
    attacker, csrf = _browser(app, "10.3.0.66")
    statuses = [_post_login(attacker, csrf, "dr", WRONG).status_code for _ in range(5)]
    assert statuses == [401] * 5
    locked = _post_login(attacker, csrf, "dr", PASSWORD)
    assert locked.status_code == 429 and 55 <= int(locked.headers["Retry-After"]) <= 60
    assert _failures(app, "dr")["10.3.0.66"] == 5  # locked attempts are not counted
    # Once the lock has run out, the next failure locks twice as long (exponential backoff).
    with _engine(app).begin() as conn:
        conn.execute(update(login_failure).values(locked_until=0))
    assert _post_login(attacker, csrf, "dr", WRONG).status_code == 401
    again = _post_login(attacker, csrf, "dr", WRONG)
    assert again.status_code == 429 and 115 <= int(again.headers["Retry-After"]) <= 120
    # The professional, from their own address, is not locked out by the attacker.
    victim, victim_csrf = _browser(app, "10.3.0.7")
    assert _post_login(victim, victim_csrf, "dr", PASSWORD).status_code == 200


# -- 3. private_key_jwt: JWKS refetch -----------------------------------------------------------------


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, list[float], RSAKey]]:
    key = RSAKey.generate_key(2048, private=True, auto_kid=True)
    hits: list[float] = []
    body = json.dumps(KeySet([key]).as_dict(private=False)).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(time.time())
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            """Quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/jwks.json", hits, key
    finally:
        server.shutdown()
        server.server_close()


def test_unknown_kid_does_not_refetch_the_clients_jwks_each_time(
    anonymous_client: FlaskClient, app: Flask, jwks_server: tuple[str, list[float], RSAKey]
) -> None:
    url, hits, key = jwks_server
    client_id, _ = app.extensions["auth"].store.create_client(
        "jwks-url", "system/*.rs", "private_key_jwt", [], None, url
    )
    forger = RSAKey.generate_key(2048, private=True, parameters={"kid": "forged"})

    def token(signer: RSAKey) -> int:  # 200, or 400 invalid_client (RFC 6749 5.2, no Authorization)
        assertion = sign_assertion(assertion_claims(client_id), signer)
        response = anonymous_client.post(
            "/auth/token",
            data={
                "grant_type": "client_credentials",
                "scope": "system/Patient.rs",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion,
            },
        )
        return int(response.status_code)

    assert token(key) == 200
    assert len(hits) == 1
    refused = [token(forger) for _ in range(10)]
    assert refused == [400] * 10, refused
    # Within COORDINATION_JWKS_REFETCH_SECONDS (300 s) the "no such kid" answer is cached.
    assert len(hits) == 1
    assert token(key) == 200 and len(hits) == 1


# -- 4. audiences ---------------------------------------------------------------------------------------


def _assertion(client: FlaskClient, client_id: str, aud: str, base_url: str) -> Any:
    return client.post(
        "/auth/token",
        base_url=base_url,
        data={
            "grant_type": "client_credentials",
            "scope": "system/Patient.rs",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": sign_assertion(assertion_claims(client_id, aud=aud)),
        },
    )


def test_assertion_audience_is_the_configured_base_never_the_host_header(
    database_url: str, app: Flask
) -> None:

    own = _own_app(database_url, public_base_url="https://cpts.example/fhir")
    try:
        _truncate(own)
        client_id = jwks_client(own, RSA_KEY)
        browser = own.test_client()
        by_host = _assertion(browser, client_id, "https://evil.example/auth/token", "https://evil.example")
        assert by_host.status_code == 400, by_host.get_json()
        assert by_host.get_json()["error"] == "invalid_client"
        local = _assertion(browser, client_id, "http://localhost/auth/token", "http://localhost")
        assert local.status_code == 400  # configured: not even the loopback Host
        good = _assertion(browser, client_id, "https://cpts.example/auth/token", "https://evil.example")
        assert good.status_code == 200, good.get_json()
        claims = json.loads(_b64decode(good.get_json()["access_token"].split(".")[1]))
        assert claims["aud"] == "https://cpts.example/fhir"
    finally:
        close_app(own)
    # Unconfigured (the default): the Host counts only when it is a loopback name.
    client_id = jwks_client(app, RSA_KEY)
    remote = _assertion(
        app.test_client(), client_id, "https://evil.example/auth/token", "https://evil.example"
    )
    assert remote.status_code == 400 and remote.get_json()["error"] == "invalid_client"


def _b64decode(part: str) -> bytes:

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_access_token_for_another_base_is_refused(database_url: str, client: FlaskClient, app: Flask) -> None:
    token = system_token(client)  # aud http://localhost/fhir
    assert client.get("/fhir/Patient", headers=bearer(token)).status_code == 200
    other = _own_app(database_url, public_base_url="https://other.example/fhir")
    try:
        response = other.test_client().get("/fhir/Patient", headers=bearer(token))
        assert response.status_code == 401
        assert "aud" in response.headers["WWW-Authenticate"] or "aud" in response.get_data(as_text=True)
    finally:
        close_app(other)


def test_plain_http_with_a_remote_host_at_the_token_endpoint_is_a_400_not_a_500(
    anonymous_client: FlaskClient, app: Flask
) -> None:
    client_id, secret = app.extensions["auth"].store.create_client(
        "t", "system/*.rs", "client_secret_basic", [], None, None
    )
    for path in ("/auth/token", "/auth/introspect", "/auth/revoke"):
        response = anonymous_client.post(
            path,
            base_url="http://evil.example",
            data={"grant_type": "client_credentials", "scope": "system/*.rs", "token": "x"},
            auth=(client_id, secret),
        )
        assert response.status_code == 400, (path, response.get_data(as_text=True))
        assert response.get_json()["error"] == "insecure_transport"


# -- 5. Pro Santé Connect acr -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with running_provider() as running:
        yield running


@pytest.mark.parametrize("acr", [None, "eidas0", "substantial"])
def test_psc_login_below_eidas1_is_refused(
    database_url: str, app: Flask, provider: Provider, acr: str | None
) -> None:
    provider.knobs.clear()
    provider.knobs["acr"] = acr
    own = make_psc_app(database_url, provider, auto_create=True)
    try:
        answer = psc_round_trip(own.test_client())
        assert answer.status_code == 403, answer.get_data(as_text=True)
        assert "acr" in answer.get_data(as_text=True)
        provider.knobs.clear()
        assert psc_round_trip(own.test_client()).status_code == 200
    finally:
        provider.knobs.clear()
        close_app(own)


# -- 6. prompt, max_age, logout -----------------------------------------------------------------------------


def _logged_in(app: Flask) -> FlaskClient:
    browser = app.test_client()
    assert log_in(browser, "dr", PASSWORD).status_code == 200
    return browser


def _age_login(browser: FlaskClient, seconds: int) -> None:
    with browser.session_transaction("/auth/login") as session:
        session["auth_time"] = int(time.time()) - seconds
        session.pop("fresh_login", None)


def test_prompt_login_and_max_age_force_a_fresh_login(anonymous_client: FlaskClient, app: Flask) -> None:
    practitioner_user(app)
    scope = "openid fhirUser user/*.rs"
    client_id = public_client(app, scope)
    verifier, challenge = pkce_pair()
    browser = _logged_in(app)
    _age_login(browser, 30)
    plain = authorize_url(client_id, challenge, scope)
    assert browser.get(plain).status_code == 200  # consent: the session is enough
    for url in (
        authorize_url(client_id, challenge, scope, prompt="login"),
        authorize_url(client_id, challenge, scope, max_age="10"),
    ):
        _age_login(browser, 30)
        forced = browser.get(url)
        assert forced.status_code == 303 and forced.headers["Location"].startswith("/auth/login?"), url
        assert log_in(browser, "dr", PASSWORD, next_url=url).headers["Location"] == url
        assert browser.get(url).status_code == 200  # the fresh login is accepted once
    assert browser.get(authorize_url(client_id, challenge, scope, max_age="3600")).status_code == 200
    for bad in ("-1", "ten", "\u00b2"):  # a malformed max_age is the client's error, never a 500
        answer = browser.get(authorize_url(client_id, challenge, scope, max_age=bad))
        assert answer.status_code == 302 and "error=invalid_request" in answer.headers["Location"]
    # The id_token says when the user logged in (OIDC Core 2: auth_time, required with max_age).
    url = authorize_url(client_id, challenge, scope, max_age="600")
    page = browser.get(url)
    done = browser.post(
        url, data={"csrf_token": csrf_token_of(page.get_data(as_text=True)), "decision": "approve"}
    )
    code = parse_qs(urlsplit(done.headers["Location"]).query)["code"][0]
    tokens = exchange_code(browser, client_id, code, verifier).get_json()
    claims = verified_claims(browser, tokens["id_token"])
    assert abs(claims["auth_time"] - int(time.time())) < 60


def test_prompt_none_without_a_session_answers_login_required(
    anonymous_client: FlaskClient, app: Flask
) -> None:
    practitioner_user(app)
    scope = "openid user/*.rs"
    client_id = public_client(app, scope)
    _verifier, challenge = pkce_pair()
    for browser, expected in ((app.test_client(), "login_required"), (_logged_in(app), "consent_required")):
        answer = browser.get(authorize_url(client_id, challenge, scope, prompt="none"))
        assert answer.status_code == 302
        query = parse_qs(urlsplit(answer.headers["Location"]).query)
        assert query["error"] == [expected] and query["state"] == ["st4te"]


def test_logout_ends_the_session_and_returns_only_to_registered_uris(
    anonymous_client: FlaskClient, app: Flask
) -> None:
    practitioner_user(app)
    scope = "openid user/*.rs"
    client_id = public_client(app, scope)
    _verifier, challenge = pkce_pair()
    url = authorize_url(client_id, challenge, scope)
    for discovery in ("/fhir/.well-known/openid-configuration", "/fhir/.well-known/smart-configuration"):
        assert app.test_client().get(discovery).get_json()["end_session_endpoint"].endswith("/auth/logout")
    browser = _logged_in(app)
    assert browser.get(url).status_code == 200
    # Another site cannot log the user out: the POST needs the page's CSRF token.
    assert browser.post("/auth/logout").status_code == 400
    assert browser.get(url).status_code == 200
    evil = browser.get("/auth/logout", query_string={"post_logout_redirect_uri": "https://evil.example/"})
    assert evil.status_code == 400
    evil = browser.get(
        "/auth/logout",
        query_string={"post_logout_redirect_uri": "https://evil.example/", "client_id": client_id},
    )
    assert evil.status_code == 400
    params = {"post_logout_redirect_uri": REDIRECT, "client_id": client_id, "state": "bye"}
    page = browser.get("/auth/logout", query_string=params)
    assert page.status_code == 200
    done = browser.post(
        "/auth/logout", data={**params, "csrf_token": csrf_token_of(page.get_data(as_text=True))}
    )
    assert done.status_code == 303 and done.headers["Location"] == f"{REDIRECT}?state=bye"
    after = browser.get(url)
    assert after.status_code == 303 and after.headers["Location"].startswith("/auth/login?")


# -- 7. patient scopes need a patient -----------------------------------------------------------------------


def _token_for(app: Flask, scope: str, patient: str | None = None) -> tuple[dict[str, Any], str]:
    client_id, _ = app.extensions["auth"].store.create_client(
        "app", "patient/*.rs user/*.rs launch/patient openid", "none", [REDIRECT], None, None
    )
    verifier, challenge = pkce_pair()
    browser = app.test_client()
    url = authorize_url(client_id, challenge, scope)
    log_in(browser, "dr", PASSWORD, next_url=url)
    page = browser.get(url)
    html = page.get_data(as_text=True)
    form = {"csrf_token": csrf_token_of(html), "decision": "approve"}
    if patient:
        form["patient"] = patient
    done = browser.post(url, data=form)
    code = parse_qs(urlsplit(done.headers["Location"]).query)["code"][0]
    response = exchange_code(browser, client_id, code, verifier)
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body, html


def test_patient_scopes_without_launch_patient_are_not_granted(client: FlaskClient, app: Flask) -> None:
    practitioner = practitioner_user(app)
    mine, other = create_patient(client, "Mine"), create_patient(client, "Other")
    create_care_team(client, mine, f"Practitioner/{practitioner}")
    create_care_team(client, other, f"Practitioner/{practitioner}")
    observation = create_observation(client, other)
    reader = app.test_client()

    tokens, consent = _token_for(app, "openid patient/*.rs")
    assert "patient/*.rs" in consent.split('id="not-granted"')[1]  # said on the consent page
    assert "patient/" not in tokens["scope"] and "patient" not in tokens
    answer = reader.get(f"/fhir/Observation/{observation}", headers=bearer(tokens["access_token"]))
    assert answer.status_code == 403

    # With launch/patient the scope is kept and tied to the chosen patient only.
    tokens, _ = _token_for(app, "launch/patient patient/*.rs", patient=mine)
    assert "patient/*.rs" in tokens["scope"] and tokens["patient"] == mine
    answer = reader.get(f"/fhir/Observation/{observation}", headers=bearer(tokens["access_token"]))
    assert answer.status_code in (403, 404)
