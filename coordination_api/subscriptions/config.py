"""Delivery settings of the subscriptions package (all delays in seconds)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SubscriptionSettings:
    # Endpoint safety: plain http:// and loopback addresses only when allowed (CONTRACT: `make run`
    # allows http://127.0.0.1; production turns it off). Networks (CIDR) exempt from the SSRF guard.
    allow_loopback: bool = True
    allowed_networks: tuple[str, ...] = ()
    # email (MSSanté) channel: the domains its mailto: endpoints may name ("*.mssante.fr"); empty (the
    # default): no mailto: endpoint is accepted.
    mail_domains: tuple[str, ...] = ()
    # HTTP timeouts of one POST (connect, read).
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    # Retries: exponential backoff base * 2**(attempt-1), capped, then up to retry_jitter of it taken
    # off at random (coordination_api/outbox/backoff.py), for retry_period;
    # after that the subscription goes to status "error" (its rows stay for $events replay).
    retry_base: float = 2.0
    retry_cap: float = 600.0
    retry_jitter: float = 0.2
    retry_period: float = 24 * 3600.0
    # A claimed row / handshake belongs to its worker for this long (then another may retry it).
    lease: float = 20.0  # renewed while a send runs (outbox Queue.kept); a crashed worker's row waits it
    # Sends at once (a thread each), and at most per_origin of them to one origin (endpoint.origin_key; all
    # mailto: endpoints count as one origin): a hanging endpoint holds per_origin threads, not the worker.
    concurrency: int = 8
    per_origin: int = 2
    # Idle wait of the worker loop between polls, and rows claimed per pass.
    poll_interval: float = 1.0
    batch_size: int = 50
    # Most events one $events answer replays.
    max_events: int = 1000
    # Ceiling on a subscription's backport-max-count (the server may send fewer events per Bundle).
    max_count_cap: int = 100

    @classmethod
    def resolve(cls, settings: Any) -> SubscriptionSettings:
        """From the app settings when they carry a ``subscriptions`` field, else the defaults."""
        found = getattr(settings, "subscriptions", None)
        return found if isinstance(found, SubscriptionSettings) else cls()
