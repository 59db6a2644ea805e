"""Review 24 of the coordinators' pages: the session cookie's rules hold with a configured secret key
(the production setting), and signing out ends the session for every copy of its cookie."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from coordination_api.app import create_app
from coordination_api.config import Settings
from tests.conftest import Fhir, close_app
from tests.support.pages import build_cpts, session_csrf, sign_in


@pytest.fixture
def keyed_app(app: Flask, database_url: str) -> Iterator[Flask]:
    """The same database, served by an app whose session key is configured (COORDINATION_SECRET_KEY)."""
    keyed = create_app(Settings(database_url=database_url, audit_reads="sync", secret_key="k" * 48))
    keyed.config["TESTING"] = True
    yield keyed
    close_app(keyed)


@pytest.mark.parametrize(("host", "secure"), [("cpts.example", True), ("127.0.0.1:8080", False)])
def test_a_configured_secret_key_keeps_the_cookie_secure_outside_loopback(
    keyed_app: Flask, host: str, secure: bool
) -> None:
    page = keyed_app.test_client().get("/app/", headers={"Host": host}, follow_redirects=True)
    cookie = page.headers.get("Set-Cookie", "")
    assert cookie.startswith("coordination_session="), page.headers
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert ("Secure" in cookie) is secure, cookie


def test_a_configured_secret_key_gives_the_api_no_session(keyed_app: Flask) -> None:
    response = keyed_app.test_client().get("/fhir/metadata")
    assert "Set-Cookie" not in response.headers


def test_signing_out_ends_the_session_for_a_copy_of_its_cookie(app: Flask, fhir: Fhir) -> None:
    build_cpts(app, fhir)
    browser = sign_in(app, "coord")
    assert browser.get("/app/").status_code == 200
    copy = app.test_client()  # what a thief (or a shared computer's cache) kept of the cookie
    cookie = browser.get_cookie("coordination_session")
    assert cookie is not None
    copy.set_cookie("coordination_session", cookie.value)
    assert copy.get("/app/").status_code == 200
    out = browser.post("/auth/logout", data={"csrf_token": session_csrf(browser)})
    assert out.status_code == 200
    assert browser.get("/app/").status_code == 303
    replayed = copy.get("/app/")
    assert replayed.status_code == 303 and replayed.headers["Location"].startswith("/auth/login")
    # A new sign-in works again.
    assert sign_in(app, "coord").get("/app/").status_code == 200
