"""The one outbox primitive: rows claimed under a lease, renewed, released or settled, and retried
with one backoff formula until a dead-letter (ARCHITECTURE.md "outbox/"). Used by the connector jobs,
the subscription delivery worker, the dispatch timers and the Bulk Data export jobs. Framework-free:
it knows tables and connections, not the app."""

from coordination_api.outbox.backoff import RetryPolicy, backoff, ceiling
from coordination_api.outbox.queue import US, Held, Queue, claiming, lease_end

__all__ = ["US", "Held", "Queue", "RetryPolicy", "backoff", "ceiling", "claiming", "lease_end"]
