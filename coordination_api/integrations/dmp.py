"""The application side of the DMP (IHE MHD ITI-65 through a PDSm, connectors/mhd): the recipient, the
push job of the connector-jobs outbox, and what a document and its patient must offer. The HTTP door is
``fhir/dmp.py`` (``$dmp-push``).

The job sends the ITI-65 Bundle and records the outcome on the DocumentReference (our extension
``dmp-submission``: status requested | sent | failed | not-sent, date, the recipient's location or its
reason). A recipient that is down or slow is retried with backoff; one that refuses ends the job
(dead-letter) with ``failed`` recorded; a job queued before the DMP was unconfigured ends ``not-sent``
with that reason (never ``sent``: issue 19).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from sqlalchemy import select
from sqlalchemy.engine import Connection

from connectors import http
from connectors.errors import ConnectorError, Failure
from connectors.mhd import (
    NOT_CONFIGURED,
    DocumentRecipient,
    MhdRecipient,
    NullRecipient,
    provide_bundle,
    refusal,
)
from coordination_api import jobs
from coordination_api.config import DmpSettings, Settings
from coordination_api.core.services import Services
from coordination_api.core.validation import validate_resource
from coordination_api.core.writes import update_in
from coordination_api.storage.repository import Repository, Stored
from coordination_api.storage.schema import idx_compartment
from fhir_profiles.french_identifiers import INS_SYSTEMS, TRUSTED_STATUSES, identity_statuses

log = logging.getLogger(__name__)
PUSH = "dmp-push"
SUBMISSION = "https://coordination.cpts.fr/fhir/StructureDefinition/dmp-submission"


def build(settings: DmpSettings) -> DocumentRecipient:
    if not settings.recipient_url:
        return NullRecipient()
    return MhdRecipient(
        settings.recipient_url,
        http.HttpSettings(
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            verify=settings.ca_file or True,
            client_cert=settings.client_cert or None,
            client_key=settings.client_key or None,
        ),
    )


def init_app(app: Flask, settings: Settings) -> None:
    app.extensions["dmp"] = build(settings.dmp)
    jobs.register(app, PUSH, push_job)


# -- what the document and its patient must offer -----------------------------------------------


def submission_status(document: dict[str, Any]) -> str | None:
    for ext in document.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == SUBMISSION:
            for sub in ext.get("extension") or []:
                if isinstance(sub, dict) and sub.get("url") == "status":
                    return str(sub.get("valueCode"))
    return None


def with_submission(document: dict[str, Any], status: str, **details: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"url": "status", "valueCode": status},
        {"url": "date", "valueDateTime": datetime.now(UTC).isoformat(timespec="seconds")},
    ]
    if details.get("location"):
        parts.append({"url": "location", "valueUri": details["location"]})
    if details.get("diagnostics"):
        parts.append({"url": "diagnostics", "valueString": details["diagnostics"][:1000]})
    others = [
        e for e in document.get("extension") or [] if not (isinstance(e, dict) and e.get("url") == SUBMISSION)
    ]
    new = {k: v for k, v in document.items() if k != "meta"}
    new["extension"] = [*others, {"url": SUBMISSION, "extension": parts}]
    return new


def subject_patient(document: dict[str, Any]) -> str | None:
    subject = document.get("subject")
    ref = subject.get("reference") if isinstance(subject, dict) else None
    if isinstance(ref, str) and ref.startswith("Patient/") and ref.count("/") == 1:
        return ref.split("/", 1)[1]
    return None


def qualified_ins(patient: dict[str, Any]) -> dict[str, Any] | None:
    """The Patient's INS when its identity is validated or qualified (CONTRACT.md "French identifiers")."""
    if not identity_statuses(patient) & TRUSTED_STATUSES:
        return None
    for identifier in patient.get("identifier") or []:
        if (
            isinstance(identifier, dict)
            and identifier.get("system") in INS_SYSTEMS
            and identifier.get("value")
        ):
            return identifier
    return None


