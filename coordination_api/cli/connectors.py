"""``coordination connectors``: which outside services are active, off or misconfigured, and whether
they answer."""

from __future__ import annotations

import json
import sys

import click
from flask.cli import with_appcontext

from coordination_api.cli.common import settings
from coordination_api.integrations.checks import check


@click.group("connectors")
def connectors_group() -> None:
    """Outside services: which are active, off or misconfigured, and whether they answer."""


@connectors_group.command("check")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def connectors_check(as_json: bool) -> None:
    """Call each configured connector once, cheaply (TLS handshake and HEAD, SMTP EHLO + STARTTLS, one
    directory search, the PSC discovery document): ok or failed with the reason. Exit status 1 when
    one configured connector fails or one is misconfigured."""
    results = check(settings())
    if as_json:
        out = {
            r.state.name: {
                "state": r.state.state,
                "target": r.state.target,
                "ok": r.ok,
                "detail": r.detail,
                "problems": list(r.state.problems),
            }
            for r in results
        }
        click.echo(json.dumps(out))
    else:
        for r in results:
            click.echo(r.line())
    if any(r.failed for r in results):
        sys.exit(1)
