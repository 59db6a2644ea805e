"""What the browser pages share (login, consent, Pro Santé Connect, the worklist): the ``auth``
blueprint, the session (lifetime, CSRF token), the page renderer with its CSP, login throttling."""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Blueprint, Response, current_app, render_template, request, session

from auth.service import AuthService

bp = Blueprint("auth", __name__, template_folder="templates")

SESSION_LIFETIME = 8 * 3600  # a login lasts a working day at most


def service() -> AuthService:
    svc: AuthService = current_app.extensions["auth"]
    return svc


def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def check_csrf() -> bool:
    expected = session.get("csrf")
    given = request.form.get("csrf_token", "")
    return isinstance(expected, str) and hmac.compare_digest(expected, given)


def page(
    template: str,
    status: int = 200,
    form_target: str | None = None,
    *,
    assets: bool = False,
    **context: Any,
) -> Response:
    """``assets``: the page loads its stylesheet and script from this origin (the /app/ pages);
    otherwise only the template's inline style (login, consent)."""
    response = Response(render_template(template, **context), status=status, mimetype="text/html")
    # The pages must never be framed (clickjacking of the consent button) nor load foreign content.
    # form-action also governs the redirect after a form post: the consent form may end at the
    # client's (verified) redirect_uri origin.
    targets = "'self'"
    if form_target:
        parts = urlsplit(form_target)
        targets += f" {parts.scheme}://{parts.netloc}"
    loads = "style-src 'unsafe-inline'"
    if assets:
        loads = "style-src 'self'; script-src 'self'; connect-src 'self'"
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; {loads}; base-uri 'none'; form-action {targets}; frame-ancestors 'none'"
    )
    return response


def logged_in_user() -> Any:
    username = session.get("user")
    logged_at = session.get("auth_time", 0)
    session_id = session.get("sid")
    if not isinstance(username, str) or not isinstance(logged_at, int) or not isinstance(session_id, str):
        return None
    if logged_at + SESSION_LIFETIME < time.time() or service().store.session_ended(session_id):
        return None
    user = service().store.user(username)
    if user is not None:
        user.auth_time = logged_at
    return user


# The coordinators' pages (coordination_api/pages) send their visitors here to sign in, and back.
PAGES_PREFIX = "/app/"


def safe_next(target: str) -> str | None:
    """Only our own authorize endpoint or a page under ``PAGES_PREFIX``, by a path-relative URL
    without dot segments: the login page is no open redirect."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//") or "\\" in target or not target.isprintable():
        return None
    if parts.path == "/auth/authorize":
        return target
    segments = unquote(parts.path).split("/")
    if parts.path.startswith(PAGES_PREFIX) and not {".", ".."} & set(segments):
        return target
    return None


def client_address() -> str:
    return request.remote_addr or "unknown"


def check_throttle() -> tuple[int, Response | None]:
    """Per address: the attempt is recorded first, then counted (parallel attempts all count), and
    refused with 429 over the per-minute or per-10-minutes budget. (attempt id, refusal or None)."""
    cfg = service().config
    store = service().store
    address = client_address()
    attempt = store.begin_attempt(address)
    attempts_last_minute, _failed = store.attempts(address, 60)
    if attempts_last_minute > cfg.login_attempts_per_minute:
        return attempt, too_many(60)
    _attempts, failures_last_10_minutes = store.attempts(address, 600)
    if failures_last_10_minutes > cfg.login_failures_per_address:
        return attempt, too_many(600)
    return attempt, None


def too_many(retry_after: int) -> Response:
    response = page("error.html", 429, error="Trop de tentatives de connexion ; réessayez plus tard.")
    response.headers["Retry-After"] = str(retry_after)
    return response


def start_session(username: str, attempt: int) -> None:
    """A new session on login (session fixation), with a fresh CSRF token; the address and the
    account's failure counters start again."""
    store = service().store
    store.attempt_succeeded(attempt)
    store.clear_failures(username, client_address())
    now = int(time.time())
    session.clear()
    session["sid"] = secrets.token_urlsafe(24)  # what a sign-out ends (end_session)
    session["user"] = username
    session["auth_time"] = now
    session["fresh_login"] = now  # satisfies prompt=login / max_age once (see authorize)
    session["csrf"] = secrets.token_urlsafe(32)


def end_session() -> None:
    """Sign-out: the session ends for every copy of its cookie (until its lifetime is over), and this
    browser's is emptied."""
    session_id = session.get("sid")
    logged_at = session.get("auth_time")
    if isinstance(session_id, str) and isinstance(logged_at, int):
        service().store.end_session(session_id, logged_at + SESSION_LIFETIME)
    session.clear()
