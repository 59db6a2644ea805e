"""The document recipient: one ITI-65 POST per call (the connector-jobs outbox retries it)."""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from connectors import http
from connectors.errors import ConnectorError, Failure
from connectors.mhd.errors import NOT_CONFIGURED, SERVICE
from connectors.mhd.mapping import ProvideResult, parse_response


class DocumentRecipient(Protocol):
    configured: bool

    def provide(self, bundle: dict[str, Any]) -> ProvideResult:
        """Send an ITI-65 Bundle; ConnectorError when it was not accepted."""


class NullRecipient:
    """Nothing configured: nothing is sent, and the caller is told so (never a success)."""

    configured = False

    def provide(self, bundle: dict[str, Any]) -> ProvideResult:
        raise ConnectorError(SERVICE, Failure.NOT_CONFIGURED, NOT_CONFIGURED)


class MhdRecipient:
    configured = True

    def __init__(self, url: str, settings: http.HttpSettings) -> None:
        self.url = url
        self.settings = settings
        self._session = http.session(settings, {"Accept": "application/fhir+json"})

    def provide(self, bundle: dict[str, Any]) -> ProvideResult:
        response = http.call(
            SERVICE,
            self._session,
            self.settings,
            "POST",
            self.url,
            data=orjson.dumps(bundle),
            headers={"Content-Type": "application/fhir+json"},
        )
        try:
            return parse_response(response.content, len(bundle.get("entry") or []))
        finally:
            response.close()

    def check(self) -> str:
        """A cheap call (``coordination connectors check``): TLS handshake and an HTTP answer."""
        return http.probe(SERVICE, self._session, self.settings, self.url)

    def close(self) -> None:
        self._session.close()
