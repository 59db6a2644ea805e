"""``coordination clients``: OAuth2 / SMART client registrations."""

from __future__ import annotations

import json
from typing import Any

import click
from flask.cli import with_appcontext

from auth.registration import RegistrationError, check_registration
from coordination_api.cli.common import auth


@click.group("clients")
def clients() -> None:
    """OAuth2 / SMART client registrations."""


@clients.command("create")
@click.option("--name", required=True)
@click.option("--scope", "scope", required=True, help='space-separated SMART scopes, e.g. "system/*.rs"')
@click.option(
    "--auth",
    "auth_method",
    type=click.Choice(["client_secret_basic", "private_key_jwt", "none"]),
    default="client_secret_basic",
    show_default=True,
)
@click.option("--jwks-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--jwks-url")
@click.option("--redirect-uri", "redirect_uris", multiple=True)
@click.option(
    "--sender",
    "senders",
    multiple=True,
    help="a message sender this client may send as (repeatable): HL7 v2 'MSH-3^MSH-4' (e.g. "
    "'SIH^CHU'), a $process-message MessageHeader.source.endpoint, an NdE sender FINESS; "
    "without any, the client may send no message",
)
@click.option("--json", "as_json", is_flag=True, help="print the credentials as JSON")
@with_appcontext
def clients_create(
    name: str,
    scope: str,
    auth_method: str,
    jwks_file: str | None,
    jwks_url: str | None,
    redirect_uris: tuple[str, ...],
    senders: tuple[str, ...],
    as_json: bool,
) -> None:
    """Register a client; its secret (client_secret_basic) is shown once and stored hashed."""
    try:
        jwks = check_registration(scope, auth_method, jwks_file, jwks_url, list(redirect_uris))
    except RegistrationError as exc:
        raise click.BadParameter(str(exc)) from exc
    for sender in senders:
        if not sender.strip() or len(sender) > 255 or not sender.isprintable():
            raise click.BadParameter(f"invalid sender {sender[:80]!r} (1-255 printable characters)")
    client_id, secret = auth().store.create_client(
        name, " ".join(scope.split()), auth_method, list(redirect_uris), jwks, jwks_url
    )
    auth().store.add_senders(client_id, list(senders))
    if not senders and any(p.startswith("system/") for p in scope.split()):
        # stderr: the --json output on stdout stays one JSON object.
        click.echo(
            "note: registered with no --sender, this client may send messages as any sender "
            "(CONTRACT.md); add --sender for each sender a hospital client may use",
            err=True,
        )
    out: dict[str, Any] = {"client_id": client_id, "client_secret": secret}
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(f"client_id: {client_id}")
        if secret:
            click.echo(f"client_secret: {secret}  (shown once)")


@clients.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def clients_list(as_json: bool) -> None:
    """Registered clients (never their secrets)."""
    rows = auth().store.list_clients()
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        state = "revoked" if row["revoked"] else "active"
        click.echo(f"{row['client_id']}  {row['auth']:<20} {state:<8} {row['name']}  [{row['scope']}]")


@clients.command("revoke")
@click.argument("client_id")
@with_appcontext
def clients_revoke(client_id: str) -> None:
    """Revoke a client and every token it holds."""
    if not auth().store.revoke_client(client_id):
        raise click.ClickException(f"no client {client_id}")
    click.echo(f"client {client_id} revoked")
