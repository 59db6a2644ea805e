"""``coordination demo``: a small fictional CPTS to try the API with."""

from __future__ import annotations

from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from coordination_api.accounts import AccountError
from coordination_api.cli.common import settings
from coordination_api.demo import DemoRefusedError, coordinator_warnings, load, next_steps, summary
from coordination_api.errors import FhirError


@click.command("demo")
@click.option("--force", is_flag=True, help="load the demo even if the database holds other data")
@click.option(
    "--out",
    "out_dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False, writable=True, path_type=Path),
    help="where to write demo-discharge.json (and the hospital client's credentials)",
)
@click.option(
    "--base-url",
    help="the server the printed commands talk to (default: COORDINATION_PUBLIC_BASE_URL without /fhir, "
    "else http://127.0.0.1:8080)",
)
@with_appcontext
def demo_command(force: bool, out_dir: Path, base_url: str | None) -> None:
    """Load a small fictional CPTS (professionals, a hospital client, three patients with their
    cercles de soins, the protocol library) and print what to try next. Idempotent."""
    out_dir.mkdir(parents=True, exist_ok=True)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        result = load(app, out_dir, force=force)
    except DemoRefusedError as exc:
        raise click.ClickException(str(exc)) from None
    except (AccountError, FhirError) as exc:
        message = exc.diagnostics if isinstance(exc, FhirError) else str(exc)
        raise click.ClickException(f"the demo CPTS could not be loaded: {message}") from None
    click.echo(summary(result))
    for warning in coordinator_warnings(settings().dispatch):
        click.echo(f"warning: {warning}", err=True)
    if base_url is None:
        public = settings().public_base_url
        base_url = public.removesuffix("/").removesuffix("/fhir") if public else "http://127.0.0.1:8080"
    click.echo(next_steps(result, base_url.rstrip("/"), out_dir))
