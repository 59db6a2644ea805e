"""Forwarding to the regional e-parcours platform (issue 8), through the connector-jobs outbox.

Each stored version of a forwarded type (Encounter and CarePlan by default) enqueues a job in the
write's own transaction (nothing is forwarded that was not committed; nothing committed is lost);
the delivery worker sends it as a FHIR message over mutual TLS (connectors/eparcours), retried with
backoff while the platform is down. Deletions are not forwarded. A patient who opposes sharing with
everyone (a Consent deny without actor, CSP L.1110-4 right to object) is not forwarded.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection

from auth.schema import consent_deny
from connectors import http
from connectors.eparcours import (
    NOT_CONFIGURED,
    SERVICE,
    EparcoursPlatform,
    NullPlatform,
    Platform,
    PlatformSettings,
    message_bundle,
)
from connectors.errors import ConnectorError, Failure
from coordination_api import jobs
from coordination_api.config import EparcoursSettings, Settings
from coordination_api.storage.indexer import UNRESOLVED
from coordination_api.storage.repository import Repository, Stored, now_us
from coordination_api.storage.schema import history_compartment

log = logging.getLogger(__name__)
FORWARD = "eparcours-forward"


def build(settings: EparcoursSettings) -> Platform:
    if not settings.url:
        return NullPlatform()
    return EparcoursPlatform(
        PlatformSettings(
            url=settings.url,
            http=http.HttpSettings(
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
                verify=settings.ca_file or True,
                client_cert=settings.client_cert or None,
                client_key=settings.client_key or None,
            ),
        )
    )


def init_app(app: Flask, repo: Repository, settings: Settings) -> None:
    """The job that sends versions (always known: a job queued before the platform was unconfigured
    ends dead with "not configured", never done) and, when a platform is configured, the write hook
    that queues them."""
    config = settings.eparcours
    app.extensions["eparcours"] = build(config)
    jobs.register(app, FORWARD, forward_job)
    if not config.url:
        return
    types = frozenset(config.types)

    def on_written(conn: Connection, stored: list[Stored]) -> None:
        for item in stored:
            if item.res_type in types and not item.deleted:
                payload = {"type": item.res_type, "id": item.res_id, "version": item.version}
                jobs.enqueue(conn, FORWARD, payload)

    repo.on_written.append(on_written)


def _opposed(conn: Connection, patient_id: str) -> bool:
    now = now_us()
    c = consent_deny
    return (
        conn.execute(
            select(c.c.res_pk)
            .where(
                c.c.patient_id == patient_id,
                c.c.actor == "*",
                and_(
                    or_(c.c.start_us.is_(None), c.c.start_us <= now),
                    or_(c.c.end_us.is_(None), c.c.end_us >= now),
                ),
            )
            .limit(1)
        ).first()
        is not None
    )


def _patient_id(resource: dict[str, Any]) -> str | None:
    ref = (
        (resource.get("subject") or {}).get("reference")
        if isinstance(resource.get("subject"), dict)
        else None
    )
    if isinstance(ref, str) and ref.startswith("Patient/"):
        return ref.split("/", 1)[1].split("/", 1)[0]
    return None


def forward_job(app: Flask, payload: dict[str, Any]) -> None:
    """Send one stored version (jobs.py retries a retryable ConnectorError, dead-letters the rest)."""
    settings: Settings = app.config["SETTINGS"]
    repo: Repository = app.extensions["coordination"].repo
    platform: Platform = app.extensions["eparcours"]
    if not platform.configured:  # a job queued before the platform was unconfigured: dead, with why
        raise ConnectorError(SERVICE, Failure.NOT_CONFIGURED, NOT_CONFIGURED)
    with repo.reading() as conn:
        stored = repo.version(conn, str(payload["type"]), str(payload["id"]), int(payload["version"]))
        if stored is None or stored.deleted:
            return  # gone (expunged): nothing left to tell
        focus = stored.json()
        # The patients are the version's own compartments (history_compartment: whatever form the
        # subject took); one this server cannot name, or any objection to everyone: not forwarded.
        hc = history_compartment
        holders = set(
            conn.execute(
                select(hc.c.patient_id).where(hc.c.res_pk == stored.pk, hc.c.version == stored.version)
            ).scalars()
        )
        patient_id = _patient_id(focus)
        if UNRESOLVED in holders or (patient_id is not None and patient_id not in holders):
            log.info("e-parcours: %s/%s not forwarded (no patient of ours)", stored.res_type, stored.res_id)
            return
        patient = repo.current(conn, "Patient", patient_id) if patient_id else None
        if any(_opposed(conn, p) for p in holders):
            log.info("e-parcours: %s/%s not forwarded (the patient objects)", stored.res_type, stored.res_id)
            return
    message = message_bundle(
        focus,
        patient.json() if patient is not None and not patient.deleted else None,
        source=settings.public_base_url,
        sender=settings.eparcours.sender,
    )
    platform.forward(message)
