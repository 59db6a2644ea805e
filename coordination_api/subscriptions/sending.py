"""Bounded concurrent sending: one slow or dead endpoint never holds up the others (issue 17).

Each claimed notification stream (a subscription's pending events, in order), handshake or heartbeat
is sent on a small thread pool: at most ``concurrency`` sends at once, and at most ``per_origin`` of
them to one origin (the subscription's stored origin key, endpoint.py ``origin_key``: one per listener
however its endpoint is spelled, by the address it resolved to when written; every ``mailto:``
endpoint shares the one SMTP relay). While an origin is at its cap, the claim queries leave its rows
alone (an equality on that column, alike on both databases), so a
hanging endpoint occupies ``per_origin`` threads for one read timeout per attempt and the rest keep
flowing. Bound (docs/operations.md): with fewer than ``concurrency / per_origin`` hanging origins, a
healthy endpoint's notification waits at most one poll interval plus its own send.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from sqlalchemy import ColumnElement, true

log = logging.getLogger(__name__)


def outside(column: ColumnElement[str], origins: list[str]) -> ColumnElement[bool]:
    """SQL: the origin key ``column`` (subscription_state.origin, NOT NULL) is none of ``origins``
    (the saturated ones)."""
    if not origins:
        return true()
    return column.not_in(origins)


class Sender:
    """A pool that runs sends under the total and per-origin caps; ``drain`` waits for them all."""

    def __init__(self, concurrency: int, per_origin: int) -> None:
        self.concurrency = max(1, concurrency)
        self.per_origin = max(1, min(per_origin, self.concurrency))
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="delivery")
        self._lock = threading.Lock()
        self._busy: Counter[str] = Counter()
        self._futures: set[Future[None]] = set()

    def free(self) -> int:
        with self._lock:
            return self.concurrency - sum(self._busy.values())

    def saturated(self) -> list[str]:
        with self._lock:
            return sorted(key for key, n in self._busy.items() if n >= self.per_origin)

    def try_submit(self, key: str, work: Callable[[], object]) -> bool:
        """Run ``work`` on the pool if both caps allow it now; False (nothing done) otherwise."""
        with self._lock:
            if sum(self._busy.values()) >= self.concurrency or self._busy[key] >= self.per_origin:
                return False
            self._busy[key] += 1
            future = self._pool.submit(self._run, key, work)
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return True

    def _run(self, key: str, work: Callable[[], object]) -> None:
        try:
            work()
        except Exception:  # a failed send (database gone…) is retried after its lease; keep the pool
            log.exception("notification send failed")
        finally:
            with self._lock:
                self._busy[key] -= 1
                if self._busy[key] <= 0:
                    del self._busy[key]

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def busy(self) -> int:
        with self._lock:
            return sum(self._busy.values())

    def drain(self, timeout: float | None = None) -> None:
        """Wait until every submitted send has finished (one synchronous pass; shutdown)."""
        with self._lock:
            pending = set(self._futures)
        if pending:
            wait(pending, timeout=timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
