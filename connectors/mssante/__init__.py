"""MSSanté (messagerie sécurisée de santé) as a notification channel: SMTP submission with STARTTLS
and the client certificate MSSanté operators require, and the message itself.

A notification mail has a readable text part, the FHIR notification Bundle attached
(``notification.json``, application/fhir+json) and, for each DocumentReference that travels in full
with its content, an IHE XDM zip (ITI TF-3 4.2.1: ``IHE_XDM/SUBSET01/METADATA.XML``, the document,
``INDEX.HTM``, ``README.TXT``) as MSSanté clients expect for structured documents.
"""

from connectors.mssante.client import MailSender, NullSender, SmtpSender, SmtpSettings
from connectors.mssante.errors import NOT_CONFIGURED, SERVICE
from connectors.mssante.mapping import notification_message, xdm_zip

__all__ = [
    "NOT_CONFIGURED",
    "SERVICE",
    "MailSender",
    "NullSender",
    "SmtpSender",
    "SmtpSettings",
    "notification_message",
    "xdm_zip",
]
