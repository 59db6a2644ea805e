"""Regional e-parcours platform: forward encounter events and care-plan changes as FHIR messages.

The platform receives a FHIR R4 ``message`` Bundle (messaging.html: MessageHeader first, its focus
and the subject Patient after it) by POST over mutual TLS (client certificate and key from files,
the platform's CA). Each message has a stable id derived from the resource version it carries, so a
re-send after a crash (at least once, through the connector-jobs outbox) is recognisable.
"""

from connectors.eparcours.client import EparcoursPlatform, NullPlatform, Platform, PlatformSettings
from connectors.eparcours.errors import NOT_CONFIGURED, SERVICE, check_response
from connectors.eparcours.mapping import EVENT_SYSTEM, message_bundle, message_id

__all__ = [
    "EVENT_SYSTEM",
    "NOT_CONFIGURED",
    "SERVICE",
    "EparcoursPlatform",
    "NullPlatform",
    "Platform",
    "PlatformSettings",
    "check_response",
    "message_bundle",
    "message_id",
]
