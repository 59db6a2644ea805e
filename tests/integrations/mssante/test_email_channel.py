"""The email (MSSanté) subscription channel against a real local SMTP server that requires STARTTLS
and our client certificate (aiosmtpd): mails received and parsed back, failures retried, not lost."""

from __future__ import annotations

import base64
import io
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from email.message import Message
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import orjson
import pytest
from flask import Flask
from sqlalchemy import select

from coordination_api.app import create_app
from coordination_api.config import MssanteSettings, Settings
from coordination_api.storage.schema import subscription_outbox
from coordination_api.subscriptions import worker_loop
from coordination_api.subscriptions.worker import Deliverer
from tests.conftest import Fhir, _truncate, authed, close_app
from tests.subscriptions.conftest import FAST
from tests.support.mssante import SmtpServer, smtp
from tests.support.pki import Pki, make_pki

__all__ = ["smtp"]  # fixture: the SMTP server

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
LETTER = b"%PDF-1.4 lettre de liaison"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("mss-pki"))


def _app(
    database_url: str, pki: Pki, port: int, *, cert: Path | None = None, key: Path | None = None
) -> Flask:
    settings = Settings(
        database_url=database_url,
        audit_reads="sync",
        mssante=MssanteSettings(
            smtp_host="127.0.0.1",
            smtp_port=port,
            from_address="coordination@cpts-exemple.mssante.fr",
            client_cert=str(cert or pki.client_cert),
            client_key=str(key or pki.client_key),
            ca_file=str(pki.ca),
            timeout=3.0,
        ),
    )
    app = create_app(settings)
    app.config["TESTING"] = True
    app.extensions["subscriptions"].config = replace(FAST, mail_domains=("*.mssante.fr",))
    _truncate(app)
    return app


@pytest.fixture
def mail_app(database_url: str, app: Flask, pki: Pki, smtp: SmtpServer) -> Iterator[Flask]:
    made = _app(database_url, pki, smtp.port)
    yield made
    close_app(made)


def _subscription(endpoint: str, criteria: str = "DocumentReference?status=current") -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "lettres de sortie",
        "criteria": criteria,
        "channel": {
            "type": "email",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {
                "extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": "full-resource"}]
            },
        },
    }


def _pump(app: Flask, until: Callable[[], bool], timeout: float = 15.0) -> None:
    deliverer = Deliverer(app)
    try:
        deadline = time.monotonic() + timeout
        while not until():
            deliverer.run_once()
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            time.sleep(0.05)
    finally:
        deliverer.close()


def _letter() -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11490-0"}]},
        "subject": {"reference": "Patient/p1"},
        "content": [
            {
                "attachment": {
                    "contentType": "application/pdf",
                    "title": "Lettre",
                    "data": base64.b64encode(LETTER).decode(),
                }
            }
        ],
    }


def _attachments(message: Message) -> dict[str, bytes]:
    return {
        str(part.get_filename()): part.get_payload(decode=True)  # type: ignore[misc]
        for part in message.walk()
        if part.get_filename()
    }


def test_a_document_notification_arrives_readable_with_its_fhir_bundle_and_xdm_zip(
    mail_app: Flask, smtp: SmtpServer
) -> None:
    fhir = Fhir(authed(mail_app.test_client()))
    sub = fhir.create(_subscription("mailto:dr.martin@cabinet.mssante.fr"))
    _pump(
        mail_app,
        lambda: fhir.request("GET", f"/fhir/Subscription/{sub['id']}").get_json()["status"] == "active",
    )
    assert len(smtp.inbox.messages) == 1  # the handshake, mailed: the address works
    doc = fhir.create(_letter())
    _pump(mail_app, lambda: len(smtp.inbox.messages) == 2)

    mail = smtp.inbox.messages[1]
    assert mail["To"] == "dr.martin@cabinet.mssante.fr"
    assert mail["From"] == "coordination@cpts-exemple.mssante.fr"
    assert "event 1" in mail["Subject"]
    text = next(p for p in mail.walk() if p.get_content_type() == "text/plain").get_payload(decode=True)
    assert b"DocumentReference" in text and b"event 1" in text
    files = _attachments(mail)
    bundle = orjson.loads(files["notification.json"])
    assert bundle["type"] == "history"
    status = {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}
    assert status["type"]["valueCode"] == "event-notification"
    assert bundle["entry"][1]["resource"]["id"] == doc["id"]
    with zipfile.ZipFile(io.BytesIO(files[f"xdm-{doc['id']}.zip"])) as package:
        names = set(package.namelist())
        assert {
            "IHE_XDM/SUBSET01/METADATA.XML",
            "IHE_XDM/SUBSET01/DOC0001.PDF",
            "INDEX.HTM",
            "README.TXT",
        } <= names
        assert package.read("IHE_XDM/SUBSET01/DOC0001.PDF") == LETTER
        metadata = ElementTree.fromstring(package.read("IHE_XDM/SUBSET01/METADATA.XML"))  # noqa: S314 - ours
        assert metadata.tag.endswith("SubmitObjectsRequest")


