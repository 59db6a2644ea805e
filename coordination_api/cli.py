"""The ``coordination`` console script (click, through Flask's CLI)."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext

from coordination_api.config import Settings


def _create_app() -> Flask:
    from coordination_api.app import create_app

    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False, add_version_option=False)
def main() -> None:
    """CPTS care-coordination FHIR backend."""


def _settings() -> Settings:
    settings: Settings = current_app.config["SETTINGS"]
    return settings


def is_loopback(host: str) -> bool:
    if host in {"localhost", ""}:
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, type=int, show_default=True, envvar="PORT")
@click.option("--workers", default=1, type=click.IntRange(1, 64), show_default=True)
@click.option("--threads", default=8, type=click.IntRange(1, 256), show_default=True)
@click.option("--mllp-port", default=2575, type=int, show_default=True, envvar="MLLP_PORT")
@click.option("--no-mllp", is_flag=True, help="Do not start the HL7 v2 MLLP listener.")
@click.option("--no-worker", is_flag=True, help="Do not start the subscription delivery worker.")
@with_appcontext
def serve(
    host: str, port: int, workers: int, threads: int, mllp_port: int, no_mllp: bool, no_worker: bool
) -> None:
    """Serve the API with gunicorn, with the MLLP listener (on the same host) and the delivery
    worker as child processes (migrations must be applied: ``coordination db upgrade``)."""
    settings = _settings()
    if not is_loopback(host) and settings.security_disabled:
        raise click.ClickException(
            f"Refusing to bind {host}: security is disabled (COORDINATION_SECURITY_DISABLED), "
            "so the API only listens on loopback."
        )
    if not no_mllp:
        from coordination_api.integrations.hl7v2 import plain_host_allowed

        if not plain_host_allowed(host, settings.hl7v2):
            raise click.ClickException(
                f"Refusing to start plain MLLP on {host}: use --no-mllp, MLLP over TLS "
                "(COORDINATION_MLLP_TLS_*) or COORDINATION_MLLP_ALLOW_REMOTE_PLAIN."
            )
    from coordination_api.integrations.status import log_states
    from coordination_api.server import Child, supervise

    log_states(settings)  # one line per connector: active, off or misconfigured (issue 19)
    # Child processes, not threads: gunicorn forks its workers, and a forked copy of open database
    # connections must never be shared. gunicorn runs in a child of its own too, so that every child
    # starts with the metrics directory in its environment (metrics.py).
    metrics_dir = settings.metrics_multiproc_dir or tempfile.mkdtemp(prefix="coordination-metrics-")
    for stale in Path(metrics_dir).glob("*.db"):  # counters of an earlier run are not ours
        stale.unlink()
    # /readyz waits for a delivery worker's heartbeat when serve starts one (unless configured).
    requires_worker = settings.ready_requires_worker
    if requires_worker is None:
        requires_worker = not no_worker
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
        "COORDINATION_READY_REQUIRES_WORKER": "1" if requires_worker else "0",
    }
    http = [sys.executable, "-m", "coordination_api.server", "--host", host, "--port", str(port)]
    children = {"http": Child("http", [*http, "--workers", str(workers), "--threads", str(threads)], env)}
    if not no_mllp:
        children["mllp"] = Child("mllp", _script("mllp", "--host", host, "--port", str(mllp_port)), env)
    if not no_worker:
        children["worker"] = Child("worker", _script("worker", "--no-connector-lines"), env)
    try:
        code = supervise(children, metrics_dir, settings.supervision)
    finally:
        if not settings.metrics_multiproc_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    if code:
        sys.exit(code)


def _script(*args: str) -> list[str]:
    """The argv of ``coordination <args>``."""
    script = Path(sys.executable).parent / "coordination"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "coordination_api.cli"]
    return [*argv, *args]


_METRICS_PORT = click.option(
    "--metrics-port", type=click.IntRange(1, 65535), help="serve this process's /metrics on this port"
)
_METRICS_HOST = click.option("--metrics-host", default="127.0.0.1", show_default=True)


@click.command("worker")
@_METRICS_PORT
@_METRICS_HOST
@click.option("--no-connector-lines", is_flag=True, hidden=True, help="serve has logged them already")
@with_appcontext
def worker(metrics_port: int | None, metrics_host: str, no_connector_lines: bool) -> None:
    """Subscription delivery worker: handshakes, notifications in event order, heartbeats, retries
    (any number of processes; stops on SIGTERM)."""
    from coordination_api.subscriptions import run_worker

    if not no_connector_lines:
        from coordination_api.integrations.status import log_states

        log_states(_settings())
    _serve_metrics(metrics_port, metrics_host)
    run_worker(current_app._get_current_object())  # type: ignore[attr-defined]


def _serve_metrics(port: int | None, host: str) -> None:
    """A process of its own (a container without ``serve``) can expose its counters itself."""
    if port is not None:
        from coordination_api.metrics import serve_metrics

        serve_metrics(host, port)


@click.command("mllp")
@click.option("--host", default=None, help="default COORDINATION_MLLP_HOST (127.0.0.1)")
@click.option("--port", default=2575, type=int, show_default=True, envvar="MLLP_PORT")
@click.option("--max-message-bytes", default=1_048_576, type=click.IntRange(1024), show_default=True)
@click.option("--idle-timeout", default=None, type=click.FloatRange(1), help="default 60 s (settings)")
@_METRICS_PORT
@_METRICS_HOST
@with_appcontext
def mllp(
    host: str | None,
    port: int,
    max_message_bytes: int,
    idle_timeout: float | None,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """HL7 v2 MLLP listener: ADT messages stored as encounter events, ACKs with MSA AA/AE/AR.
    Plain MLLP binds loopback only unless COORDINATION_MLLP_ALLOW_REMOTE_PLAIN; it accepts the senders
    of COORDINATION_MLLP_SENDERS; with COORDINATION_MLLP_TLS_* it requires client certificates."""
    from coordination_api.integrations.hl7v2 import mllp_server

    _serve_metrics(metrics_port, metrics_host)
    host = host or _settings().hl7v2.host
    try:
        server = mllp_server(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            host,
            port,
            max_message_bytes=max_message_bytes,
            idle_timeout=idle_timeout,
        )
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        server.start()
    except OSError as exc:
        raise click.ClickException(f"MLLP listener cannot bind {host}:{port}: {exc.strerror}") from None
    from coordination_api.server import SignalWaiter

    waiter = SignalWaiter()  # before saying we listen: a SIGTERM may follow at once
    click.echo(f"MLLP listening on {host}:{server.port}")
    while not waiter.stop_requested:
        waiter.wait(60.0)
    server.stop()  # no new connection or message; those being handled are answered
    click.echo("MLLP listener stopped")


@click.group("db")
def db() -> None:
    """Database management."""


@db.command("upgrade")
@with_appcontext
def db_upgrade() -> None:
    """Apply all migrations."""
    from coordination_api.conformance_load import load_conformance
    from coordination_api.storage.migrate import upgrade

    repo = current_app.extensions["coordination"].repo
    upgrade(repo.engine)
    loaded = load_conformance(repo)
    click.echo(
        f"database is up to date; conformance artefacts: {loaded.created} created, "
        f"{loaded.updated} updated, {loaded.unchanged} unchanged"
    )
    from coordination_api.coordination.protocol_library import load_definitions

    protocols = load_definitions(current_app.extensions["coordination"], mode="missing")
    click.echo(f"protocol library (created only when missing): {protocols.summary()}")


@click.group("protocols")
def protocols_group() -> None:
    """Protocol library (PlanDefinition / ActivityDefinition)."""


@protocols_group.command("load")
@click.option("--dir", "directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@with_appcontext
def protocols_load(directory: Path | None) -> None:
    """Create or update definitions by url and version (default: the shipped French library)."""
    from coordination_api.coordination.protocol_library import load_definitions
    from coordination_api.errors import FhirError

    try:
        loaded = load_definitions(current_app.extensions["coordination"], directory)
    except FhirError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    click.echo(f"protocols: {loaded.summary()}")


@click.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--chunk-size", default=500, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 64), help="worker processes")
@with_appcontext
def import_command(files: tuple[str, ...], chunk_size: int, jobs: int) -> None:
    """Import Bundles (transaction, batch, collection) and NDJSON files."""
    from coordination_api.importer import import_files

    svc = current_app.extensions["coordination"]
    summary = import_files(svc, list(files), chunk_size, _progress, jobs=jobs)
    click.echo(summary.render())
    if summary.failed:
        sys.exit(1)


def _progress(label: str, length: int) -> Any:
    return click.progressbar(length=length, label=label, file=sys.stderr)


def _auth() -> Any:
    return current_app.extensions["auth"]


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
    from auth.registration import RegistrationError, check_registration

    try:
        jwks = check_registration(scope, auth_method, jwks_file, jwks_url, list(redirect_uris))
    except RegistrationError as exc:
        raise click.BadParameter(str(exc)) from exc
    for sender in senders:
        if not sender.strip() or len(sender) > 255 or not sender.isprintable():
            raise click.BadParameter(f"invalid sender {sender[:80]!r} (1-255 printable characters)")
    client_id, secret = _auth().store.create_client(
        name, " ".join(scope.split()), auth_method, list(redirect_uris), jwks, jwks_url
    )
    _auth().store.add_senders(client_id, list(senders))
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
    rows = _auth().store.list_clients()
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
    if not _auth().store.revoke_client(client_id):
        raise click.ClickException(f"no client {client_id}")
    click.echo(f"client {client_id} revoked")


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
    from coordination_api.accounts import AccountError, create_practitioner_user

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


def _read_password() -> str:
    """One line of standard input (never an argument: it would show in ps and shell history)."""
    return sys.stdin.readline().rstrip("\r\n")


@users.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def users_list(as_json: bool) -> None:
    """Local logins (never their password hashes)."""
    from coordination_api.accounts import list_users

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
    from coordination_api.accounts import AccountError, set_disabled

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
    from coordination_api.accounts import AccountError, set_disabled

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
    from coordination_api.accounts import AccountError, set_password

    if sys.stdin.isatty():
        click.echo("new password (one line): ", nl=False, err=True)
    try:
        set_password(current_app, username, _read_password())
    except AccountError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"password of {username} changed")


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
    from coordination_api.integrations.checks import check

    results = check(_settings())
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


@click.group("jobs")
def jobs_group() -> None:
    """Connector jobs: calls to outside services waiting, retrying, or dead (the dead-letter)."""


@jobs_group.command("list")
@click.option("--status", type=click.Choice(["pending", "done", "dead"]), default=None)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def jobs_list(status: str | None, limit: int, as_json: bool) -> None:
    """The newest jobs (payloads are not shown: they may name patients)."""
    from sqlalchemy import select

    from coordination_api.jobs import of
    from coordination_api.storage.schema import connector_job as j

    stmt = select(j.c.pk, j.c.kind, j.c.status, j.c.attempts, j.c.last_error).order_by(j.c.pk.desc())
    if status:
        stmt = stmt.where(j.c.status == status)
    with of(current_app).repo.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt.limit(limit))]
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("no jobs" + (f" with status {status}" if status else ""))
    for r in rows:
        click.echo(f"{r['pk']}\t{r['kind']}\t{r['status']}\t{r['attempts']}\t{r['last_error'] or ''}")


@jobs_group.command("retry")
@click.argument("pk", type=int, required=False)
@with_appcontext
def jobs_retry(pk: int | None) -> None:
    """Queue dead jobs again (one by number, or all), once their cause is fixed."""
    from coordination_api.jobs import of

    click.echo(f"{of(current_app).retry_dead(pk)} job(s) queued again")


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
    from coordination_api.accounts import AccountError
    from coordination_api.demo import DemoRefusedError, coordinator_warnings, load, next_steps, summary
    from coordination_api.errors import FhirError

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
    for warning in coordinator_warnings(_settings().dispatch):
        click.echo(f"warning: {warning}", err=True)
    if base_url is None:
        public = _settings().public_base_url
        base_url = public.removesuffix("/").removesuffix("/fhir") if public else "http://127.0.0.1:8080"
    click.echo(next_steps(result, base_url.rstrip("/"), out_dir))


@click.group("keys")
def keys() -> None:
    """Token-signing keys."""


@keys.command("rotate")
@with_appcontext
def keys_rotate() -> None:
    """New signing key; the old ones stay published until their tokens have expired."""
    kid = _auth().keys.rotate()
    click.echo(f"new signing key {kid}")


def register_commands(app: Flask) -> None:
    for command in (
        serve,
        worker,
        mllp,
        db,
        import_command,
        clients,
        users,
        keys,
        protocols_group,
        jobs_group,
        demo_command,
        connectors_group,
    ):
        if command.name not in app.cli.commands:
            app.cli.add_command(command)
    from coordination_api.directory import directory_group

    app.cli.add_command(directory_group)


if __name__ == "__main__":
    main()
