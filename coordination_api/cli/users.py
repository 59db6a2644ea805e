"""``coordination users``: practitioners' local logins."""

from __future__ import annotations

import getpass
import json
import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from coordination_api.accounts import (
    AccountError,
    create_practitioner_user,
    list_users,
    set_disabled,
    set_password,
)


@click.group("users")
def users() -> None:
    """Practitioners' local logins."""


@users.command("create")
@click.option("--username", required=True)
@click.option("--rpps", required=True, help="the 11-digit RPPS number")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@click.option("--family")
@click.option("--given")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def users_create(
    username: str, rpps: str, password_stdin: bool, family: str | None, given: str | None, as_json: bool
) -> None:
    """Create a login and its Practitioner (identified by RPPS)."""
    password = _read_password() if password_stdin else None
    try:
        practitioner_id = create_practitioner_user(
            current_app,
            username,
            rpps,
            password,
            family,
            given,
            notify=lambda message: click.echo(f"warning: {message}", err=True),
        )
    except AccountError as exc:
        raise click.ClickException(str(exc)) from exc
    out = {"username": username, "fhirUser": f"Practitioner/{practitioner_id}"}
    click.echo(json.dumps(out) if as_json else f"user {username} -> Practitioner/{practitioner_id}")


def _read_password(prompt: str = "password (one line): ") -> str:
    """One line of standard input (never an argument: it would show in ps and shell history); on a
    terminal it is typed with the echo off (review 20: it landed on screen and in scroll-back)."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt, stream=sys.stderr)
    return sys.stdin.readline().rstrip("\r\n")


@users.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def users_list(as_json: bool) -> None:
    """Local logins (never their password hashes)."""
    rows = list_users(current_app)
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("no users")
    for r in rows:
        state = "disabled" if r["disabled"] else "active"
        login = "password" if r["password"] else "federated"
        click.echo(
            f"{r['username']}\t{state}\t{login}\tRPPS {r['rpps']}\tPractitioner/{r['practitioner_id']}"
        )


@users.command("disable")
@click.argument("username")
@with_appcontext
def users_disable(username: str) -> None:
    """Refuse this login from now on, and revoke every token issued to it (refresh tokens included)."""
    try:
        revoked = set_disabled(current_app, username, True)
    except AccountError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"user {username} disabled; {revoked} token(s) revoked")


@users.command("enable")
@click.argument("username")
@with_appcontext
def users_enable(username: str) -> None:
    """Allow this login again (tokens revoked when it was disabled stay revoked)."""
    try:
        set_disabled(current_app, username, False)
    except AccountError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"user {username} enabled")


@users.command("passwd")
@click.argument("username")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="read the password from standard input (the only way: never as an argument; CONTRACT.md)",
)
@with_appcontext
def users_passwd(username: str, password_stdin: bool) -> None:
    """Set the password from one line of standard input (``coordination users passwd dr.x
    --password-stdin < file``); the account's failed-login lock is cleared."""
    try:
        set_password(current_app, username, _read_password("new password (one line): "))
    except AccountError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"password of {username} changed")
