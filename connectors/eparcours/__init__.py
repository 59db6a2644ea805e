"""Regional e-parcours platform: forward encounter events and care-plan changes as FHIR messages.

The platform receives a FHIR R4 ``message`` Bundle (messaging.html: MessageHeader first, its focus
and the subject Patient after it) by POST over mutual TLS (client certificate and key from files,
the platform's CA). Each message has a stable id derived from the resource version it carries, so a
re-send after a crash (at least once, through the connector-jobs outbox) is recognisable.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from connectors import http
from connectors.errors import ConnectorError, Failure

SERVICE = "e-parcours"
EVENT_SYSTEM = "https://coordination.cpts.fr/fhir/CodeSystem/eparcours-event"
log = logging.getLogger(__name__)


class Platform(Protocol):
    configured: bool

    def forward(self, message: dict[str, Any]) -> None:
        """Deliver one message Bundle; ConnectorError when it was not accepted."""


NOT_CONFIGURED = "e-parcours connector not configured (COORDINATION_EPARCOURS_URL)"


class NullPlatform:
    """Nothing configured: nothing is sent, and the caller is told so (never a success)."""

    configured = False

    def forward(self, message: dict[str, Any]) -> None:
        raise ConnectorError(SERVICE, Failure.NOT_CONFIGURED, NOT_CONFIGURED)


@dataclass(frozen=True)
class PlatformSettings:
    url: str  # where messages are POSTed (e.g. the platform's [base]/$process-message)
    http: http.HttpSettings


class EparcoursPlatform:
    """POST over mutual TLS; sent once per call (the outbox decides about retrying)."""

    configured = True

    def __init__(self, settings: PlatformSettings) -> None:
        self.settings = settings
        self._session = http.session(settings.http, {"Accept": "application/fhir+json"})

    def forward(self, message: dict[str, Any]) -> None:
        response = http.call(
            SERVICE,
            self._session,
            self.settings.http,
            "POST",
            self.settings.url,
            data=orjson.dumps(message),
            headers={"Content-Type": "application/fhir+json"},
        )
        try:
            if not 200 <= response.status_code < 300:
                raise ConnectorError(SERVICE, Failure.BAD_ANSWER, f"answered HTTP {response.status_code}")
            if response.content:
                _check_response(response.content)
        finally:
            response.close()

    def check(self) -> str:
        """A cheap call (``coordination connectors check``): mutual TLS handshake and an HTTP answer."""
        return http.probe(SERVICE, self._session, self.settings.http, self.settings.url)

    def close(self) -> None:
        self._session.close()


def _check_response(raw: bytes) -> None:
    """A response message (messaging.html "response") may still say the platform failed."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConnectorError(SERVICE, Failure.BAD_ANSWER, "answer is not JSON") from exc
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        return  # an OperationOutcome or an empty answer with 2xx: accepted
    entries = body.get("entry") or []
    header = entries[0].get("resource") if entries and isinstance(entries[0], dict) else None
    response = header.get("response") if isinstance(header, dict) else None
    code = response.get("code") if isinstance(response, dict) else None
    if code == "transient-error":
        raise ConnectorError(SERVICE, Failure.UNAVAILABLE, "the platform answered transient-error")
    if code == "fatal-error":
        raise ConnectorError(SERVICE, Failure.REFUSED, "the platform answered fatal-error")


def message_id(source: str, res_type: str, res_id: str, version: int) -> str:
    """The same resource version always travels under the same message id (receivers deduplicate)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{source}/{res_type}/{res_id}/_history/{version}"))


def message_bundle(
    focus: dict[str, Any], patient: dict[str, Any] | None, *, source: str, sender: str = ""
) -> dict[str, Any]:
    """A FHIR message Bundle telling that ``focus`` (a stored version, with meta) changed."""
    res_type = str(focus["resourceType"])
    res_id = str(focus["id"])
    version = int((focus.get("meta") or {}).get("versionId") or 0)
    base = source.rstrip("/")

    def full_url(kind: str, ident: str) -> str:
        # Absolute when our public base URL is known, else a stable urn:uuid (Bundle.entry.fullUrl).
        if base.startswith(("http://", "https://")):
            return f"{base}/{kind}/{ident}"
        return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{base}/{kind}/{ident}')}"

    focus_url = full_url(res_type, res_id)
    header: dict[str, Any] = {
        "resourceType": "MessageHeader",
        "id": message_id(base, res_type, res_id, version),
        "eventCoding": {"system": EVENT_SYSTEM, "code": f"{res_type.lower()}-change"},
        "source": {"name": sender or "coordination CPTS", "endpoint": base or "urn:coordination-cpts"},
        "focus": [{"reference": focus_url}],
    }
    entries = [
        {"fullUrl": f"urn:uuid:{header['id']}", "resource": header},
        {"fullUrl": focus_url, "resource": focus},
    ]
    if patient is not None:
        entries.append({"fullUrl": full_url("Patient", str(patient["id"])), "resource": patient})
    return {
        "resourceType": "Bundle",
        "id": header["id"],
        "type": "message",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "entry": entries,
    }
