"""End-to-end, in a real headless Chromium: login page, consent page, then the SMART code flow.

The app is served by a real Werkzeug server on a free port; the browser goes through
/auth/authorize -> /auth/login -> consent -> the client's redirect_uri (a 404 page we never serve:
only its query string matters). Skipped when /usr/bin/chromium or /usr/bin/chromedriver is absent
(.ci/run installs both).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from coordination_api.accounts import create_practitioner_user
from tests.support.browser import MISSING, chromium, serving

if MISSING:
    pytest.skip(MISSING, allow_module_level=True)

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

USERNAME = "drhouse"
PASSWORD = "a-long-password-123"
STATE = "xyz123"
SCOPE = "user/*.rs"
WAIT = 15  # seconds


@dataclass
class Live:
    base: str
    client_id: str
    redirect_uri: str


@pytest.fixture
def live(client: FlaskClient, app: Flask) -> Iterator[Live]:
    """The app on a real port (the `client` fixture has emptied the database), a user and a public client."""
    with serving(app) as base:
        create_practitioner_user(app, USERNAME, "10101010101", PASSWORD, "House", "Greg")
        redirect_uri = f"{base}/callback-not-served"
        client_id, _ = app.extensions["auth"].store.create_client(
            "Browser app", "user/*.rs openid fhirUser", "none", [redirect_uri], None, None
        )
        yield Live(base, client_id, redirect_uri)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    driver = chromium(tmp_path / "chromium-profile", wait=WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorize_url(live: Live, challenge: str) -> str:
    query = urlencode(
        {
            "response_type": "code",
            "client_id": live.client_id,
            "redirect_uri": live.redirect_uri,
            "scope": SCOPE,
            "state": STATE,
            "aud": f"{live.base}/fhir",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    return f"{live.base}/auth/authorize?{query}"


def log_in(driver: WebDriver, password: str) -> None:
    WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "login")))
    assert urlsplit(driver.current_url).path == "/auth/login"
    driver.find_element(By.NAME, "username").send_keys(USERNAME)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.ID, "login").click()


def reach_consent(driver: WebDriver, live: Live, challenge: str) -> None:
    driver.get(authorize_url(live, challenge))
    log_in(driver, PASSWORD)
    WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "approve")))
    assert urlsplit(driver.current_url).path == "/auth/authorize"
    assert driver.find_element(By.ID, "client-name").text == "Browser app"
    scopes = [c.text for c in driver.find_element(By.ID, "scopes").find_elements(By.TAG_NAME, "code")]
    assert scopes == [SCOPE]


def landed_query(driver: WebDriver, live: Live) -> dict[str, list[str]]:
    WebDriverWait(driver, WAIT).until(lambda d: d.current_url.startswith(live.redirect_uri))
    parts = urlsplit(driver.current_url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == live.redirect_uri
    return parse_qs(parts.query)


def test_login_consent_then_token_and_fhir_read(live: Live, browser: WebDriver) -> None:
    verifier, challenge = pkce_pair()
    reach_consent(browser, live, challenge)
    browser.find_element(By.ID, "approve").click()
    query = landed_query(browser, live)
    assert query["state"] == [STATE]
    assert "error" not in query
    (code,) = query["code"]

    with requests.Session() as http:
        response = http.post(
            f"{live.base}/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": live.redirect_uri,
                "client_id": live.client_id,
                "code_verifier": verifier,
            },
            timeout=WAIT,
        )
        assert response.status_code == 200, response.text
        grant = response.json()
        assert grant["token_type"].lower() == "bearer"
        assert set(grant["scope"].split()) == {SCOPE}
        token = grant["access_token"]

        metadata = http.get(f"{live.base}/fhir/metadata", timeout=WAIT)
        assert metadata.status_code == 200, metadata.text
        assert metadata.json()["resourceType"] == "CapabilityStatement"

        anonymous = http.get(f"{live.base}/fhir/Patient", timeout=WAIT)
        assert anonymous.status_code == 401, anonymous.text

        patients = http.get(
            f"{live.base}/fhir/Patient", headers={"Authorization": f"Bearer {token}"}, timeout=WAIT
        )
        assert patients.status_code == 200, patients.text
        bundle = patients.json()
        assert bundle["resourceType"] == "Bundle"
        assert bundle["type"] == "searchset"

        # The code is single-use.
        replay = http.post(
            f"{live.base}/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": live.redirect_uri,
                "client_id": live.client_id,
                "code_verifier": verifier,
            },
            timeout=WAIT,
        )
        assert replay.status_code == 400, replay.text
        assert replay.json()["error"] == "invalid_grant"


def test_wrong_password_stays_on_login_page(live: Live, browser: WebDriver) -> None:
    _verifier, challenge = pkce_pair()
    browser.get(authorize_url(live, challenge))
    log_in(browser, "not-the-right-password")
    error = WebDriverWait(browser, WAIT).until(ec.visibility_of_element_located((By.ID, "error")))
    assert "incorrect" in error.text
    assert urlsplit(browser.current_url).path == "/auth/login"
    # Still the login form, the username kept, the password not.
    assert browser.find_element(By.NAME, "username").get_attribute("value") == USERNAME
    assert browser.find_element(By.NAME, "password").get_attribute("value") == ""
    assert browser.find_elements(By.ID, "approve") == []
    # The page the browser shows is the 401 answer (the form POST is not redirected).
    status = browser.execute_script(
        "const e = performance.getEntriesByType('navigation')[0]; return e ? e.responseStatus : null;"
    )
    assert status == 401


def test_deny_on_consent_returns_access_denied(live: Live, browser: WebDriver) -> None:
    _verifier, challenge = pkce_pair()
    reach_consent(browser, live, challenge)
    browser.find_element(By.ID, "deny").click()
    query = landed_query(browser, live)
    assert query["error"] == ["access_denied"]
    assert query["state"] == [STATE]
    assert "code" not in query
