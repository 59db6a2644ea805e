"""Wires the security package (auth/) into the application: authorization server, session, proxies, CORS."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Request, Response, g, has_request_context, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from auth import policy
from auth import web as _routes  # noqa: F401 - registers the login, consent and OAuth routes on bp
from auth.audit import AuditWriter
from auth.browser import PAGES_PREFIX
from auth.browser import bp as auth_bp
from auth.psc import PscLogin  # also registers the Pro Santé Connect routes on bp
from auth.server import TokenPolicy, Urls
from auth.service import AuthConfig, AuthService
from connectors.http import HttpSettings
from connectors.psc import NullProSanteConnect, PscClient, PscClientSettings
from coordination_api.accounts import AccountError, create_practitioner_user
from coordination_api.config import PscSettings, Settings
from coordination_api.fhir import access
from coordination_api.storage.engine import close_reader, open_reader
from coordination_api.storage.repository import Repository

log = logging.getLogger(__name__)

CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
CORS_HEADERS = (
    "Authorization, Content-Type, Accept, If-Match, If-None-Match, If-None-Exist, Prefer, X-Request-ID"
)


def _as_reached() -> str:
    """The root the client reached, with the script root a trusted proxy forwarded (as ``base_url``)."""
    return request.url_root.rstrip("/")


def _loopback_host() -> bool:
    """The request's Host names this machine (local development), never a remote name."""
    return _names_loopback(request.host_url)


@lru_cache(maxsize=64)  # asked on every token check when no public base is configured
def _names_loopback(host_url: str) -> bool:
    host = urlsplit(host_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _psc_login(app: Flask, settings: Settings) -> PscLogin:
    """Pro Santé Connect for the login page (connectors/psc), and first-login provisioning."""
    config = settings.psc
    client = psc_client(config)
    if not isinstance(client, PscClient):
        return PscLogin(client)

    def provision(rpps: str, given: str | None, family: str | None) -> bool:
        try:
            create_practitioner_user(app, f"psc-{rpps}", rpps, None, family, given)
        except AccountError:
            log.warning("Pro Santé Connect first login: the account could not be created")
            return False
        return True

    return PscLogin(client, provision if config.auto_create else None, config.redirect_uri)


def psc_client(config: PscSettings) -> PscClient | NullProSanteConnect:
    """The Pro Santé Connect client of these settings (the Null one without a discovery URL)."""
    if not config.discovery_url:
        return NullProSanteConnect()
    return PscClient(
        PscClientSettings(
            discovery_url=config.discovery_url,
            client_id=config.client_id,
            client_secret=config.client_secret,
            scopes=config.scopes,
            acr_values=config.acr_values,
            introspect=config.introspect,
            http=HttpSettings(
                connect_timeout=config.connect_timeout,
                read_timeout=config.read_timeout,
                verify=config.ca_file or True,
            ),
        )
    )


def human_name(names: Any) -> str | None:
    """A FHIR HumanName list as one line: the first official (else first) name's text, else its
    prefix, given and family names."""
    if not isinstance(names, list):
        return None
    usable = [n for n in names if isinstance(n, dict)]
    chosen = next((n for n in usable if n.get("use") == "official"), usable[0] if usable else None)
    if chosen is None:
        return None
    if isinstance(chosen.get("text"), str) and chosen["text"].strip():
        return str(chosen["text"]).strip()
    parts: list[str] = []
    for key in ("prefix", "given"):
        parts += [p for p in chosen.get(key) or [] if isinstance(p, str)]
    if isinstance(chosen.get("family"), str):
        parts.append(chosen["family"])
    return " ".join(parts).strip() or None


def init_app(app: Flask, settings: Settings, repo: Repository) -> None:
    configured = settings.public_base_url.rstrip("/")

    def fhir_bases() -> list[str]:
        reached = _as_reached() + "/fhir"
        return [configured, reached] if configured else [reached]

    def audiences() -> list[str]:
        # The configured public base only; without one, the base as reached on a loopback Host only
        # (development): an attacker-chosen Host header never becomes an accepted audience.
        if configured:
            return [configured]
        return [_as_reached() + "/fhir"] if _loopback_host() else []

    def token_urls() -> list[str]:
        return [f"{u.rsplit('/fhir', 1)[0]}/auth/token" for u in audiences()]

    def patient_choices(practitioner_id: str) -> list[tuple[str, str]]:
        now = int(time.time() * 1_000_000)
        with repo.engine.connect() as conn:
            refs = policy.actor_refs(conn, practitioner_id, now)
            ids = sorted({row[0] for row in conn.execute(policy.allowed_patients(refs, now, None))})
            found = repo.current_many(conn, [("Patient", i) for i in ids])
        choices = []
        for patient_id in ids:
            stored = found.get(("Patient", patient_id))
            label = patient_id
            if stored is not None and not stored.deleted:
                names = stored.json().get("name") or [{}]
                first = names[0] if isinstance(names[0], dict) else {}
                given = " ".join(first.get("given") or [])
                label = f"{first.get('family', '')} {given} ({patient_id})".strip()
            choices.append((patient_id, label))
        return choices

    def practitioner_name(practitioner_id: str) -> str | None:
        with repo.engine.connect() as conn:
            stored = repo.current_many(conn, [("Practitioner", practitioner_id)]).get(
                ("Practitioner", practitioner_id)
            )
        if stored is None or stored.deleted:
            return None
        return human_name(stored.json().get("name"))

    config = AuthConfig(
        tokens=TokenPolicy(
            access_ttl=settings.access_token_ttl,
            code_ttl=settings.auth_code_ttl,
            offline_ttl=settings.offline_token_ttl,
            online_ttl=settings.online_token_ttl,
        ),
        login_attempts_per_minute=settings.login_attempts_per_minute,
        login_failures_per_address=settings.login_failures_per_address,
        login_max_failures=settings.login_max_failures,
        login_lockout_seconds=settings.login_lockout_seconds,
        login_lockout_max_seconds=settings.login_lockout_max_seconds,
        login_account_max_failures=settings.login_account_max_failures,
        login_account_lockout_max_seconds=settings.login_account_lockout_max_seconds,
        jwks_refetch_seconds=settings.jwks_refetch_seconds,
    )
    service = AuthService(
        repo.engine,
        config,
        Urls(fhir_base=fhir_bases, token=token_urls, audiences=audiences),
        issuer=lambda: fhir_bases()[0],
        patient_choices=patient_choices,
        practitioner_name=practitioner_name,
    )
    app.extensions["auth"] = service
    app.extensions["audit_writer"] = AuditWriter(repo.engine, settings.audit_reads, settings.audit_queue_max)
    app.register_blueprint(auth_bp)
    app.extensions["psc"] = _psc_login(app, settings)
    repo.guard = access.guard_write

    def local_bases() -> tuple[str, ...]:
        if not has_request_context():
            return (configured,) if configured else ()
        return tuple(dict.fromkeys(fhir_bases()))

    repo.local_bases = local_bases
    app.extensions["subscriptions_criteria_guard"] = access.criteria_hop_guard
    repo.request_raw = _request_raw(app, repo)
    repo.before_write = release_request_raw
    service.raw = repo.raw
    repo.before_commit = access.audit_in_transaction

    # Session cookie (login, consent and the /app/ pages only): signed with a configured secret, else one
    # generated once and shared through the database by every process (auth.web loads it lazily). The
    # same interface either way: its cookie rules (Secure outside loopback) hold with a configured key
    # too, the production setting (review 24).
    app.secret_key = settings.secret_key
    app.session_interface = _SharedKeySessions(lambda: service.store.shared_secret("session-key"))

    @app.before_request
    def _session_key_failure() -> None:
        # The key could not be loaded (database away) before any view ran: fail the request here,
        # under the one error translator (503 + Retry-After), not as a 500 from Flask's internals.
        failure = request.environ.pop(_SESSION_KEY_FAILURE, None)
        if failure is not None:
            raise failure

    app.config.update(
        SESSION_COOKIE_NAME="coordination_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        PERMANENT_SESSION_LIFETIME=8 * 3600,
    )
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n, x_prefix=n)  # type: ignore[method-assign]
    if settings.cors_origins:
        _cors(app, settings.cors_origins)


