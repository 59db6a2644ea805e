"""An app wired to the local OpenID provider (tests/support/oidc_provider.py) standing in for Pro Santé
Connect, and the browser's round trip through it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Flask
from flask.testing import FlaskClient

from coordination_api.app import create_app
from coordination_api.config import PscSettings, Settings
from tests.conftest import _truncate
from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider


def make_psc_app(database_url: str, provider: Provider, **settings: Any) -> Flask:
    psc = PscSettings(
        discovery_url=provider.discovery_url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        connect_timeout=1.0,
        read_timeout=2.0,
        **settings,
    )
    app = create_app(Settings(database_url=database_url, audit_reads="sync", psc=psc))
    app.config["TESTING"] = True
    _truncate(app)
    return app


def psc_round_trip(browser: FlaskClient, next_url: str = "") -> Any:
    """Our login page → /auth/psc/login → the provider → /auth/psc/callback; the callback's answer."""
    page = browser.get("/auth/login", query_string={"next": next_url} if next_url else None)
    assert "Pro Santé Connect" in page.get_data(as_text=True)
    start = browser.get("/auth/psc/login", query_string={"next": next_url} if next_url else None)
    assert start.status_code == 302, start.get_data(as_text=True)
    to_provider = start.headers["Location"]
    back = requests.get(to_provider, allow_redirects=False, timeout=5)
    assert back.status_code == 302
    callback = urlsplit(back.headers["Location"])
    return browser.get(f"{callback.path}?{callback.query}")
