"""backport-max-count (several events in one notification) and Subscription.end (turned off)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import select

from coordination_api.storage.schema import subscription_outbox, subscription_state
from coordination_api.subscriptions.model import MAX_COUNT
from tests.conftest import Fhir
from tests.subscriptions.conftest import Receiver
from tests.support.subscriptions import active, classic, encounter

Pump = Callable[..., None]


def _numbers(receiver: Receiver) -> list[list[int]]:
    return [
        [int(e["event-number"]) for e in note.status["notification-event"]]
        for note in receiver.of_kind("event-notification")
    ]


def _status(fhir: Fhir, sub_id: str) -> str:
    bundle = fhir.request("GET", f"/fhir/Subscription/{sub_id}/$status").get_json()
    params = {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}
    value: str = params["status"]["valueCode"]
    return value


def _instant(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_max_count_three_with_five_pending_events(sub_fhir: Fhir, receiver: Receiver, pump: Pump) -> None:
    body = classic(
        receiver.url,
        payload="application/fhir+json",
        extension=[{"url": MAX_COUNT, "valuePositiveInt": 3}],
    )
    active(sub_fhir, pump, receiver, body)
    ids = [sub_fhir.create(encounter())["id"] for _ in range(5)]  # all pending before the next pass
    pump(lambda: sum(len(n) for n in _numbers(receiver)) == 5)
    assert _numbers(receiver) == [[1, 2, 3], [4, 5]]
    notes = receiver.of_kind("event-notification")
    # In order, one entry per event after the SubscriptionStatus (Backport "Notifications").
    assert [e["resource"]["id"] for n in notes for e in n.body["entry"][1:]] == ids
    assert [n.status["events-since-subscription-start"] for n in notes] == ["5", "5"]


def test_max_count_batch_is_retried_whole(
    sub_fhir: Fhir, sub_app: Flask, receiver: Receiver, pump: Pump
) -> None:
    body = classic(receiver.url, extension=[{"url": MAX_COUNT, "valuePositiveInt": 2}])
    active(sub_fhir, pump, receiver, body)
    receiver.answer = 500
    for _ in range(3):
        sub_fhir.create(encounter())
    pump(lambda: len(receiver.of_kind("event-notification")) >= 2)  # failed and retried
    assert all(n == [1, 2] for n in _numbers(receiver))
    receiver.answer = 200
    before = len(receiver.of_kind("event-notification"))
    pump(lambda: _numbers(receiver)[-1] == [3])
    assert _numbers(receiver)[before:] == [[1, 2], [3]]  # at least once, never out of order
    engine = sub_app.extensions["coordination"].repo.engine
    with engine.connect() as conn:
        statuses = conn.execute(select(subscription_outbox.c.status)).scalars().all()
    assert statuses == ["delivered"] * 3


def test_max_count_must_be_positive(sub_fhir: Fhir, receiver: Receiver) -> None:
    body = classic(receiver.url, extension=[{"url": MAX_COUNT, "valuePositiveInt": 0}])
    # 400 from the structural validation (positiveInt >= 1), or 422 from our own check.
    assert sub_fhir.request("POST", "/fhir/Subscription", body).status_code in (400, 422)


def test_ended_subscription_gets_nothing(
    sub_fhir: Fhir, sub_app: Flask, receiver: Receiver, pump: Pump
) -> None:
    body: dict[str, Any] = {**classic(receiver.url), "end": _instant(timedelta(seconds=2))}
    sub_id = active(sub_fhir, pump, receiver, body)
    sub_fhir.create(encounter())  # event 1, still pending when the end comes
    time.sleep(2.2)
    pump(lambda: sub_fhir.request("GET", f"/fhir/Subscription/{sub_id}").get_json()["status"] == "off")
    # Positive control: a subscription without an end, on the same receiver, gets the later write.
    control_id = active(sub_fhir, pump, receiver, classic(receiver.url))
    sub_fhir.create(encounter())  # after the end: not matched at all
    pump(lambda: len(receiver.of_kind("event-notification")) >= 1)
    notified = [n.status["subscription"]["reference"] for n in receiver.of_kind("event-notification")]
    assert [ref.rsplit("/", 1)[-1] for ref in notified] == [control_id]
    assert _status(sub_fhir, sub_id) == "off"
    engine = sub_app.extensions["coordination"].repo.engine
    state = subscription_state
    with engine.connect() as conn:
        rows = (
            conn.execute(
                select(subscription_outbox.c.event_number)
                .join(state, state.c.res_pk == subscription_outbox.c.sub_pk)
                .where(state.c.res_id == sub_id)
            )
            .scalars()
            .all()
        )
    assert rows == [1]  # the pending event stays for $events replay; the later write made none


def test_subscription_created_past_its_end_is_off(sub_fhir: Fhir, receiver: Receiver, pump: Pump) -> None:
    body: dict[str, Any] = {**classic(receiver.url), "end": _instant(timedelta(minutes=-1))}
    sub_id = sub_fhir.create(body)["id"]
    assert _status(sub_fhir, sub_id) == "off"
    pump(lambda: sub_fhir.request("GET", f"/fhir/Subscription/{sub_id}").get_json()["status"] == "off")
    assert receiver.received == []  # no handshake either
