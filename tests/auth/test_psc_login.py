"""Pro Santé Connect login, end to end against a real local OIDC provider (tests/support/oidc_provider.py):
the professional logs in with PSC and the practice software gets a SMART token for their Practitioner;
every bad answer of the provider is refused with a clear page, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask

from coordination_api.app import create_app
from coordination_api.config import PscSettings, Settings
from tests.conftest import close_app
from tests.support.auth import (
    approve,
    authorize_url,
    exchange_code,
    pkce_pair,
    public_client,
    verified_claims,
)
from tests.support.oidc_provider import Provider, running_provider
from tests.support.psc import make_psc_app, psc_round_trip


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with running_provider() as running:
        yield running


@pytest.fixture
def psc_app(database_url: str, app: Flask, provider: Provider) -> Iterator[Flask]:
    provider.knobs.clear()
    made = make_psc_app(database_url, provider, auto_create=True)
    yield made
    close_app(made)


def test_a_professional_logs_in_with_psc_and_the_app_gets_a_token_for_them(
    psc_app: Flask, provider: Provider
) -> None:
    scope = "openid fhirUser user/*.rs"
    client_id = public_client(psc_app, scope)
    verifier, challenge = pkce_pair()
    url = authorize_url(client_id, challenge, scope)
    browser = psc_app.test_client()
    assert browser.get(url).status_code in (302, 303)  # to the login page
    answer = psc_round_trip(browser, url)
    asked = provider.authorize_requests[-1]
    assert asked["acr_values"] == "eidas1" and asked["scope"] == "openid scope_all"
    assert answer.status_code == 303 and answer.headers["Location"] == url
    done = approve(browser, url)
    code = parse_qs(urlsplit(done.headers["Location"]).query)["code"][0]
    token = exchange_code(browser, client_id, code, verifier).get_json()
    claims = verified_claims(browser, token["id_token"])
    practitioner = browser.get(
        f"/fhir/{claims['fhirUser'].split('/fhir/')[-1]}",
        headers={"Authorization": f"Bearer {token['access_token']}"},
    ).get_json()
    assert practitioner["name"][0]["family"] == "Durand"  # created at first login from PSC's UserInfo
    assert {"system": "https://rpps.esante.gouv.fr", "value": "10101010101"} in [
        {k: i[k] for k in ("system", "value")} for i in practitioner["identifier"]
    ]
    # Logging in again finds the same professional: no second Practitioner.
    again = psc_round_trip(psc_app.test_client())
    assert again.status_code == 200 and "psc-10101010101" in again.get_data(as_text=True)


@pytest.mark.parametrize(
    ("knob", "value", "expected"),
    [
        ("iss", "https://evil.example/realms/x", "iss"),
        ("aud", "someone-else", "aud"),
        ("expired", True, "expired"),
        ("nonce", "a-replayed-nonce", "nonce"),
        ("bad_signature", True, "does not verify"),
        ("subject_name_id", "0012345", "idNatPs"),
        ("userinfo_jwt", True, None),  # a signed UserInfo answer is fine
    ],
)
def test_what_the_provider_gets_wrong_is_refused(
    psc_app: Flask, provider: Provider, knob: str, value: Any, expected: str | None
) -> None:
    provider.knobs[knob] = value
    answer = psc_round_trip(psc_app.test_client())
    text = answer.get_data(as_text=True)
    if expected is None:
        assert answer.status_code == 200, text
        return
    assert answer.status_code == 403, text
    assert expected in text


def test_a_callback_is_used_once_and_needs_its_state(psc_app: Flask) -> None:
    browser = psc_app.test_client()
    start = browser.get("/auth/psc/login")
    back = requests.get(start.headers["Location"], allow_redirects=False, timeout=5)
    callback = urlsplit(back.headers["Location"])
    forged = browser.get(f"{callback.path}?code=x&state=forged")
    assert forged.status_code == 400  # and the pending login is gone
    replay = browser.get(f"{callback.path}?{callback.query}")
    assert replay.status_code == 400


def test_an_unknown_professional_is_refused_unless_first_logins_are_allowed(
    database_url: str, app: Flask, provider: Provider
) -> None:
    provider.knobs.clear()
    closed = make_psc_app(database_url, provider)
    try:
        answer = psc_round_trip(closed.test_client())
        assert answer.status_code == 403
        assert "pas enregistré" in answer.get_data(as_text=True)
    finally:
        close_app(closed)


def test_provider_down_is_a_502_page_and_no_psc_without_configuration(
    database_url: str, app: Flask, fhir: Any
) -> None:
    down = create_app(
        Settings(
            database_url=database_url,
            psc=PscSettings(discovery_url="http://127.0.0.1:9/none", client_id="x", connect_timeout=0.5),
        )
    )
    try:
        answer = down.test_client().get("/auth/psc/login")
        assert answer.status_code == 502 and "ne répond pas" in answer.get_data(as_text=True)
    finally:
        close_app(down)
    plain = app.test_client()
    assert "Pro Santé Connect" not in plain.get("/auth/login").get_data(as_text=True)
    assert plain.get("/auth/psc/login").status_code == 404
