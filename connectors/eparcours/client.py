"""The platform: a POST of one message Bundle over mutual TLS, sent once per call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from connectors import http
from connectors.eparcours.errors import NOT_CONFIGURED, SERVICE, check_response
from connectors.errors import ConnectorError, Failure


class Platform(Protocol):
    configured: bool

    def forward(self, message: dict[str, Any]) -> None:
        """Deliver one message Bundle; ConnectorError when it was not accepted."""


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
                check_response(response.content)
        finally:
            response.close()

    def check(self) -> str:
        """A cheap call (``coordination connectors check``): mutual TLS handshake and an HTTP answer."""
        return http.probe(SERVICE, self._session, self.settings.http, self.settings.url)

    def close(self) -> None:
        self._session.close()
