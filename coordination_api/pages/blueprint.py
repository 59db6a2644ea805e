"""The ``pages`` blueprint and what every page request goes through: sign-in, the user's Principal,
CSRF on POST, the audit record, errors as pages (see the package docstring)."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, g, redirect, request

from auth.audit import AuditRecord
from auth.browser import PAGES_PREFIX, check_csrf, logged_in_user, page
from auth.models import User
from auth.policy import Principal
from auth.scopes import ScopeSet
from coordination_api.core import principal as core_principal
from coordination_api.errors import Category, FhirError
from coordination_api.fhir import access
from coordination_api.web.errors import ERROR_PAGES

bp = Blueprint(
    "pages",
    __name__,
    url_prefix=PAGES_PREFIX.rstrip("/"),
    template_folder="templates",
    static_folder="static",
)

# The audit trail's application agent for what the pages do (client_id of the AuditEvent row).
PAGE_CLIENT = "coordination-pages"
# What the pages may do for the signed-in practitioner (SMART v2 user scopes), the least they need:
# read and search the pathway's resources; update Tasks (accept, assign, complete, cancel). Where the
# data is within reach is the care-team rule's decision, per request, as for a user token.
PAGE_SCOPES = ScopeSet.parse(
    " ".join(
        [
            "user/Patient.rs",
            "user/Encounter.rs",
            "user/EpisodeOfCare.rs",
            "user/CarePlan.rs",
            "user/RequestGroup.rs",
            "user/ServiceRequest.rs",
            "user/Task.rus",
            "user/CareTeam.rs",
            "user/Consent.rs",
            "user/DocumentReference.rs",
            "user/Binary.r",
            "user/Organization.rs",
            "user/Practitioner.rs",
            "user/PractitionerRole.rs",
        ]
    )
)


class PageError(FhirError):
    """An error whose message is written for the page's reader (French), shown as is."""


def page_principal(user: User) -> Principal:
    """The signed-in practitioner as the access decision point knows callers: a user principal."""
    return Principal(
        client_id=PAGE_CLIENT,
        scopes=PAGE_SCOPES,
        practitioner_id=user.practitioner_id,
        username=user.username,
    )


def current_user() -> User:
    """The signed-in user of this page request (set by the sign-in hook)."""
    user: User = g.page_user
    return user


def _login_redirect() -> Response:
    target = request.full_path.rstrip("?") if request.method == "GET" else PAGES_PREFIX
    return redirect(f"/auth/login?{urlencode({'next': target})}", code=303)  # type: ignore[return-value]


@bp.before_request
def _sign_in() -> Response | None:
    if request.endpoint == "pages.static":
        return None
    user = logged_in_user()
    if user is None:
        return _login_redirect()
    who = page_principal(user)
    g.page_user = user
    g.principal = who
    core_principal.enter(who)  # the domain code (dispatch's take of a Task) reads it there
    g.audit = AuditRecord(
        subtype="update" if request.method == "POST" else "search-type",
        method=request.method,
        path=request.path,
        address=request.remote_addr,
        request_id=g.get("request_id"),
    )
    if request.method == "POST" and not check_csrf():
        raise PageError(Category.INVALID, "Formulaire expiré ou invalide ; rechargez la page.")
    return None


@bp.after_request
def _audit(response: Response) -> Response:
    return access.audit_response(response)


TITLES = {
    400: "Demande invalide",
    401: "Connexion requise",
    403: "Accès refusé",
    404: "Introuvable",
    409: "Action impossible",
    410: "Supprimé",
    412: "Modifié entre-temps",
    429: "Trop de demandes",
}


def error_page(exc: FhirError) -> Response:
    """How the one error translator shows an error on this blueprint: a page, same status and headers."""
    message = exc.diagnostics if isinstance(exc, PageError) else None
    title = TITLES.get(exc.status, "Service indisponible" if exc.status >= 500 else "Erreur")
    response = page(
        "pages_error.html",
        exc.status,
        assets=True,
        title=title,
        message=message,
        detail=None if message else exc.diagnostics,
    )
    for key, value in exc.headers.items():
        response.headers[key] = value
    return response


def init_app(app: Flask) -> None:
    app.extensions.setdefault(ERROR_PAGES, {})[bp.name] = error_page
    app.register_blueprint(bp)
