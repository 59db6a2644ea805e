"""HL7 v2 ADT intake wired to the discharge path: ``POST /hl7v2`` (ER7 body) and the MLLP listener.

Both doors hand the raw message to ``connectors.hl7v2.handle`` with ``discharge.process`` as the step
that stores the encounter event, and answer with the ACK it builds (MSA AA / AE / AR, ERR). Over HTTP a
Bearer token is required (CONTRACT) and the status follows the ACK: 200 AA, 422 AE, 400 AR (403 when
the sender is not one the client may send as), with the ACK as the body (``x-application/hl7-v2+er7``).
Every message is audited, over MLLP too.

Senders (issue 16): over HTTP the message is the token's client's, and MSH-3^MSH-4 must be one of its
registered senders. Plain MLLP has no credentials: the listener accepts only ``COORDINATION_MLLP_SENDERS``
(any sender only when security is disabled) and keys its messages by ``COORDINATION_MLLP_CLIENT``. MLLP
over TLS maps the verified client certificate to a registered client (``COORDINATION_MLLP_TLS_CLIENTS``),
whose registered senders apply; an unmapped certificate's connection is closed.
"""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
import time
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request

from auth.audit import AuditRecord, AuditUnavailableError, audit_row
from auth.policy import Principal
from auth.scopes import ScopeSet
from connectors.events import EncounterEvent, EventError
from connectors.hl7v2 import Limits, Options, handle
from connectors.hl7v2.mllp import Handler, MllpServer, Peer
from coordination_api import metrics
from coordination_api.config import Hl7v2Settings, Settings
from coordination_api.coordination.intake import discharge
from coordination_api.errors import Category, FhirError, from_database_error
from coordination_api.fhir import access
from coordination_api.fhir.context import Services
from coordination_api.net import is_loopback

log = logging.getLogger(__name__)
bp = Blueprint("hl7v2", __name__)
ER7 = "x-application/hl7-v2+er7"
_STATUS = {"AA": 200, "AE": 422, "AR": 400}
_MSA = re.compile(rb"(?:^|\r)MSA\|(A[AER])")


def ack_code(ack: bytes) -> str:
    match = _MSA.search(ack)
    return match.group(1).decode() if match else "AE"


def limits(settings: Settings) -> Limits:
    return Limits(settings.hl7v2.max_repetitions, settings.hl7v2.max_field_bytes)


def mapping_options(config: Hl7v2Settings) -> Options:
    return Options(config.local_id_types, config.authorities)


class DatabaseUnavailableError(EventError):
    """The database cannot take the message now (unreachable, lock or statement timeout, a concurrent
    write that won a race): HL7 v2.5 2.9.2.2 AR, "rejected for reasons unrelated to the content (e.g.
    the system is down)"; ERR 207. Nothing was stored: the sender resends the same message later."""

    def __init__(self, reason: str, retry_after: str) -> None:
        super().__init__(reason, code="207", rejected=True)
        self.retry_after = retry_after


class _Intake:
    """``process(event)`` for one door and origin; remembers a refused sender (HTTP 403) and a database
    outage (HTTP 503 with Retry-After)."""

    def __init__(self, svc: Services, origin: discharge.Origin) -> None:
        self.svc = svc
        self.origin = origin
        self.sender_refused = False
        self.unavailable: DatabaseUnavailableError | None = None

    def __call__(self, event: EncounterEvent) -> None:
        self.sender_refused, self.unavailable = False, None
        try:
            discharge.process(self.svc, event, self.origin)
        except discharge.SenderNotAllowedError:
            self.sender_refused = True
            raise
        except EventError:
            raise
        except Exception as exc:
            transient = from_database_error(exc)
            if transient is not None and transient.category is not Category.TRANSIENT:
                transient = None  # a statement too large: no retry cures it
            if isinstance(exc, FhirError) and exc.category in {Category.CONFLICT, Category.TRANSIENT}:
                transient = exc  # a concurrent write won a race: a retry is cured as $process-message's
            if transient is None:
                raise
            orig = getattr(exc, "orig", None) or exc  # type and SQLSTATE only: no patient data
            log.warning(
                "HL7 v2: database unavailable (%s, sqlstate %s)",
                type(orig).__name__,
                getattr(orig, "sqlstate", None),
            )
            self.unavailable = DatabaseUnavailableError(
                transient.diagnostics, transient.headers.get("Retry-After", "2")
            )
            raise self.unavailable from None


@bp.before_request
def _authenticate() -> None:
    access.authenticate()
    for resource_type in ("Patient", "Encounter"):
        access.require(resource_type, "c")
        access.require(resource_type, "u")


@bp.after_request
def _audit(response: Response) -> Response:
    return access.audit_response(response)


