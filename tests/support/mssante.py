"""A stand-in MSSanté operator: an SMTP server (aiosmtpd) that requires STARTTLS and our client certificate,
keeping what it receives. Needs a ``pki`` fixture."""

from __future__ import annotations

import asyncio
import contextlib
import email
import ssl
from collections.abc import Iterator
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.support.net import free_port
from tests.support.pki import Pki


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.delay = 0.0  # seconds the relay takes to accept a message

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        if self.delay:
            await asyncio.sleep(self.delay)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


class SmtpServer:
    def __init__(self, pki: Pki, port: int) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.server_cert, pki.server_key)
        context.load_verify_locations(pki.ca)
        context.verify_mode = ssl.CERT_REQUIRED  # MSSanté operators authenticate the sending system
        self.inbox = Inbox()
        self.port = port
        self.controller = Controller(
            self.inbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True
        )

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def smtp(pki: Pki) -> Iterator[SmtpServer]:
    server = SmtpServer(pki, free_port())
    server.start()
    yield server
    with contextlib.suppress(AssertionError, RuntimeError):  # already stopped by the test
        server.stop()
