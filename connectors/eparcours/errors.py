"""What the e-parcours platform's answers mean when they are not a success."""

from __future__ import annotations

import orjson

from connectors.errors import ConnectorError, Failure

SERVICE = "e-parcours"
NOT_CONFIGURED = "e-parcours connector not configured (COORDINATION_EPARCOURS_URL)"


def check_response(raw: bytes) -> None:
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
