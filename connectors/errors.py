"""What an outside service did wrong, in words our callers understand (never a socket or HTTP error).

Each connector raises these (or a subclass of its own); `coordination_api.errors` translates them at
the boundary: a timeout is a 504, anything else from the outside a 502, both as OperationOutcome.
"""

from __future__ import annotations

import enum


class Failure(enum.Enum):
    """Why a call to an outside service did not give a usable answer."""

    TIMEOUT = "timeout"  # connect or read timeout
    UNAVAILABLE = "unavailable"  # refused connection, DNS, TLS handshake, 5xx, 429
    BAD_ANSWER = "bad-answer"  # the service answered, but not what its interface promises
    REFUSED = "refused"  # 4xx: the service understood and said no (credentials, validation)
    NOT_CONFIGURED = "not-configured"  # the operator has not set this service up


class ConnectorError(Exception):
    """A failed call to an outside service.

    ``service`` names it for operators (``"annuaire-sante"``); ``retryable`` says whether the same call
    may succeed later (timeouts, unavailability), which is what the outbox and enrichment retries use.
    The message never holds a credential or patient data.
    """

    def __init__(
        self, service: str, failure: Failure, message: str, *, status: int | None = None, body: bytes = b""
    ) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.failure = failure
        self.status = status
        # The start of a refusal's body (e.g. an OperationOutcome), for the caller to read; never logged.
        self.body = body

    @property
    def retryable(self) -> bool:
        return self.failure in {Failure.TIMEOUT, Failure.UNAVAILABLE}
