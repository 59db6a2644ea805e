"""HTTP endpoints of the authorization server (a thin Flask layer over authlib and AuthService).

SMART App Launch 2: discovery (conformance.html), authorization code with PKCE (app-launch.html),
backend services (backend-services.html); RFC 7662 introspection, RFC 7009 revocation.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from authlib.oauth2 import OAuth2Error
from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request, session

from auth import scopes as smart
from auth.keys import ALG
from auth.models import AUTH_METHODS
from auth.service import AuthService

bp = Blueprint("auth", __name__, template_folder="templates")

SESSION_LIFETIME = 8 * 3600  # a login lasts a working day at most

GRANT_TYPES = ["authorization_code", "client_credentials", "refresh_token"]
CAPABILITIES = [
    "launch-standalone",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-standalone-patient",
    "permission-offline",
    "permission-online",
    "permission-user",
    "permission-patient",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
]


def service() -> AuthService:
    svc: AuthService = current_app.extensions["auth"]
    return svc


def _base() -> str:
    return service().urls.fhir_base()[0]


def _root() -> str:
    return _base().rsplit("/fhir", 1)[0]


@bp.get("/fhir/.well-known/smart-configuration")
def smart_configuration() -> Response:
    """SMART App Launch 2.x conformance.html#metadata."""
    root = _root()
    scopes = sorted(smart.OTHER_SCOPES) + [
        f"{ctx}/*.{p}" for ctx in smart.CONTEXTS for p in ("cruds", "rs", "read", "write")
    ]
    body = {
        "issuer": service().issuer(),
        "jwks_uri": f"{root}/auth/jwks",
        "authorization_endpoint": f"{root}/auth/authorize",
        "token_endpoint": f"{root}/auth/token",
        "introspection_endpoint": f"{root}/auth/introspect",
        "revocation_endpoint": f"{root}/auth/revoke",
        "grant_types_supported": GRANT_TYPES,
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": scopes,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    }
    response = jsonify(body)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/fhir/.well-known/openid-configuration")
def openid_configuration() -> Response:
    """OpenID Connect Discovery 1.0 section 4, at the issuer (our FHIR base): SMART App Launch 2
    requires it of a server offering sso-openid-connect."""
    root = _root()
    body = {
        "issuer": service().issuer(),
        "jwks_uri": f"{root}/auth/jwks",
        "authorization_endpoint": f"{root}/auth/authorize",
        "token_endpoint": f"{root}/auth/token",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALG],
        "scopes_supported": ["openid", "fhirUser", "profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "fhirUser"],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": GRANT_TYPES,
    }
    response = jsonify(body)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/auth/jwks")
def jwks() -> Response:
    response = jsonify(service().keys.public_jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.post("/auth/token")
def token() -> Response:
    response: Response = service().server.create_token_response()
    return response


@bp.post("/auth/introspect")
def introspect() -> Response:
    response: Response = service().server.create_endpoint_response("introspection")
    return response


@bp.post("/auth/revoke")
def revoke() -> Response:
    response: Response = service().server.create_endpoint_response("revocation")
    return response


# -- login and consent (browser) ------------------------------------------------------------------


def _csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def _check_csrf() -> bool:
    expected = session.get("csrf")
    given = request.form.get("csrf_token", "")
    return isinstance(expected, str) and hmac.compare_digest(expected, given)


def _page(template: str, status: int = 200, form_target: str | None = None, **context: Any) -> Response:
    response = Response(render_template(template, **context), status=status, mimetype="text/html")
    # The pages must never be framed (clickjacking of the consent button) nor load foreign content.
    # form-action also governs the redirect after a form post: the consent form may end at the
    # client's (verified) redirect_uri origin.
    targets = "'self'"
    if form_target:
        parts = urlsplit(form_target)
        targets += f" {parts.scheme}://{parts.netloc}"
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'unsafe-inline'; form-action {targets}; frame-ancestors 'none'"
    )
    return response


def _logged_in_user() -> Any:
    username = session.get("user")
    logged_at = session.get("auth_time", 0)
    if not isinstance(username, str) or not isinstance(logged_at, int):
        return None
    if logged_at + SESSION_LIFETIME < time.time():
        return None
    user = service().store.user(username)
    if user is not None:
        user.auth_time = logged_at
    return user


def _safe_next(target: str) -> str | None:
    """Only our own authorize endpoint, by a relative URL: the login page is no open redirect."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//") or "\\" in target:
        return None
    if parts.path != "/auth/authorize":
        return None
    return target


def _throttled() -> Response | None:
    cfg = service().config
    address = request.remote_addr or "unknown"
    attempts_last_minute, _failed = service().store.attempts(address, 60)
    if attempts_last_minute >= cfg.login_attempts_per_minute:
        return _too_many(60)
    _attempts, failures_last_10_minutes = service().store.attempts(address, 600)
    if failures_last_10_minutes >= cfg.login_failures_per_address:
        return _too_many(600)
    return None


def _too_many(retry_after: int) -> Response:
    response = _page("error.html", 429, error="Trop de tentatives de connexion ; réessayez plus tard.")
    response.headers["Retry-After"] = str(retry_after)
    return response


@bp.route("/auth/login", methods=["GET", "POST"])
def login() -> Response:
    target = request.values.get("next", "")
    if request.method == "GET":
        return _page("login.html", csrf_token=_csrf_token(), next=target, username="", error=None)
    throttled = _throttled()
    if throttled is not None:
        return throttled
    if not _check_csrf():
        return _page("error.html", 400, error="Formulaire expiré ou invalide ; rechargez la page.")
    username = request.form.get("username", "").strip()[:150]
    password = request.form.get("password", "")[:1024]
    cfg = service().config
    user, locked_for = service().store.check_login(
        username, password, cfg.login_max_failures, cfg.login_lockout_seconds
    )
    service().store.record_attempt(request.remote_addr or "unknown", user is not None)
    if user is None:
        if locked_for:
            return _too_many(locked_for)
        return _page(
            "login.html",
            401,
            csrf_token=_csrf_token(),
            next=target,
            username=username,
            error="Identifiant ou mot de passe incorrect.",
        )
    # A new session on login (session fixation), with a fresh CSRF token.
    session.clear()
    session["user"] = user.username
    session["auth_time"] = int(time.time())
    session["csrf"] = secrets.token_urlsafe(32)
    safe = _safe_next(target)
    if safe is None:
        return _page("done.html", username=user.username)
    return redirect(safe, code=303)  # type: ignore[return-value]


def _error_page(error: OAuth2Error) -> Response:
    """An authorization request error: back to the client only when its redirect_uri was verified."""
    if getattr(error, "redirect_uri", None):
        params = [("error", error.error)]
        if error.description:
            params.append(("error_description", error.description))
        state = request.values.get("state")
        if state:
            params.append(("state", state))
        sep = "&" if "?" in error.redirect_uri else "?"
        return redirect(f"{error.redirect_uri}{sep}{urlencode(params)}", code=302)  # type: ignore[return-value]
    return _page("error.html", 400, error=f"{error.error}: {error.description or ''}".strip(": "))


def _check_aud(grant: Any) -> None:
    """SMART app-launch.html: the aud parameter must name this FHIR server (token-leak protection)."""
    aud = request.values.get("aud")
    accepted = [u.rstrip("/") for u in service().urls.fhir_base()]
    if not aud or aud.rstrip("/") not in accepted:
        error = OAuth2Error(description="'aud' must be this FHIR server's base URL")
        error.error = "invalid_request"
        error.redirect_uri = grant.redirect_uri
        raise error


@bp.route("/auth/authorize", methods=["GET", "POST"])
def authorize() -> Response:
    svc = service()
    user = _logged_in_user()
    try:
        grant = svc.server.get_consent_grant(end_user=user)
        _check_aud(grant)
    except OAuth2Error as error:
        return _error_page(error)
    if user is None:
        return redirect(f"/auth/login?{urlencode({'next': request.full_path})}", code=303)  # type: ignore[return-value]
    scope_list = smart.split(grant.request.scope)
    wants_patient = "launch/patient" in scope_list
    patients = svc.patient_choices(user.practitioner_id) if wants_patient else None
    if request.method == "GET":
        return _page(
            "consent.html",
            client_name=grant.client.name,
            username=user.username,
            scopes=scope_list,
            csrf_token=_csrf_token(),
            action=request.full_path,
            patients=patients,
            form_target=grant.redirect_uri,
        )
    if not _check_csrf():
        return _page("error.html", 400, error="Formulaire expiré ou invalide ; rechargez la page.")
    if request.form.get("decision") != "approve":
        response: Response = svc.server.create_authorization_response(grant=grant, grant_user=None)
        return response
    if wants_patient:
        chosen = request.form.get("patient", "")
        if patients is None or chosen not in {pid for pid, _label in patients}:
            return _page("error.html", 400, error="Choisissez un patient de votre cercle de soins.")
        grant.request.launch_patient = chosen
    response = svc.server.create_authorization_response(grant=grant, grant_user=user)
    return response


from auth import psc as _psc  # noqa: E402, F401 - registers the Pro Santé Connect routes on bp
