"""Pro Santé Connect's refusals: whatever the provider answered, the login does not go through."""

from __future__ import annotations

from connectors.errors import ConnectorError, Failure

SERVICE = "pro-sante-connect"
NOT_CONFIGURED = "Pro Santé Connect is not configured"


def refused(message: str) -> ConnectorError:
    return ConnectorError(SERVICE, Failure.REFUSED, message)
