"""Application factory (Flask's create_app pattern)."""

from __future__ import annotations

import logging
import uuid

from flask import Flask, Response, g, request

from auth import policy
from coordination_api import logs, metrics, openapi, security, subscriptions
from coordination_api.config import Settings
from coordination_api.coordination import consent_actors, dispatch, namespaces
from coordination_api.coordination.intake import nde
from coordination_api.core import principal
from coordination_api.core.services import Access, Services
from coordination_api.fhir import access, profiles, routes
from coordination_api.fhir.resources import supported_types
from coordination_api.health import bp as health_bp
from coordination_api.integrations import annuaire_sync, dmp, eparcours, hl7v2
from coordination_api.jobs import Jobs
from coordination_api.pages import routes as pages
from coordination_api.search.compiler import SearchCompiler
from coordination_api.search.registry import SearchRegistry
from coordination_api.storage.engine import make_engine
from coordination_api.storage.repository import Repository
from coordination_api.storage.stats import TableStats
from coordination_api.web.errors import register_error_handlers

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    # Werkzeug refuses larger bodies with 413 before we read them; a little slack for multipart overhead.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    logging.getLogger("coordination_api").setLevel(settings.log_level)

    profiles.configure(reject_unknown_profiles=settings.reject_unknown_profiles)
    engine = make_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        echo=settings.db_echo,
        timeouts=settings.db_timeouts,
    )
    registry = SearchRegistry.default(supported_types())
    # The access policy's rows (care team, opposition, affiliations, Task reach) are written with
    # every write of their types, in its transaction: the repository's index hook.
    repo = Repository(engine, registry, derived=policy.DERIVED)
    repo.prepare.append(consent_actors.resolve)  # a Consent's objection is never stored unenforceable
    repo.prepare.append(consent_actors.unique_rpps)  # one Practitioner per RPPS (logins, objections)
    repo.prepare.append(namespaces.guard(repo))  # a sender's identifiers are added by its intake only
    compiler = SearchCompiler(
        registry,
        default_count=settings.default_page_size,
        max_count=settings.max_page_size,
        dialect=engine.dialect.name,
    )
    # What a write reads first is judged by the request's care-team rule (fhir/access.py).
    rule = Access(secure=access.secure, hop_guard=access.hop_guard, check_stored=access.check_stored)
    stats = TableStats(
        engine,
        fraction=settings.analyze_scale_factor,
        minimum=settings.analyze_threshold,
        enabled=settings.analyze_after_writes,
    )
    repo.on_written.append(stats.note)  # counts the versions written; no I/O in the write
    svc = Services(settings=settings, repo=repo, compiler=compiler, access=rule, stats=stats)
    svc.hooks.before_create.append(nde.before_create)  # an NdE CommunicationRequest is an encounter event
    svc.hooks.before_update.append(nde.before_update)  # ... and an update cannot be an intake
    svc.hooks.new_party.append(annuaire_sync.enqueue_enrichment)  # the directory completes what intake met
    app.extensions["coordination"] = svc
    security.init_app(app, settings, repo)
    subscriptions.init_app(app, repo, settings)
    dispatch.init_app(app, repo, settings.dispatch)  # after subscriptions: its hook runs second
    app.extensions["jobs"] = Jobs(repo, settings.jobs)  # connector kinds register their handlers
    annuaire_sync.init_app(app, settings)  # the ANS directory and its enrichment jobs
    eparcours.init_app(app, repo, settings)  # forwarding to the regional platform (jobs outbox)
    dmp.init_app(app, settings)  # DMP pushes (IHE MHD ITI-65) through the jobs outbox

    @app.before_request
    def _request_id() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else str(uuid.uuid4())

    @app.teardown_request
    def _forget_principal(_exc: BaseException | None) -> None:
        principal.leave()  # set by fhir/access.authenticate for this request only

    @app.teardown_request
    def _refresh_statistics(_exc: BaseException | None) -> None:
        # After the request's writes committed; in the background, and only once enough rows were
        # written (imports, large transactions): one comparison otherwise.
        stats.refresh()

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    register_error_handlers(app)
    routes.register(app)
    hl7v2.register(app)
    app.register_blueprint(health_bp)
    pages.register(app)  # /app/: the coordinators' pages (session sign-in, same access rule)
    metrics.init_app(app)  # GET /metrics, DB pool gauge
    openapi.init_app(app)  # GET /openapi.json (the non-FHIR endpoints)
    logs.init_app(app, settings)  # JSON logs, access line + latency histogram per request
    return app
