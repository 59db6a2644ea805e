"""``coordination users list|disable|enable|passwd`` and ``jobs list`` when empty (issue 19): a
disabled login cannot sign in, its tokens (refresh tokens too) stop working at once."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from auth.schema import oauth_user
from coordination_api.accounts import create_practitioner_user
from coordination_api.cli import main
from tests.conftest import _truncate
from tests.support.auth import PASSWORD, REDIRECT, approve, authorize_url, log_in, pkce_pair

NEW_PASSWORD = "another-long-password-456"


def _user(app: Flask, username: str = "dr.house", rpps: str = "10101010101") -> str:
    return create_practitioner_user(app, username, rpps, PASSWORD, "House", "Greg")


def _tokens(app: Flask, username: str, password: str = PASSWORD) -> dict[str, Any]:
    """A confidential client's authorization code flow with offline_access: access and refresh tokens."""
    scope = "user/*.rs offline_access"
    client_id, secret = app.extensions["auth"].store.create_client(
        "practice", scope, "client_secret_basic", [REDIRECT], None, None
    )
    verifier, challenge = pkce_pair()
    browser = app.test_client()
    url = authorize_url(client_id, challenge, scope)
    assert log_in(browser, username, password, next_url=url).status_code == 303
    done = approve(browser, url)
    assert done.status_code == 302, done.get_data(as_text=True)
    code = parse_qs(urlsplit(done.headers["Location"]).query)["code"][0]
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    answer = browser.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
        headers={"Authorization": f"Basic {basic}"},
    )
    assert answer.status_code == 200, answer.get_json()
    return {**answer.get_json(), "basic": basic}


def _refresh(client: FlaskClient, tokens: dict[str, Any]) -> Any:
    return client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers={"Authorization": f"Basic {tokens['basic']}"},
    )


def _read(client: FlaskClient, token: str) -> int:
    return client.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}).status_code


def _logs_in(app: Flask, username: str, password: str) -> bool:
    url = authorize_url("x", None, "user/*.rs")
    answer = log_in(app.test_client(), username, password, next_url=url)
    return answer.status_code == 303 and answer.headers["Location"] == url


def test_disable_refuses_login_and_stops_every_token_enable_allows_login_again(
    app: Flask, anonymous_client: FlaskClient
) -> None:
    _truncate(app)
    _user(app)
    tokens = _tokens(app, "dr.house")
    assert tokens.get("refresh_token") and _read(anonymous_client, tokens["access_token"]) == 200
    runner = app.test_cli_runner()

    disabled = runner.invoke(main, args=["users", "disable", "dr.house"])
    assert disabled.exit_code == 0, disabled.output
    assert "disabled" in disabled.output and "1 token(s) revoked" in disabled.output
    assert not _logs_in(app, "dr.house", PASSWORD)
    assert _read(anonymous_client, tokens["access_token"]) == 401
    refreshed = _refresh(anonymous_client, tokens)
    assert refreshed.status_code == 400 and refreshed.get_json()["error"] == "invalid_grant"
    listed = runner.invoke(main, args=["users", "list", "--json"])
    (row,) = orjson.loads(listed.stdout)
    assert row == {
        "username": "dr.house",
        "rpps": "10101010101",
        "practitioner_id": row["practitioner_id"],
        "disabled": True,
        "password": True,
    }
    listed_text = runner.invoke(main, args=["users", "list"]).output
    assert "dr.house\tdisabled\tpassword\tRPPS 10101010101" in listed_text

    enabled = runner.invoke(main, args=["users", "enable", "dr.house"])
    assert enabled.exit_code == 0, enabled.output
    assert _logs_in(app, "dr.house", PASSWORD)
    assert _refresh(anonymous_client, tokens).status_code == 400  # what was revoked stays revoked
    assert runner.invoke(main, args=["users", "disable", "nobody"]).exit_code == 1


def test_a_refresh_token_of_a_disabled_user_fails_even_if_not_revoked(
    app: Flask, anonymous_client: FlaskClient
) -> None:
    """The refresh grant looks the user up (auth/server.py authenticate_user): disabled is refused
    even for a token the revocation missed (e.g. disabled directly in the database)."""
    _truncate(app)
    _user(app)
    tokens = _tokens(app, "dr.house")

    with app.extensions["auth"].store.engine.begin() as conn:
        conn.execute(update(oauth_user).where(oauth_user.c.username == "dr.house").values(disabled=True))
    assert _refresh(anonymous_client, tokens).status_code == 400


def test_passwd_reads_stdin_and_revokes_the_old_tokens(app: Flask, anonymous_client: FlaskClient) -> None:
    _truncate(app)
    _user(app)
    tokens = _tokens(app, "dr.house")
    runner = app.test_cli_runner()
    short = runner.invoke(main, args=["users", "passwd", "dr.house"], input="short\n")
    assert short.exit_code == 1 and "12 characters" in short.output
    changed = runner.invoke(
        main, args=["users", "passwd", "dr.house", "--password-stdin"], input=f"{NEW_PASSWORD}\n"
    )
    assert changed.exit_code == 0, changed.output
    assert NEW_PASSWORD not in changed.output
    assert not _logs_in(app, "dr.house", PASSWORD)
    assert _logs_in(app, "dr.house", NEW_PASSWORD)
    assert _read(anonymous_client, tokens["access_token"]) == 401
    assert runner.invoke(main, args=["users", "passwd", "nobody"], input=f"{NEW_PASSWORD}\n").exit_code == 1


def test_users_list_and_jobs_list_say_when_there_is_nothing(app: Flask) -> None:
    _truncate(app)
    runner = app.test_cli_runner()
    assert runner.invoke(main, args=["users", "list"]).output.strip() == "no users"
    assert runner.invoke(main, args=["users", "list", "--json"]).output.strip() == "[]"
    assert runner.invoke(main, args=["jobs", "list"]).output.strip() == "no jobs"
    dead = runner.invoke(main, args=["jobs", "list", "--status", "dead"])
    assert dead.output.strip() == "no jobs with status dead"
    assert runner.invoke(main, args=["jobs", "list", "--json"]).output.strip() == "[]"


def test_creating_a_practitioner_without_a_name_warns(app: Flask) -> None:
    _truncate(app)
    runner = app.test_cli_runner()
    nameless = runner.invoke(
        main,
        args=["users", "create", "--username", "dr.x", "--rpps", "10101010101", "--password-stdin"],
        input=f"{PASSWORD}\n",
    )
    assert nameless.exit_code == 0, nameless.output
    assert "without a name" in nameless.stderr and "COORDINATION_ANNUAIRE_BASE_URL" in nameless.stderr
    named = runner.invoke(
        main,
        args=[
            "users",
            "create",
            "--username",
            "dr.y",
            "--rpps",
            "10000000001",
            "--family",
            "Y",
            "--password-stdin",
        ],
        input=f"{PASSWORD}\n",
    )
    assert named.exit_code == 0, named.output
    assert "without a name" not in named.stderr
