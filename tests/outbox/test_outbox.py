"""The outbox primitive (coordination_api/outbox) on both databases: claims under a lease, a lapsed
lease taken over, the dead-letter, and the one backoff formula."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, insert, select

from coordination_api.outbox import US, Queue, RetryPolicy, backoff, ceiling, claiming, lease_end
from coordination_api.outbox.backoff import MAX_DOUBLINGS
from coordination_api.storage.schema import connector_job as j

KIND = "t-outbox"  # no handler of the app runs it: only these tests claim these rows
QUEUE = Queue(j, attempts="attempts", due="next_attempt_us")
T0 = 1_000_000_000_000  # a fixed "now" (epoch microseconds): leases are compared with it, no sleeps


@pytest.fixture
def engine(app: Flask) -> Iterator[Engine]:
    engine: Engine = app.extensions["coordination"].repo.engine
    with claiming(engine) as conn:
        conn.execute(delete(j).where(j.c.kind == KIND))
    yield engine
    with claiming(engine) as conn:
        conn.execute(delete(j).where(j.c.kind == KIND))


def _add(engine: Engine, count: int) -> list[int]:
    with claiming(engine) as conn:
        return [
            conn.execute(
                insert(j)
                .values(
                    kind=KIND, payload="{}", status="pending", attempts=0, created_us=T0, next_attempt_us=T0
                )
                .returning(j.c.pk)
            ).scalar_one()
            for _ in range(count)
        ]


def _claim(engine: Engine, now: int, lease: int, limit: int = 10) -> list[int]:
    stmt = (
        select(j.c.pk)
        .where(j.c.kind == KIND, j.c.status == "pending", j.c.next_attempt_us <= now, QUEUE.free(now))
        .order_by(j.c.pk)
        .limit(limit)
    )
    with claiming(engine) as conn:
        return [row.pk for row in QUEUE.claim(conn, stmt, lease, attempt=True)]


def _row(engine: Engine, pk: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(j).where(j.c.pk == pk)).one()


def test_two_claimers_never_get_the_same_row(engine: Engine) -> None:
    rows = _add(engine, 40)
    rounds, batch = 4, 5
    start = threading.Barrier(2, timeout=30)

    def claimer() -> list[int]:
        got: list[int] = []
        for _ in range(rounds):
            start.wait()  # both claim at the same moment, every round
            got += _claim(engine, T0, T0 + 60 * 1_000_000, limit=batch)
        return got

    with ThreadPoolExecutor(max_workers=2) as pool:
        a, b = (future.result(timeout=60) for future in [pool.submit(claimer), pool.submit(claimer)])
    # Positive control: each claimer got a full batch every round (both really claimed at once).
    assert len(a) == len(b) == rounds * batch
    assert not set(a) & set(b)
    assert sorted(a + b) == rows
    assert {_row(engine, pk).attempts for pk in rows} == {1}


def test_an_expired_lease_is_reclaimed_and_the_late_holder_can_no_longer_write(engine: Engine) -> None:
    (pk,) = _add(engine, 1)
    first = T0 + 1_000
    assert _claim(engine, T0, first) == [pk]
    assert _claim(engine, first - 1, first + 5_000) == []  # still held
    second = first + 10_000
    assert _claim(engine, first + 1, second) == [pk]  # the lease is over: taken over
    with claiming(engine) as conn:
        assert QUEUE.renew(conn, [pk], first, first + 99_000) == 0
        assert QUEUE.settle(conn, [pk], first, "done") == 0
    assert (_row(engine, pk).status, _row(engine, pk).lease_until, _row(engine, pk).attempts) == (
        "pending",
        second,
        2,
    )
    with claiming(engine) as conn:
        assert QUEUE.settle(conn, [pk], second, "done", finished_us=second) == 1
    done = _row(engine, pk)
    assert (done.status, done.lease_until, done.finished_us) == ("done", None, second)
    assert _claim(engine, second + 10**9, second + 2 * 10**9) == []  # settled rows stay settled


def test_a_row_is_dead_lettered_after_max_attempts_and_retried_before(engine: Engine) -> None:
    (pk,) = _add(engine, 1)
    policy = RetryPolicy(base=1.0, cap=10.0, jitter=0.5, max_attempts=3)
    now, outcomes = T0, []
    while True:
        claimed = _claim(engine, now, now + 1_000)
        if not claimed:
            break
        attempts = _row(engine, pk).attempts
        delay = policy.after(attempts)
        with claiming(engine) as conn:
            if delay is None:
                assert QUEUE.settle(conn, [pk], now + 1_000, "dead", last_error="refused") == 1
            else:
                at = now + int(delay * 1_000_000)
                assert QUEUE.retry(conn, [pk], now + 1_000, at, last_error="unavailable") == 1
                assert _claim_in(conn, at - 1) == []  # not due before its time
        outcomes.append(delay is not None)
        now += 3600 * 1_000_000
    row = _row(engine, pk)
    assert outcomes == [True, True, False]
    assert (row.status, row.attempts, row.lease_until, row.last_error) == ("dead", 3, None, "refused")
    assert policy.after(1, retryable=False) is None  # a final failure: dead at once


def _claim_in(conn: Any, now: int) -> list[int]:
    stmt = select(j.c.pk).where(j.c.kind == KIND, j.c.status == "pending", j.c.next_attempt_us <= now)
    return [row.pk for row in conn.execute(stmt)]


def test_a_release_makes_the_row_claimable_at_once_and_can_undo_the_attempt(engine: Engine) -> None:
    (pk,) = _add(engine, 1)
    assert _claim(engine, T0, T0 + 10**9) == [pk]
    with claiming(engine) as conn:
        assert QUEUE.release(conn, [pk], T0 + 10**9, undo_attempt=True) == 1
    assert (_row(engine, pk).attempts, _row(engine, pk).lease_until) == (0, None)
    assert _claim(engine, T0, T0 + 10**9) == [pk]


bases = st.floats(min_value=1e-3, max_value=1e4)
caps = st.floats(min_value=1e-3, max_value=1e7)
attempts = st.integers(min_value=-5, max_value=5_000)
units = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@given(attempts, bases, caps)
def test_the_backoff_ceiling_doubles_up_to_the_cap_and_never_goes_down(
    n: int, base: float, cap: float
) -> None:
    here, after = ceiling(n, base, cap), ceiling(n + 1, base, cap)
    assert 0.0 <= here <= after <= cap
    if base * 2 <= cap:
        assert ceiling(1, base, cap) == base  # the first retry waits the base
    if n >= 1 and here < cap:
        assert after == min(cap, here * 2)  # exponential until the cap


@given(attempts, bases, caps, st.floats(min_value=0.0, max_value=1.0), units)
def test_backoff_is_within_its_jitter_below_the_ceiling(
    n: int, base: float, cap: float, jitter: float, u: float
) -> None:
    top = ceiling(n, base, cap)
    delay = backoff(n, base, cap, jitter, rand=lambda: u)
    assert top * (1 - jitter) - 1e-9 <= delay <= top
    assert delay <= backoff(n + 1, base, cap, jitter, rand=lambda: u)  # the same draw: monotone


@given(st.integers(min_value=MAX_DOUBLINGS, max_value=10**100), bases, caps, units)
def test_huge_attempt_counts_wait_the_cap_without_overflow(n: int, base: float, cap: float, u: float) -> None:
    assert ceiling(n, base, cap) == cap
    assert cap * 0.8 <= backoff(n, base, cap, 0.2, rand=lambda: u) <= cap


def test_a_kept_lease_outlives_slow_work_and_the_row_is_not_claimed_meanwhile(engine: Engine) -> None:
    """Review 20 F5: work slower than its lease (a subscriber's long timeout, a slow connector) keeps
    the row: the lease is renewed while it runs, another claimer finds nothing, and the holder's
    writes after it name the renewed lease."""

    (pk,) = _add(engine, 1)
    now = int(time.time() * US)
    lease = lease_end(now, 0.3)
    assert _claim(engine, now, lease) == [pk]
    with QUEUE.kept(engine, [pk], lease, 0.3) as held:
        time.sleep(1.0)  # three leases long
        assert _claim(engine, int(time.time() * US), lease_end(int(time.time() * US), 0.3)) == []
    assert not held.lost and held.lease != lease
    with claiming(engine) as conn:
        assert QUEUE.settle(conn, [pk], held.lease, "done") == 1
    # Positive control: without keeping, the same wait lets another claimer take the row.
    (other,) = _add(engine, 1)
    now = int(time.time() * US)
    assert _claim(engine, now, lease_end(now, 0.3)) == [other]
    time.sleep(0.5)
    later = int(time.time() * US)
    assert _claim(engine, later, lease_end(later, 0.3)) == [other]


def test_a_kept_lease_taken_over_is_reported_lost(engine: Engine) -> None:

    (pk,) = _add(engine, 1)
    now = int(time.time() * US)
    lease = lease_end(now, 0.3)
    assert _claim(engine, now, lease) == [pk]
    with claiming(engine) as conn:  # another claimer took it (as after a lapse)
        QUEUE.renew(conn, [pk], lease, lease + 1)
    with QUEUE.kept(engine, [pk], lease, 0.3) as held:
        time.sleep(0.4)
    assert held.lost and held.lease == lease
