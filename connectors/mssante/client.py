"""SMTP submission to the MSSanté operator, with STARTTLS and our client certificate."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Protocol

from connectors.errors import ConnectorError, Failure
from connectors.mssante.errors import NOT_CONFIGURED, SERVICE, check_error, send_error


class MailSender(Protocol):
    configured: bool

    def send(self, message: EmailMessage) -> None:
        """Hand one message to the MSSanté operator; ConnectorError when it was not accepted."""


class NullSender:
    """Nothing configured: nothing is sent, and the caller is told so (never a silent success: the
    notification stays pending and the subscription shows the error until MSSanté is configured)."""

    configured = False

    def send(self, message: EmailMessage) -> None:
        raise ConnectorError(SERVICE, Failure.NOT_CONFIGURED, NOT_CONFIGURED)


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 587
    timeout: float = 20.0
    ca_file: str = ""  # the operator's CA (else the system's); the server is always verified
    client_cert: str = ""
    client_key: str = ""
    username: str = ""
    password: str | None = field(default=None, repr=False)


class SmtpSender:
    """SMTP submission (RFC 6409) with STARTTLS (RFC 3207) and a client certificate."""

    configured = True

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    def _context(self) -> ssl.SSLContext:
        s = self.settings
        context = ssl.create_default_context(cafile=s.ca_file or None)
        if s.client_cert:
            context.load_cert_chain(s.client_cert, s.client_key or None)
        return context

    def check(self) -> str:
        """A cheap call (``coordination connectors check``): EHLO, STARTTLS with our certificate, EHLO
        again (and the login when one is configured); nothing is sent."""
        s = self.settings
        try:
            with smtplib.SMTP(s.host, s.port, timeout=s.timeout) as smtp:
                smtp.ehlo()
                smtp.starttls(context=self._context())
                code, _ = smtp.ehlo()
                if code != 250:
                    raise ConnectorError(SERVICE, Failure.REFUSED, f"EHLO after STARTTLS answered {code}")
                if s.username:
                    smtp.login(s.username, s.password or "")
        except (OSError, smtplib.SMTPException) as exc:
            raise check_error(exc) from exc
        return "EHLO, STARTTLS, EHLO accepted" + (", login accepted" if s.username else "")

    def send(self, message: EmailMessage) -> None:
        s = self.settings
        try:
            with smtplib.SMTP(s.host, s.port, timeout=s.timeout) as smtp:
                smtp.ehlo()
                smtp.starttls(context=self._context())
                smtp.ehlo()
                if s.username:
                    smtp.login(s.username, s.password or "")
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise send_error(exc) from exc
