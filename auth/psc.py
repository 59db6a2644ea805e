"""Login with Pro Santé Connect on the authorization server's login page (connectors/psc).

``/auth/psc/login`` keeps the pending SMART authorization request, stores a single-use state and
nonce in the session and sends the professional to PSC; ``/auth/psc/callback`` checks the state
(CSRF), lets the connector check the ID token and UserInfo, maps the RPPS to the local login (created
on first login only when the operator allows it), then logs in exactly as the password form does.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app, redirect, request, session, url_for
from werkzeug.exceptions import NotFound

from auth.browser import bp, check_throttle, page, safe_next, service, start_session
from connectors.errors import ConnectorError, Failure
from connectors.psc import NullProSanteConnect, ProSanteConnect

PENDING_SECONDS = 600  # a PSC round trip longer than this starts again


@dataclass
class PscLogin:
    client: ProSanteConnect
    # (rpps, given, family) -> creates the Practitioner and federated login (False: could not);
    # None: first logins are not allowed.
    provision: Callable[[str, str | None, str | None], bool] | None = None
    redirect_uri: str = ""


def _psc() -> PscLogin:
    found: PscLogin | None = current_app.extensions.get("psc")
    if found is None or not found.client.configured:
        raise NotFound()
    return found


@bp.app_context_processor
def _psc_context() -> dict[str, Any]:
    found: PscLogin | None = current_app.extensions.get("psc")
    return {"psc_enabled": bool(found and found.client.configured)}


def _redirect_uri(psc: PscLogin) -> str:
    return psc.redirect_uri or url_for("auth.psc_callback", _external=True)


def _failure(exc: ConnectorError) -> Response:
    if exc.failure is Failure.REFUSED:
        return page("error.html", 403, error=f"Connexion Pro Santé Connect refusée : {exc}")
    return page("error.html", 502, error="Pro Santé Connect ne répond pas ; réessayez plus tard.")


@bp.get("/auth/psc/login")
def psc_login() -> Response:
    psc = _psc()
    state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    session["psc"] = {
        "state": state,
        "nonce": nonce,
        "next": request.args.get("next", ""),
        "at": int(time.time()),
    }
    try:
        target = psc.client.authorization_url(state, nonce, _redirect_uri(psc))
    except ConnectorError as exc:
        return _failure(exc)
    return redirect(target, code=302)  # type: ignore[return-value]


@bp.get("/auth/psc/callback")
def psc_callback() -> Response:
    psc = _psc()
    attempt, throttled = check_throttle()
    if throttled is not None:
        return throttled
    pending = session.pop("psc", None)  # single use: a replayed callback finds nothing
    state = request.args.get("state", "")
    if (
        not isinstance(pending, dict)
        or not hmac.compare_digest(str(pending.get("state")), state)
        or int(pending.get("at", 0)) + PENDING_SECONDS < time.time()
    ):
        return page("error.html", 400, error="Connexion expirée ou invalide ; recommencez.")
    if request.args.get("error"):
        return page("error.html", 403, error="Pro Santé Connect n'a pas authentifié le professionnel.")
    try:
        identity = psc.client.login(request.args.get("code", ""), _redirect_uri(psc), str(pending["nonce"]))
    except ConnectorError as exc:
        return _failure(exc)
    store = service().store
    user = store.user_by_rpps(identity.rpps)
    if (
        user is None
        and psc.provision is not None
        and psc.provision(identity.rpps, identity.given, identity.family)
    ):
        user = store.user_by_rpps(identity.rpps)
    if user is None:  # unknown (and not created), or a disabled login
        return page(
            "error.html", 403, error="Ce professionnel n'est pas enregistré auprès de la CPTS ; contactez-la."
        )
    start_session(user.username, attempt)
    safe = safe_next(str(pending.get("next") or ""))
    if safe is None:
        return page("done.html", username=user.username)
    return redirect(safe, code=303)  # type: ignore[return-value]


__all__ = ["NullProSanteConnect", "PscLogin"]
