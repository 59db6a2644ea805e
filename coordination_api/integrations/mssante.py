"""The application side of MSSanté (the health professionals' secure mail, connectors/mssante): the
sender the settings describe. Email-channel Subscriptions are mailed through it by the delivery worker
(subscriptions/worker.py); ``coordination connectors check`` greets its relay."""

from __future__ import annotations

from connectors import mssante
from coordination_api.config import Settings


def mail_sender(settings: Settings) -> tuple[mssante.MailSender, str]:
    """The MSSanté sender of the app's settings (the Null one when no SMTP host is configured)."""
    config = settings.mssante
    if not config.smtp_host:
        return mssante.NullSender(), "notifications@localhost"
    smtp = mssante.SmtpSettings(
        host=config.smtp_host,
        port=config.smtp_port,
        timeout=config.timeout,
        ca_file=config.ca_file,
        client_cert=config.client_cert,
        client_key=config.client_key,
        username=config.username,
        password=config.password,
    )
    return mssante.SmtpSender(smtp), config.from_address or "notifications@localhost"