@pytest.mark.parametrize(
    ("endpoint", "channel_type", "expected"),
    [
        ("mailto:not-an-address", "email", "one e-mail address"),
        ("mailto:someone@gmail.com", "email", "not allowed"),
        ("https://cabinet.example/hook", "email", "mailto:"),
        ("mailto:dr@cabinet.mssante.fr", "rest-hook", "mailto:"),
        ("mailto:dr@cabinet.mssante.fr", "sms", "rest-hook or email"),
    ],
)
def test_bad_email_channels_are_422(mail_app: Flask, endpoint: str, channel_type: str, expected: str) -> None:
    fhir = Fhir(authed(mail_app.test_client()))
    body = _subscription(endpoint)
    body["channel"]["type"] = channel_type
    answer = fhir.request("POST", "/fhir/Subscription", body)
    assert answer.status_code == 422, answer.get_json()
    assert expected in answer.get_json()["issue"][0]["diagnostics"]


def _rows(app: Flask) -> list[Any]:
    with app.extensions["coordination"].repo.engine.connect() as conn:
        return list(conn.execute(select(subscription_outbox).order_by(subscription_outbox.c.pk)).all())


def test_smtp_down_is_retried_and_nothing_is_lost(mail_app: Flask, smtp: SmtpServer, pki: Pki) -> None:
    fhir = Fhir(authed(mail_app.test_client()))
    sub = fhir.create(_subscription("mailto:idel@cabinet.mssante.fr"))
    _pump(
        mail_app,
        lambda: fhir.request("GET", f"/fhir/Subscription/{sub['id']}").get_json()["status"] == "active",
    )
    smtp.stop()
    fhir.create(_letter())
    _pump(mail_app, lambda: bool(_rows(mail_app)) and _rows(mail_app)[0].attempts >= 2)
    (row,) = _rows(mail_app)
    assert row.status == "pending" and "mssante" in row.last_error
    restarted = SmtpServer(pki, smtp.port)
    restarted.start()
    try:
        _pump(mail_app, lambda: _rows(mail_app)[0].status == "delivered")
        assert len(restarted.inbox.messages) == 1
    finally:
        restarted.stop()


def test_a_certificate_the_operator_does_not_know_is_refused_and_retried(
    database_url: str, app: Flask, pki: Pki, smtp: SmtpServer
) -> None:
    stranger = _app(database_url, pki, smtp.port, cert=pki.stranger_cert, key=pki.stranger_key)
    try:
        fhir = Fhir(authed(stranger.test_client()))
        sub = fhir.create(_subscription("mailto:pharma@officine.mssante.fr"))
        _pump(
            stranger,
            lambda: fhir.request("GET", f"/fhir/Subscription/{sub['id']}").get_json()["status"] == "error",
        )
        state = fhir.request("GET", f"/fhir/Subscription/{sub['id']}").get_json()
        assert "handshake failed" in state["error"] and "mssante" in state["error"]
        assert smtp.inbox.messages == []
    finally:
        close_app(stranger)


def test_without_mssante_configured_nothing_is_marked_sent(database_url: str, app: Flask) -> None:
    """Review of issue 8 (honest connectors): with no SMTP server configured, an email subscription
    never becomes active and no notification is marked delivered; the error says what is missing."""
    made = create_app(Settings(database_url=database_url, audit_reads="sync"))
    made.config["TESTING"] = True
    made.extensions["subscriptions"].config = replace(FAST, mail_domains=("*.mssante.fr",))
    _truncate(made)
    try:
        fhir = Fhir(authed(made.test_client()))
        sub = fhir.create(_subscription("mailto:dr.martin@cabinet.mssante.fr"))

        def told() -> bool:
            current = fhir.request("GET", f"/fhir/Subscription/{sub['id']}").get_json()
            return current["status"] == "error" or "not configured" in str(current.get("error", ""))

        _pump(made, told)
        current = fhir.request("GET", f"/fhir/Subscription/{sub['id']}").get_json()
        assert current["status"] != "active"
        assert all(row.status != "delivered" for row in _rows(made))
    finally:
        close_app(made)


def test_a_relay_slower_than_the_lease_gets_each_mail_once(mail_app: Flask, smtp: SmtpServer) -> None:
    """Review 20 F5, the MSSanté class: the relay takes 2 s to accept a mail, the lease is 1 s. The
    worker's claim loop keeps running while the pool sends; the lease is renewed while the mail is being
    sent, so the handshake and the notification are each mailed once (not again at every lease)."""
    svc = mail_app.extensions["subscriptions"]
    svc.config = replace(svc.config, lease=1.0)
    smtp.inbox.delay = 2.0
    stop = threading.Event()
    thread = threading.Thread(target=worker_loop, args=(mail_app, stop), daemon=True)
    thread.start()

    def arrived(count: int) -> None:
        deadline = time.monotonic() + 15
        while len(smtp.inbox.messages) < count:
            assert time.monotonic() < deadline, f"{count} mails expected: {len(smtp.inbox.messages)}"
            time.sleep(0.05)

    try:
        fhir = Fhir(authed(mail_app.test_client()))
        fhir.create(_subscription("mailto:secretariat@chu-exemple.mssante.fr"))
        arrived(1)
        fhir.create(_letter())
        arrived(2)  # the letter's 2 s send is over: two leases lapsed meanwhile (the loop polls every 10 ms)
    finally:
        stop.set()
        thread.join(30)  # sends in flight finish first: a duplicate started meanwhile is in the inbox now
    assert not thread.is_alive()
    assert len(smtp.inbox.messages) == 2, [m["Subject"] for m in smtp.inbox.messages]
    # No bare wait for an absence: a re-claim after a lapsed lease counts a second attempt, even one
    # whose send the stop cancelled before it started.
    with mail_app.extensions["coordination"].repo.engine.connect() as conn:
        assert list(conn.scalars(select(subscription_outbox.c.attempts))) == [1]
