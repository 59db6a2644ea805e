"""The sign-in's session cookie (issue 22): HttpOnly, SameSite=Lax, and Secure outside loopback."""

from __future__ import annotations

import pytest
from flask import Flask


@pytest.mark.parametrize(
    ("host", "secure"),
    [
        ("localhost", False),
        ("127.0.0.1:8080", False),
        ("[::1]", False),
        ("cpts.example", True),
        ("10.0.0.5", True),
    ],
)
def test_the_session_cookie_is_secure_unless_reached_on_loopback(app: Flask, host: str, secure: bool) -> None:
    page = app.test_client().get("/app/", headers={"Host": host}, follow_redirects=True)
    cookie = page.headers.get("Set-Cookie", "")
    assert cookie.startswith("coordination_session="), page.headers
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert ("Secure" in cookie) is secure, cookie


def test_the_setting_makes_it_secure_on_loopback_too(app: Flask) -> None:
    app.config["SESSION_COOKIE_SECURE"] = True
    page = app.test_client().get("/app/", headers={"Host": "127.0.0.1"}, follow_redirects=True)
    assert "Secure" in page.headers.get("Set-Cookie", "")
