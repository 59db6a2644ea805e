"""HL7 v2 ADT intake wired to the discharge path: ``POST /hl7v2`` (ER7 body) and the MLLP listener.

Both doors hand the raw message to ``connectors.hl7v2.handle`` with ``discharge.process`` as the step
that stores the encounter event, and answer with the ACK it builds (MSA AA / AE / AR, ERR). Over HTTP a
Bearer token is required (CONTRACT) and the status follows the ACK: 200 AA, 422 AE, 400 AR, with the
ACK as the body (``x-application/hl7-v2+er7``). Every message is audited, over MLLP too.
"""

from __future__ import annotations

import logging
import re
import time

from flask import Blueprint, Flask, Response, current_app, g, request

from auth.audit import AuditRecord, AuditUnavailableError, audit_row
from auth.policy import Principal
from auth.scopes import ScopeSet
from connectors.hl7v2 import handle
from connectors.hl7v2.mllp import MllpServer
from coordination_api import metrics
from coordination_api.coordination import discharge
from coordination_api.coordination.events import EncounterEvent
from coordination_api.errors import Category, FhirError
from coordination_api.fhir import access
from coordination_api.fhir.context import Services

log = logging.getLogger(__name__)
bp = Blueprint("hl7v2", __name__)
ER7 = "x-application/hl7-v2+er7"
_STATUS = {"AA": 200, "AE": 422, "AR": 400}
_MSA = re.compile(rb"(?:^|\r)MSA\|(A[AER])")


def ack_code(ack: bytes) -> str:
    match = _MSA.search(ack)
    return match.group(1).decode() if match else "AE"


def _process(svc: Services) -> object:
    def process(event: EncounterEvent) -> None:
        discharge.process(svc, event)

    return process


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
    ack = handle(raw, _process(svc))  # type: ignore[arg-type]
    code = ack_code(ack)
    metrics.hl7v2_message("http", code)
    if g.get("audit") is not None:
        g.audit.entities.append(f"hl7v2/{code}")
    return Response(ack, status=_STATUS[code], content_type=f"{ER7}; charset=utf-8")


def register(app: Flask) -> None:
    app.register_blueprint(bp)


def mllp_server(
    app: Flask, host: str, port: int, *, max_message_bytes: int, idle_timeout: float
) -> MllpServer:
    """The MLLP listener of ``coordination mllp``: each message stored, audited and acknowledged."""
    svc: Services = app.extensions["coordination"]
    process = _process(svc)
    writer = app.extensions["audit_writer"]

    def handler(raw: bytes) -> bytes:
        with app.app_context():
            ack = handle(raw, process)  # type: ignore[arg-type]
            code = ack_code(ack)
            metrics.hl7v2_message("mllp", code)
            record = AuditRecord("operation", "MLLP", "mllp", None, None, entities=[f"hl7v2/{code}"])
            who = Principal(client_id="mllp", scopes=ScopeSet((), frozenset()))
            try:
                writer.write(audit_row(record, who, _STATUS[code], int(time.time() * 1_000_000)))
            except AuditUnavailableError:
                log.error("MLLP: a message could not be audited")
            return ack

    return MllpServer(host, port, handler, max_message_bytes=max_message_bytes, idle_timeout=idle_timeout)
