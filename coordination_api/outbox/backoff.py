"""When to try again: exponential backoff, capped, with jitter; and when to stop (dead-letter).

One formula for every retry of the worker (connector jobs, subscription notifications):

    ceiling(n) = min(cap, base * 2 ** min(n - 1, MAX_DOUBLINGS))
    delay(n)   = ceiling(n) * (1 - jitter * u),  u uniform in [0, 1)

The cap comes first, then the jitter: a delay never exceeds ``cap`` (the old notification formula let
it reach cap * 1.2) and every attempt past the cap still gets its share of randomness (the old job
formula, jitter first then cap, sent every capped retry at exactly ``cap``, all workers together).

The jitter is *equal jitter* ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015): a fixed
part of the delay plus a random share, here ``jitter`` (the RETRY_JITTER setting, 0 to 1; 0.5 is the
blog's equal jitter). Not *full* jitter (a delay anywhere in [0, ceiling)): a retry may then come at
once after a failure, so the attempts before the dead-letter (``max_attempts``) could be spent within
seconds against a service that is down for minutes, and the schedule the docs promise would not hold.
The random share is enough for what jitter is for here: workers that failed together after an outage
do not all come back in the same instant.

The exponent stops at MAX_DOUBLINGS, so a huge attempt count never overflows a float (2.0 ** 1024
raises); with any base above cap / 2 ** 1000 the cap is reached long before.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

MAX_DOUBLINGS = 1000
_RANDOM = secrets.SystemRandom()


def ceiling(attempt: int, base: float, cap: float) -> float:
    """The delay after failed attempt number ``attempt`` (1 = the first) before its jitter: ``base``
    doubling at each attempt, at most ``cap``; never negative."""
    doublings = min(max(attempt - 1, 0), MAX_DOUBLINGS)
    # A float product overflows to inf, never raises: min() then gives the cap.
    return max(0.0, min(cap, base * 2.0**doublings))


def backoff(
    attempt: int, base: float, cap: float, jitter: float, rand: Callable[[], float] = _RANDOM.random
) -> float:
    """Seconds to wait after failed attempt ``attempt``: its ceiling less a random share of at most
    ``jitter`` of it (clamped to 0..1); ``rand`` returns a float in [0, 1)."""
    share = min(max(jitter, 0.0), 1.0)
    return ceiling(attempt, base, cap) * (1.0 - share * rand())


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff settings and, with ``max_attempts``, the dead-letter rule."""

    base: float
    cap: float
    jitter: float
    max_attempts: int | None = None  # None: retried until the caller's own limit (a retry period)

    def delay(self, attempts: int) -> float:
        return backoff(attempts, self.base, self.cap, self.jitter)

    def after(self, attempts: int, *, retryable: bool = True) -> float | None:
        """Seconds until the next attempt after ``attempts`` failed ones, or None: dead-letter (the
        failure is final, or that was the last attempt allowed)."""
        if not retryable or (self.max_attempts is not None and attempts >= self.max_attempts):
            return None
        return self.delay(attempts)
