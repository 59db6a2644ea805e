"""HTTP endpoints of the authorization server (a thin Flask layer over authlib and AuthService).

SMART App Launch 2: discovery (conformance.html), authorization code with PKCE (app-launch.html),
backend services (backend-services.html); RFC 7662 introspection, RFC 7009 revocation; OpenID Connect
Core 3.1.2.1 prompt / max_age and RP-Initiated Logout 1.0 (/auth/logout).

Login throttling (defaults, all COORDINATION_LOGIN_*; docs/security.md section 7):
- every attempt (password form or Pro Santé Connect callback) is recorded for its address before
  anything is checked; over 120 attempts a minute or 30 failures in 10 minutes from one address: 429;
- attempts are counted as failures before the password check (a good password then resets the
  counters) per (username, address) and per username, for every username submitted (known or not),
  by one atomic upsert that also refuses to count a locked username; after 5 consecutive failures
  from one address the username is locked from that address for 60 s, doubled at each further
  failure (120, 240 ... at most 3600 s); after 20 from all addresses together it is locked
  everywhere with the same doubling, at most 900 s;
- while locked nothing is counted, the password is not checked (but hashed, for the same cost) and
  the answer is 429 with Retry-After; counters are forgotten after a day, reset by a good login;
- unknown username, disabled login and wrong password: the same 401 page, the same cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InsecureTransportError
from flask import Response, jsonify, redirect, request, session
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from auth import consent, messages
from auth import scopes as smart
from auth.browser import (
    bp,
    check_csrf,
    check_throttle,
    client_address,
    csrf_token,
    end_session,
    logged_in_user,
    page,
    safe_next,
    service,
    start_session,
    too_many,
)
from auth.keys import ALG
from auth.models import AUTH_METHODS
from auth.secrets import verify_password

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


def _base() -> str:
    return service().urls.fhir_base()[0]


def _root() -> str:
    return _base().rsplit("/fhir", 1)[0]


def _endpoints(root: str) -> dict[str, Any]:
    """What both discovery documents open with (the key order is kept: these are served as is)."""
    return {
        "issuer": service().issuer(),
        "jwks_uri": f"{root}/auth/jwks",
        "authorization_endpoint": f"{root}/auth/authorize",
        "token_endpoint": f"{root}/auth/token",
    }


def _cached_json(body: dict[str, Any]) -> Response:
    """A public document that changes rarely (discovery, keys): caches may keep it five minutes."""
    response = jsonify(body)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/fhir/.well-known/smart-configuration")
def smart_configuration() -> Response:
    """SMART App Launch 2.x conformance.html#metadata."""
    root = _root()
    scopes = sorted(smart.OTHER_SCOPES) + [
        f"{ctx}/*.{p}" for ctx in smart.CONTEXTS for p in ("cruds", "rs", "read", "write")
    ]
    body = {
        **_endpoints(root),
        "introspection_endpoint": f"{root}/auth/introspect",
        "revocation_endpoint": f"{root}/auth/revoke",
        "end_session_endpoint": f"{root}/auth/logout",
        "grant_types_supported": GRANT_TYPES,
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": scopes,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    }
    return _cached_json(body)


@bp.get("/fhir/.well-known/openid-configuration")
def openid_configuration() -> Response:
    """OpenID Connect Discovery 1.0 section 4, at the issuer (our FHIR base): SMART App Launch 2
    requires it of a server offering sso-openid-connect."""
    root = _root()
    body = {
        **_endpoints(root),
        "end_session_endpoint": f"{root}/auth/logout",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALG],
        "scopes_supported": ["openid", "fhirUser", "profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "fhirUser"],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": GRANT_TYPES,
    }
    return _cached_json(body)


@bp.get("/auth/jwks")
def jwks() -> Response:
    return _cached_json(service().keys.public_jwks())


def _oauth_call(call: Callable[[], Response]) -> Response:
    """authlib refuses plain http off loopback (RFC 6749 3.1 / 10.9) while building its request,
    before its own error handling: answer that as the OAuth error it is (400), not as a crash."""
    try:
        return call()
    except InsecureTransportError as error:
        response: Response = service().server.handle_error_response(None, error)
        return response


@bp.post("/auth/token")
def token() -> Response:
    return _oauth_call(lambda: service().server.create_token_response())


@bp.post("/auth/introspect")
def introspect() -> Response:
    return _oauth_call(lambda: service().server.create_endpoint_response("introspection"))


@bp.post("/auth/revoke")
def revoke() -> Response:
    return _oauth_call(lambda: service().server.create_endpoint_response("revocation"))


# -- login and consent (browser) ------------------------------------------------------------------


@bp.route("/auth/login", methods=["GET", "POST"])
def login() -> Response:
    """Password login. An unknown username, a disabled login and a wrong password get the same
    page, status and cost (one argon2 verification); the lockout counts usernames whether or not
    they exist, so it tells nothing either (see the module docstring for the numbers)."""
    target = request.values.get("next", "")
    if request.method == "GET":
        return page("login.html", csrf_token=csrf_token(), next=target, username="", error=None)
    attempt, throttled = check_throttle()
    if throttled is not None:
        return throttled
    if not check_csrf():
        return page("error.html", 400, error="Formulaire expiré ou invalide ; rechargez la page.")
    username = request.form.get("username", "").strip()[:150]
    password = request.form.get("password", "")[:1024]
    svc = service()
    # Counted before the check (as a failure until the password proves right): parallel attempts
    # cannot get more password checks than the lockout allows.
    if svc.store.count_attempt(username, client_address(), svc.config.backoff()) is None:
        verify_password(None, password)  # the same cost as a real check
        return too_many(max(1, svc.store.login_locked(username, client_address())))
    user = svc.store.check_password(username, password)
    if user is None:
        return page(
            "login.html",
            401,
            csrf_token=csrf_token(),
            next=target,
            username=username,
            error="Identifiant ou mot de passe incorrect.",
        )
    start_session(user.username, attempt)
    safe = safe_next(target)
    if safe is None:
        return page("done.html", username=user.username)
    return redirect(safe, code=303)  # type: ignore[return-value]


def _error_page(error: OAuth2Error) -> Response:
    """An authorization request error: back to the client only when its redirect_uri was verified."""
    described = messages.plain(error, request.values)
    if described is not None:
        error.description = described
    if getattr(error, "redirect_uri", None):
        params = [("error", error.error)]
        if error.description:
            params.append(("error_description", error.description))
        state = request.values.get("state")
        if state:
            params.append(("state", state))
        sep = "&" if "?" in error.redirect_uri else "?"
        return redirect(f"{error.redirect_uri}{sep}{urlencode(params)}", code=302)  # type: ignore[return-value]
    return page("error.html", 400, error=f"{error.error}: {error.description or ''}".strip(": "))


def _check_aud(grant: Any) -> None:
    """SMART app-launch.html: the aud parameter must name this FHIR server (token-leak protection):
    its configured public base, never whatever the Host header says."""
    aud = request.values.get("aud")
    accepted = [u.rstrip("/") for u in service().urls.audiences()]
    if not aud or aud.rstrip("/") not in accepted:
        raise _oauth_error("invalid_request", "'aud' must be this FHIR server's base URL", grant)


def _oauth_error(code: str, description: str, grant: Any) -> OAuth2Error:
    error = OAuth2Error(description=description)
    error.error = code
    error.redirect_uri = grant.redirect_uri
    return error


FRESH_LOGIN_SECONDS = 120  # a login just made satisfies prompt=login / max_age for this long, once


def _needs_login(grant: Any, user: Any) -> bool:
    """OpenID Connect Core 3.1.2.1 prompt / max_age, 3.1.2.6 errors: True when the user must (again)
    enter credentials before this request goes on; raises the errors prompt=none asks for."""
    prompts = set(request.values.get("prompt", "").split())
    if "none" in prompts and len(prompts) > 1:
        raise _oauth_error("invalid_request", "prompt=none cannot be combined with other values", grant)
    raw_max_age = request.values.get("max_age")
    max_age: int | None = None
    if raw_max_age is not None:
        if not (raw_max_age.isascii() and raw_max_age.isdigit()):
            raise _oauth_error("invalid_request", "max_age must be a number of seconds", grant)
        max_age = int(raw_max_age)
    if user is None:
        if "none" in prompts:
            raise _oauth_error("login_required", "No one is logged in", grant)
        return True
    now = int(time.time())
    fresh_at = session.get("fresh_login")
    fresh = fresh_at == user.auth_time and now - user.auth_time <= FRESH_LOGIN_SECONDS
    stale = max_age is not None and now - user.auth_time > max_age
    if ("login" in prompts or stale) and not fresh:
        if "none" in prompts:
            raise _oauth_error("login_required", "The login is older than max_age", grant)
        return True
    if "none" in prompts:
        # Every authorization is approved on the consent page: nothing can be granted silently.
        raise _oauth_error("consent_required", "The user must approve this application", grant)
    if fresh and ("login" in prompts or max_age is not None):
        session.pop("fresh_login", None)  # used once: a reload asks again
    return False


@bp.route("/auth/authorize", methods=["GET", "POST"])
def authorize() -> Response:
    svc = service()
    user = logged_in_user()
    try:
        grant = svc.server.get_consent_grant(end_user=user)
        _check_aud(grant)
        # The consent form's POST was preceded by its GET, where prompt and max_age were honoured.
        login_first = (user is None or request.method == "GET") and _needs_login(grant, user)
    except OAuth2Error as error:
        return _error_page(error)
    if login_first or user is None:
        return redirect(f"/auth/login?{urlencode({'next': request.full_path})}", code=303)  # type: ignore[return-value]
    # What is granted and what is not (auth/scopes.py decide_user_launch): both shown, the token
    # response's scope lists exactly the granted ones (RFC 6749 3.3).
    decision: smart.Decision = grant.request.scope_decision
    wants_patient = "launch/patient" in decision.granted
    patients = svc.patient_choices(user.practitioner_id) if wants_patient else None
    if request.method == "GET":
        tokens = svc.config.tokens
        granted, refused = consent.lines(decision, tokens.offline_ttl, tokens.online_ttl)
        return page(
            "consent.html",
            client_name=grant.client.name,
            display_name=svc.practitioner_name(user.practitioner_id) or user.username,
            granted=granted,
            refused=refused,
            csrf_token=csrf_token(),
            action=request.full_path,
            patients=patients,
            form_target=grant.redirect_uri,
        )
    if not check_csrf():
        return page("error.html", 400, error="Formulaire expiré ou invalide ; rechargez la page.")
    if request.form.get("decision") != "approve":
        response: Response = svc.server.create_authorization_response(grant=grant, grant_user=None)
        return response
    if wants_patient:
        chosen = request.form.get("patient", "")
        if patients is None or chosen not in {pid for pid, _label in patients}:
            return page("error.html", 400, error="Choisissez un patient de votre cercle de soins.")
        grant.request.launch_patient = chosen
    response = svc.server.create_authorization_response(grant=grant, grant_user=user)
    return response


LOGOUT_PARAMS = ("post_logout_redirect_uri", "client_id", "state", "id_token_hint")


def _post_logout_target() -> str | None:
    """OpenID Connect RP-Initiated Logout 1.0 section 3: only to a URI registered for the client
    (its redirect URIs, exact match), the client named by client_id or by the id_token_hint we issued."""
    target = request.values.get("post_logout_redirect_uri")
    if not target:
        return None
    client_id = request.values.get("client_id") or _hinted_client(request.values.get("id_token_hint"))
    client = service().store.client(client_id) if client_id else None
    if client is None or not client.check_redirect_uri(target):
        raise ValueError("post_logout_redirect_uri is not registered for this client")
    state = request.values.get("state")
    if state:
        target += ("&" if "?" in target else "?") + urlencode({"state": state})
    return target


def _hinted_client(hint: str | None) -> str | None:
    """The audience of an ID token we signed (expired ones are fine: RP-Initiated Logout 1.0 2)."""
    if not hint:
        return None
    try:
        keys = KeySet.import_key_set(service().keys.public_jwks())  # type: ignore[arg-type]
        token = jwt.decode(hint, keys, algorithms=[ALG])
    except (JoseError, ValueError, TypeError):
        return None
    aud = token.claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    return str(audiences[0]) if len(audiences) == 1 and isinstance(audiences[0], str) else None


@bp.route("/auth/logout", methods=["GET", "POST"])
def logout() -> Response:
    """End the login session (OpenID Connect RP-Initiated Logout 1.0, the end_session_endpoint).
    GET asks for confirmation (a link or image must not log anyone out); the POST carries the CSRF
    token, clears the session, then returns to a registered post_logout_redirect_uri if one is given."""
    try:
        target = _post_logout_target()
    except ValueError as exc:
        return page("error.html", 400, error=str(exc))
    if request.method == "GET":
        params = [(k, request.values[k]) for k in LOGOUT_PARAMS if request.values.get(k)]
        user = session.get("user")
        return page(
            "logout.html",
            csrf_token=csrf_token(),
            params=params,
            username=user if isinstance(user, str) else None,
            done=False,
            form_target=target,
        )
    if not check_csrf():
        return page("error.html", 400, error="Formulaire expiré ou invalide ; rechargez la page.")
    end_session()
    if target:
        return redirect(target, code=303)  # type: ignore[return-value]
    return page("logout.html", done=True)