@bp.post("/hl7v2")
def receive() -> Response:
    raw = request.get_data(cache=False)
    if not raw:
        raise FhirError(Category.INVALID, "POST /hl7v2 takes an HL7 v2 message (ER7) as its body")
    svc: Services = current_app.extensions["coordination"]
    intake = _Intake(svc, discharge.origin_for(access.principal()))
    settings: Settings = current_app.config["SETTINGS"]
    ack = handle(raw, intake, limits(settings), mapping_options(settings.hl7v2))
    code = ack_code(ack)
    metrics.hl7v2_message("http", code)
    if g.get("audit") is not None:
        g.audit.add_entity(f"hl7v2/{code}")
    status = 403 if intake.sender_refused else _STATUS[code]
    response = Response(ack, status=status, content_type=f"{ER7}; charset=utf-8")
    if intake.unavailable is not None:  # AR 207: retry later (RFC 9110 section 10.2.3)
        response.status_code = 503
        response.headers["Retry-After"] = intake.unavailable.retry_after
    return response


def register(app: Flask) -> None:
    app.register_blueprint(bp)


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def certificate_client(config: Hl7v2Settings, peer: Peer) -> str | None:
    """The client id ``COORDINATION_MLLP_TLS_CLIENTS`` maps this verified certificate to, if any:
    ``sha256:<hex>`` (colons allowed) matches the DER certificate, ``cn:<name>`` its subject CN."""
    if peer.certificate_der is None:
        return None
    digest = fingerprint(peer.certificate_der)
    names = [
        value
        for rdn in (peer.certificate or {}).get("subject", ())
        for key, value in rdn
        if key == "commonName"
    ]
    for key, client_id in config.tls_clients:
        kind, _, wanted = key.partition(":")
        if kind.lower() == "sha256" and wanted.replace(":", "").lower() == digest:
            return client_id
        if kind.lower() == "cn" and wanted in names:
            return client_id
    return None


def server_context(config: Hl7v2Settings) -> ssl.SSLContext:
    """TLS 1.2+ requiring a client certificate signed by the configured CA (IHE ATNA secure node)."""
    if not (config.tls_key and config.tls_ca_file):
        raise ValueError("MLLP over TLS needs COORDINATION_MLLP_TLS_KEY and COORDINATION_MLLP_TLS_CA_FILE")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=config.tls_ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


def plain_host_allowed(host: str, config: Hl7v2Settings) -> bool:
    """Plain MLLP (no TLS, no credentials) binds loopback only unless explicitly allowed."""
    return bool(config.tls_cert) or config.allow_remote_plain or is_loopback(host)


def mllp_server(
    app: Flask,
    host: str,
    port: int,
    *,
    max_message_bytes: int,
    idle_timeout: float | None = None,
    config: Hl7v2Settings | None = None,
) -> MllpServer:
    """The MLLP listener of ``coordination mllp``: each message stored, audited and acknowledged."""
    settings: Settings = app.config["SETTINGS"]
    config = config or settings.hl7v2
    if not plain_host_allowed(host, config):
        raise ValueError(
            f"Plain MLLP (no TLS) listens on loopback only; set COORDINATION_MLLP_ALLOW_REMOTE_PLAIN "
            f"to bind {host}, or configure COORDINATION_MLLP_TLS_CERT"
        )
    svc: Services = app.extensions["coordination"]
    writer = app.extensions["audit_writer"]
    caps = Limits(config.max_repetitions, config.max_field_bytes)
    mapping = mapping_options(config)
    listener = frozenset(config.senders)

    def handler_for(origin: discharge.Origin) -> Handler:
        intake = _Intake(svc, origin)
        who = Principal(client_id=origin.client, scopes=ScopeSet((), frozenset()))

        def handler(raw: bytes) -> bytes:
            with app.app_context():
                ack = handle(raw, intake, caps, mapping)
                code = ack_code(ack)
                metrics.hl7v2_message("mllp", code)
                record = AuditRecord("operation", "MLLP", "mllp", None, None, entities=[f"hl7v2/{code}"])
                try:
                    writer.write(audit_row(record, who, _STATUS[code], int(time.time() * 1_000_000)))
                except AuditUnavailableError:
                    log.error("MLLP: a message could not be audited")
                return ack

        return handler

    def session(peer: Peer) -> Handler | None:
        if not config.tls_cert:
            if settings.security_disabled and not listener:
                return handler_for(discharge.Origin(config.client, registered=False, any_sender=True))
            return handler_for(discharge.Origin(config.client, registered=False, listener=listener))
        client_id = certificate_client(config, peer)
        if client_id is None or app.extensions["auth"].store.client(client_id) is None:
            return None  # not a registered client: nothing is read from this connection
        return handler_for(discharge.Origin(client_id, listener=listener or None))

    options: dict[str, Any] = {}
    if config.tls_cert:
        options["ssl_context"] = server_context(config)
    return MllpServer(
        host,
        port,
        session=session,
        max_message_bytes=max_message_bytes,
        idle_timeout=idle_timeout if idle_timeout is not None else config.idle_timeout,
        max_connections=config.max_connections,
        max_connections_per_peer=config.max_connections_per_peer,
        frame_deadline=config.frame_deadline,
        **options,
    )
