"""What a failed SMTP exchange with the MSSanté operator means, in ConnectorError words."""

from __future__ import annotations

import smtplib
import ssl

from connectors.errors import ConnectorError, Failure

SERVICE = "mssante"
NOT_CONFIGURED = "MSSanté is not configured (COORDINATION_MSSANTE_SMTP_HOST)"


def check_error(exc: OSError | smtplib.SMTPException) -> ConnectorError:
    """A failed ``connectors check`` (EHLO, STARTTLS, login): every answer of the server is a refusal."""
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return ConnectorError(SERVICE, Failure.REFUSED, "the server does not offer STARTTLS")
    if isinstance(exc, smtplib.SMTPResponseException):
        return ConnectorError(
            SERVICE, Failure.REFUSED, f"SMTP answered {exc.smtp_code}", status=exc.smtp_code
        )
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
        return ConnectorError(SERVICE, Failure.UNAVAILABLE, f"TLS failed ({reason})")
    return _transport_error(exc)


def send_error(exc: OSError | smtplib.SMTPException) -> ConnectorError:
    """A failed submission: 4xx means try again later (RFC 5321 4.2.1), 5xx is permanent."""
    if isinstance(exc, smtplib.SMTPResponseException):
        failure = Failure.UNAVAILABLE if 400 <= exc.smtp_code < 500 else Failure.REFUSED
        return ConnectorError(SERVICE, failure, f"SMTP answered {exc.smtp_code}", status=exc.smtp_code)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return ConnectorError(SERVICE, Failure.REFUSED, "the recipient address was refused")
    if isinstance(exc, ssl.SSLError):
        return ConnectorError(SERVICE, Failure.UNAVAILABLE, "TLS handshake failed")
    return _transport_error(exc)


def _transport_error(exc: OSError | smtplib.SMTPException) -> ConnectorError:
    if isinstance(exc, TimeoutError):
        return ConnectorError(SERVICE, Failure.TIMEOUT, "SMTP timed out")
    return ConnectorError(SERVICE, Failure.UNAVAILABLE, f"SMTP failed ({type(exc).__name__})")
