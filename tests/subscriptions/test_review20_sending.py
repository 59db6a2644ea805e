"""Review 20: the per-origin cap of the sending pool (subscriptions/sending.py) against endpoints
written with an upper-case scheme. ``origin()`` keys by ``urlsplit`` (which lower-cases the scheme);
the claim queries' exclusion ``outside()`` matches the endpoint text with LIKE, case-sensitive on
PostgreSQL: a saturated origin written ``HTTP://`` is never left alone by the claims, its head rows fill
every claim and are unleased again, and the healthy subscriber waits for a read timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlalchemy import select

from coordination_api.storage.schema import subscription_outbox
from coordination_api.subscriptions import worker_loop
from tests.conftest import Fhir
from tests.subscriptions.conftest import FAST
from tests.subscriptions.slow import (
    BOUND,
    SLOW,
    Troubled,
    numbers,
    subscribe,
    wait_for,
)
from tests.support.subscriptions import classic, encounter


def test_an_upper_case_scheme_endpoint_does_not_starve_a_healthy_one(
    sub_fhir: Fhir, running: Callable[[], None], troubled: Callable[[], Troubled]
) -> None:
    running()
    hanging = troubled()
    healthy = troubled()
    loud = hanging.url.replace("http://", "HTTP://", 1)  # RFC 3986 3.1: the scheme is case-insensitive
    for index in range(10):
        subscribe(sub_fhir, f"{loud}/s{index}")
    subscribe(sub_fhir, healthy.url)
    hanging.mode = "hang"
    try:
        sub_fhir.create(encounter())
        started = time.monotonic()
        wait_for(lambda: len(numbers(healthy)) == 1, BOUND * 2, "the healthy subscriber's event")
        assert time.monotonic() - started < BOUND * 2
    finally:
        hanging.release.set()


def test_one_hanging_endpoint_spelled_several_ways_does_not_take_the_whole_pool(
    sub_fhir: Fhir, running: Callable[[], None], troubled: Callable[[], Troubled]
) -> None:
    """``origin()`` keys by the netloc as written: host case, another name or address form of the same
    host, a default port written out make one endpoint several origins, each with its own per-origin
    share. Five spellings of one hanging endpoint (whoever may create Subscriptions can write them) take
    all eight sending threads; the healthy subscriber waits for a read timeout (60 s here)."""
    running()
    hanging = troubled()
    healthy = troubled()
    hosts = ["127.0.0.1", "localhost", "LOCALHOST", "LocalHost", "127.1"]  # one loopback listener
    spellings = [hanging.url.replace("127.0.0.1", host, 1) for host in hosts]
    for url in spellings:  # two subscriptions per spelling: each ordered stream holds one thread
        subscribe(sub_fhir, f"{url}/a")
        subscribe(sub_fhir, f"{url}/b")
    subscribe(sub_fhir, healthy.url)
    hanging.mode = "hang"
    try:
        sub_fhir.create(encounter())
        wait_for(lambda: len(numbers(healthy)) == 1, BOUND * 2, "the healthy subscriber's event")
    finally:
        hanging.release.set()


def test_a_subscriber_timeout_beyond_the_lease_does_not_duplicate_a_notification(
    sub_app: Any, sub_fhir: Fhir
) -> None:
    """A subscriber may ask for a longer read timeout (Backport ``backport-timeout``, uncapped); the lease
    is sized for the configured timeouts. With the sending pool the claim loop keeps running while the
    POST waits: when the lease ends, the same event is claimed and POSTed again (the first POST is still
    open), so a slow but healthy endpoint receives every event twice or more (before the pool, the one
    sending thread was the claim loop, and a single worker could not re-claim its own row)."""

    config = replace(SLOW, read_timeout=1.0, connect_timeout=0.5, lease=2.0)  # lease > connect + read
    sub_app.extensions["subscriptions"].config = config
    stop = threading.Event()
    thread = threading.Thread(target=worker_loop, args=(sub_app, stop), daemon=True)
    thread.start()
    slow = Troubled()
    slow.start()
    try:
        timeout = {
            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-timeout"
        }
        body = classic(slow.url, extension=[{**timeout, "valueUnsignedInt": 30}])
        sub = sub_fhir.create(body)
        wait_for(
            lambda: (
                sub_fhir.request("GET", f"/fhir/Subscription/{sub['id']}").get_json()["status"] == "active"
            ),
            BOUND,
            "handshake",
        )
        slow.mode = "slow"
        sub_fhir.create(encounter())
        engine = sub_app.extensions["coordination"].repo.engine

        def statuses() -> list[str]:
            with engine.connect() as conn:
                return list(conn.scalars(select(subscription_outbox.c.status)))

        # Positive wait: the one POST answered after 4 s, two leases; a re-claim meanwhile POSTs again.
        wait_for(lambda: statuses() == ["delivered"], slow.delay + BOUND, "delivery")
    finally:
        stop.set()
        thread.join(30)  # POSTs in flight finish first
        slow.stop()
        sub_app.extensions["subscriptions"].config = FAST
    assert numbers(slow) == [1], f"event numbers received: {numbers(slow)}"
    with engine.connect() as conn:  # a re-claim counts an attempt, even one the stop cancelled
        assert list(conn.scalars(select(subscription_outbox.c.attempts))) == [1]