_SESSION_KEY_FAILURE = "coordination.session_key_failure"


class _SharedKeySessions(SecureCookieSessionInterface):
    """The session of the login, consent and /app/ pages: its cookie's rules, and the shared key loaded
    from the database on first use (after migrations have run) when none is configured."""

    def __init__(self, load: Callable[[], str]) -> None:
        self.load = load

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        # Only the login and consent pages and the coordinators' pages use a session; the API never
        # touches the database for it.
        if not request.path.startswith(("/auth/", PAGES_PREFIX)):
            return None
        if not app.secret_key:
            try:
                app.secret_key = self.load()
            except Exception as exc:  # noqa: BLE001 - re-raised by the before_request hook
                request.environ[_SESSION_KEY_FAILURE] = exc
                return self.make_null_session(app)
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        # Secure outside loopback (issue 22): a sign-in reached by any other name travels over TLS
        # only; http://127.0.0.1 stays usable for `make run`. The setting forces it everywhere.
        return bool(app.config["SESSION_COOKIE_SECURE"]) or not _loopback_host()


def _request_raw(app: Flask, repo: Repository) -> Callable[[], Any]:
    """One DBAPI connection per request for the hot-path statements, returned at teardown."""

    def shared() -> Any:
        if not has_request_context():
            return None
        connection = g.get("raw_connection")
        if connection is None:
            connection = g.raw_connection = open_reader(repo.engine)
        return connection

    @app.teardown_request
    def _release(_exc: BaseException | None) -> None:
        release_request_raw()

    return shared


def release_request_raw() -> None:
    """Give the request's DBAPI connection back to the pool (before a write transaction or the audit
    wait: a request never holds two pooled connections at once)."""
    if not has_request_context():
        return
    connection = g.pop("raw_connection", None)
    if connection is not None:
        close_reader(connection)


def _cors(app: Flask, origins: tuple[str, ...]) -> None:
    """CORS for browser apps on the allow-list only (Fetch standard, CORS protocol)."""
    allowed = set(origins)

    @app.before_request
    def _preflight() -> Response | None:
        if request.method == "OPTIONS" and request.headers.get("Origin") in allowed:
            return Response(status=204)
        return None

    @app.after_request
    def _headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Expose-Headers"] = "Location, ETag, Last-Modified, X-Request-ID"
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
                response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
                response.headers["Access-Control-Max-Age"] = "600"
        return response