_LOCAL_BINARY = re.compile(r"^Binary/([A-Za-z0-9\-.]{1,64})$")


def document_content(
    repo: Repository,
    conn: Connection,
    document: dict[str, Any],
    patient_id: str | None,
    check_binary: Callable[[Connection, Stored], None] | None = None,
) -> tuple[bytes, str] | None:
    """The document's bytes and type: the attachment's data, or the stored Binary its url names — a
    Binary of this server (``Binary/<id>``, or under our own base) whose securityContext puts it in
    the document's patient's compartment and no other (issue 16: a push never carries another
    patient's letter)."""
    contents = document.get("content") or []
    attachment = contents[0].get("attachment") if contents and isinstance(contents[0], dict) else None
    if not isinstance(attachment, dict):
        return None
    content_type = str(attachment.get("contentType") or "application/octet-stream")
    data = attachment.get("data")
    url = str(attachment.get("url") or "")
    for base in repo.local_bases():
        if url.startswith(base + "/"):
            url = url[len(base) + 1 :]
    local = _LOCAL_BINARY.match(url)
    if data is None and local is not None:
        binary = repo.current(conn, "Binary", local.group(1))
        if binary is None or binary.deleted:
            return None
        c = idx_compartment
        holders = set(conn.execute(select(c.c.patient_id).where(c.c.res_pk == binary.pk)).scalars())
        if patient_id is None or holders != {patient_id}:
            return None
        if check_binary is not None:
            check_binary(conn, binary)  # the caller's own scopes and read decision on the Binary
        body = binary.json()
        data = body.get("data")
        content_type = str(body.get("contentType") or content_type)
    if not isinstance(data, str) or not data:
        return None
    try:
        return base64.b64decode(data, validate=True), content_type
    except (binascii.Error, ValueError):
        return None


# -- the job ------------------------------------------------------------------------------------


def record(svc: Services, res_id: str, status: str, **details: str) -> None:
    with svc.repo.writing() as conn:
        current = svc.repo.current(conn, "DocumentReference", res_id)
        if current is None or current.deleted:
            return
        new = validate_resource({**with_submission(current.json(), status, **details), "id": res_id})
        update_in(conn, svc, "DocumentReference", res_id, new)


def push_job(app: Flask, payload: dict[str, Any]) -> None:
    svc: Services = app.extensions["coordination"]
    settings: Settings = app.config["SETTINGS"]
    res_id = str(payload["document"])
    with svc.repo.reading() as conn:
        stored: Stored | None = svc.repo.current(conn, "DocumentReference", res_id)
        if stored is None or stored.deleted:
            return
        document = stored.json()
        patient_id = subject_patient(document)
        patient = svc.repo.current(conn, "Patient", patient_id) if patient_id else None
        content = document_content(svc.repo, conn, document, patient_id)
    ins = qualified_ins(patient.json()) if patient is not None and not patient.deleted else None
    if ins is None or content is None or patient is None:
        # Changed since the request was accepted: nothing to send, and the reason is recorded.
        record(svc, res_id, "failed", diagnostics="no qualified INS or no content any more")
        return
    bundle = provide_bundle(
        document, content[0], content[1], patient.json(), ins, source_oid=settings.dmp.source_oid
    )
    recipient: DocumentRecipient = app.extensions["dmp"]
    try:
        result = recipient.provide(bundle)
    except ConnectorError as exc:
        if exc.failure is Failure.NOT_CONFIGURED:
            record(svc, res_id, "not-sent", diagnostics=NOT_CONFIGURED)
        elif not exc.retryable:
            reason = refusal(exc.body) if exc.failure is Failure.REFUSED else ""
            record(svc, res_id, "failed", diagnostics=reason or str(exc))
        raise
    location = result.locations[1] if len(result.locations) > 1 else ""
    record(svc, res_id, "sent", location=location)
