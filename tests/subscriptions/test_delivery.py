"""Subscriptions end to end over real HTTP: handshake, matching, outbox order, retries, $status, $events."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import replace

import pytest
from flask import Flask
from sqlalchemy import func, select

from coordination_api.storage.schema import subscription_outbox
from coordination_api.subscriptions import worker_loop
from coordination_api.subscriptions.model import FILTER_CRITERIA, PAYLOAD_CONTENT, SECRET
from coordination_api.subscriptions.topics import TOPIC_BASE
from tests.conftest import Fhir
from tests.subscriptions.conftest import Receiver
from tests.support.subscriptions import Pump, active, classic, encounter


def test_classic_criteria_handshake_then_matching_event(
    sub_fhir: Fhir, receiver: Receiver, pump: Pump
) -> None:
    secret = "s3cr3t"
    body = classic(
        receiver.url,
        payload="application/fhir+json",
        header=["Authorization: Bearer abc", "X-Tenant: cpts-1"],
        extension=[{"url": SECRET, "valueString": secret}],
    )
    sub_id = active(sub_fhir, pump, receiver, body)
    handshake = receiver.of_kind("handshake")
    assert len(handshake) == 1
    assert handshake[0].status["subscription"]["reference"].endswith(f"Subscription/{sub_id}")
    assert handshake[0].status["status"] == "requested"

    sub_fhir.create(encounter("in-progress"))  # does not match status=finished
    created = sub_fhir.create(encounter("finished"))
    pump(lambda: len(receiver.of_kind("event-notification")) == 1)
    note = receiver.of_kind("event-notification")[0]
    assert note.body["type"] == "history"
    assert note.status["events-since-subscription-start"] == "1"
    [event] = note.status["notification-event"]
    assert event["event-number"] == "1"
    assert event["focus"]["reference"].endswith(f"Encounter/{created['id']}")
    assert note.body["entry"][1]["resource"]["id"] == created["id"]  # full-resource: payload mime type
    assert note.headers["Authorization"] == "Bearer abc"
    assert note.headers["X-Tenant"] == "cpts-1"
    expected = hmac.new(secret.encode(), note.raw, hashlib.sha256).hexdigest()
    assert note.headers["X-Coordination-Signature"] == f"sha256={expected}"
    assert note.headers["Content-Type"].startswith("application/fhir+json")
    # Nothing further: the non-matching Encounter produced no event.
    pump(lambda: True)
    assert len(receiver.of_kind("event-notification")) == 1


def test_no_payload_is_an_empty_notification(sub_fhir: Fhir, receiver: Receiver, pump: Pump) -> None:
    active(sub_fhir, pump, receiver, classic(receiver.url))
    sub_fhir.create(encounter())
    pump(lambda: len(receiver.of_kind("event-notification")) == 1)
    note = receiver.of_kind("event-notification")[0]
    assert len(note.body["entry"]) == 1
    assert "focus" not in note.status["notification-event"][0]
    assert "X-Coordination-Signature" not in note.headers


def test_topic_discharge_with_filter(sub_fhir: Fhir, receiver: Receiver, pump: Pump) -> None:
    body = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "discharges of p1",
        "criteria": TOPIC_BASE + "encounter-discharge",
        "_criteria": {"extension": [{"url": FILTER_CRITERIA, "valueString": "Encounter?patient=Patient/p1"}]},
        "channel": {
            "type": "rest-hook",
            "endpoint": receiver.url,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": "id-only"}]},
        },
    }
    sub_id = active(sub_fhir, pump, receiver, body)
    other = sub_fhir.create(encounter("finished", patient="p2"))  # filtered out
    enc = sub_fhir.create(encounter("in-progress"))  # not a discharge (yet)
    assert other and enc
    finished = {**enc, "status": "finished"}
    response = sub_fhir.request("PUT", f"/fhir/Encounter/{enc['id']}", finished)
    assert response.status_code == 200
    again = sub_fhir.request(
        "PUT", f"/fhir/Encounter/{enc['id']}", {**finished, "period": {"end": "2026-01-02"}}
    )
    assert again.status_code == 200  # still finished: no new discharge
    pump(lambda: len(receiver.of_kind("event-notification")) >= 1)
    pump(lambda: True)
    [note] = receiver.of_kind("event-notification")
    assert note.status["topic"] == TOPIC_BASE + "encounter-discharge"
    [event] = note.status["notification-event"]
    assert event["event-number"] == "1"
    assert event["focus"]["reference"].endswith(f"Encounter/{enc['id']}")
    entry = note.body["entry"][1]
    assert "resource" not in entry  # id-only
    assert entry["fullUrl"].endswith(f"Encounter/{enc['id']}")
    assert entry["request"] == {"method": "PUT", "url": f"Encounter/{enc['id']}"}
    status = sub_fhir.request("GET", f"/fhir/Subscription/{sub_id}/$status").get_json()
    assert status["type"] == "searchset"
    params = {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}
    assert params["type"]["valueCode"] == "query-status"
    assert params["status"]["valueCode"] == "active"
    assert params["events-since-subscription-start"]["valueString"] == "1"


def test_topic_filter_parameter_must_be_allowed(sub_fhir: Fhir, receiver: Receiver) -> None:
    body = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "x",
        "criteria": TOPIC_BASE + "encounter-discharge",
        "_criteria": {"extension": [{"url": FILTER_CRITERIA, "valueString": "Encounter?reason-code=x"}]},
        "channel": {"type": "rest-hook", "endpoint": receiver.url},
    }
    response = sub_fhir.request("POST", "/fhir/Subscription", body)
    assert response.status_code == 422, response.get_json()
    unknown = {**body, "criteria": "https://example.org/SubscriptionTopic/unknown", "_criteria": None}
    del unknown["_criteria"]
    assert sub_fhir.request("POST", "/fhir/Subscription", unknown).status_code == 422


def test_five_events_arrive_in_order(sub_fhir: Fhir, receiver: Receiver, pump: Pump) -> None:
    active(sub_fhir, pump, receiver, classic(receiver.url, payload="application/fhir+json"))
    ids = [sub_fhir.create(encounter())["id"] for _ in range(5)]
    pump(lambda: len(receiver.of_kind("event-notification")) == 5)
    notes = receiver.of_kind("event-notification")
    numbers = [int(n.status["notification-event"][0]["event-number"]) for n in notes]
    assert numbers == [1, 2, 3, 4, 5]
    assert [n.body["entry"][1]["resource"]["id"] for n in notes] == ids


def test_backlog_longer_than_a_pass_streams_without_waiting_for_leases(
    sub_fhir: Fhir, sub_app: Flask, receiver: Receiver, pump: Pump
) -> None:
    # One pass streams at most batch_size notifications of a subscription; what follows must stay
    # claimable by the next pass at once (not leased until the lease runs out: 5 s here).
    config = sub_app.extensions["subscriptions"].config
    sub_app.extensions["subscriptions"].config = replace(config, batch_size=3)
    active(sub_fhir, pump, receiver, classic(receiver.url))
    for _ in range(10):
        sub_fhir.create(encounter())
    pump(lambda: len(receiver.of_kind("event-notification")) == 10, timeout=3.0)
    notes = receiver.of_kind("event-notification")
    assert [int(n.status["notification-event"][0]["event-number"]) for n in notes] == list(range(1, 11))


def test_receiver_down_then_back(sub_fhir: Fhir, sub_app: Flask, receiver: Receiver, pump: Pump) -> None:
    sub_id = active(sub_fhir, pump, receiver, classic(receiver.url))
    receiver.stop()  # connection refused from now on
    for _ in range(3):
        sub_fhir.create(encounter())
    engine = sub_app.extensions["coordination"].repo.engine
    o = subscription_outbox

    def attempts() -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(func.max(o.c.attempts))).scalar_one() or 0)

    pump(lambda: attempts() >= 3)  # retried with backoff; event 2 and 3 wait behind event 1
    with engine.connect() as conn:
        waiting = conn.execute(select(o.c.event_number, o.c.attempts).order_by(o.c.event_number)).all()
    assert [n for n, _a in waiting] == [1, 2, 3]
    assert all(a == 0 for n, a in waiting if n > 1)
    receiver.start()  # back on the same port
    pump(lambda: len(receiver.of_kind("event-notification")) == 3)
    numbers = [
        n.status["notification-event"][0]["event-number"] for n in receiver.of_kind("event-notification")
    ]
    assert numbers == ["1", "2", "3"]
    assert sub_fhir.request("GET", f"/fhir/Subscription/{sub_id}").get_json()["status"] == "active"


def test_retry_period_over_sets_error_and_events_replay(
    sub_fhir: Fhir, sub_app: Flask, receiver: Receiver, pump: Pump
) -> None:

    sub_id = active(sub_fhir, pump, receiver, classic(receiver.url, payload="application/fhir+json"))
    service = sub_app.extensions["subscriptions"]
    service.config = replace(service.config, retry_period=0.3)
    receiver.answer = 503
    first = sub_fhir.create(encounter())
    second = sub_fhir.create(encounter())

    def status() -> str:
        value: str = sub_fhir.request("GET", f"/fhir/Subscription/{sub_id}").get_json()["status"]
        return value

    pump(lambda: status() == "error")
    stored = sub_fhir.request("GET", f"/fhir/Subscription/{sub_id}").get_json()
    assert "failed" in stored["error"]
    # $events replays both (nothing was dropped), full resources by default (payload mime type).
    replay = sub_fhir.request("GET", f"/fhir/Subscription/{sub_id}/$events?eventsSinceNumber=1").get_json()
    assert replay["type"] == "history"
    params = replay["entry"][0]["resource"]["parameter"]
    assert {p["name"]: p for p in params}["type"]["valueCode"] == "query-event"
    numbers = [p["part"][0]["valueString"] for p in params if p["name"] == "notification-event"]
    assert numbers == ["1", "2"]
    assert [e["resource"]["id"] for e in replay["entry"][1:]] == [first["id"], second["id"]]
    only = sub_fhir.request(
        "POST",
        f"/fhir/Subscription/{sub_id}/$events",
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "eventsSinceNumber", "valueString": "2"},
                {"name": "eventsUntilNumber", "valueString": "2"},
                {"name": "content", "valueCode": "id-only"},
            ],
        },
    ).get_json()
    assert len(only["entry"]) == 2 and "resource" not in only["entry"][1]
    # Requested again: handshake, then the pending events go out in order.
    receiver.answer = 200
    service.config = replace(service.config, retry_period=3600.0)
    seen = len(receiver.received)
    again = {**stored, "status": "requested"}
    again.pop("error")
    assert sub_fhir.request("PUT", f"/fhir/Subscription/{sub_id}", again).status_code == 200

    def redelivered() -> list[str]:
        notes = [r for r in receiver.received[seen:] if r.kind == "event-notification"]
        return [n.status["notification-event"][0]["event-number"] for n in notes]

    pump(lambda: redelivered() == ["1", "2"])
    assert status() == "active"


def test_status_type_level(sub_fhir: Fhir, receiver: Receiver, pump: Pump) -> None:
    one = active(sub_fhir, pump, receiver, classic(receiver.url))
    two = sub_fhir.create({**classic(receiver.url), "status": "requested"})["id"]
    everything = sub_fhir.request("GET", "/fhir/Subscription/$status").get_json()
    assert everything["total"] == 2
    chosen = sub_fhir.request("GET", f"/fhir/Subscription/$status?id={two}").get_json()
    refs = [
        p["valueReference"]["reference"]
        for e in chosen["entry"]
        for p in e["resource"]["parameter"]
        if p["name"] == "subscription"
    ]
    assert len(refs) == 1 and refs[0].endswith(two)
    actives = sub_fhir.request("GET", "/fhir/Subscription/$status?status=active").get_json()
    assert actives["total"] == 1 and one
    assert sub_fhir.request("GET", "/fhir/Subscription/nope/$status").status_code == 404


def test_off_stops_notifications(sub_fhir: Fhir, receiver: Receiver, pump: Pump) -> None:
    sub_id = active(sub_fhir, pump, receiver, classic(receiver.url))
    # Positive control: a second subscription, left active, must be notified of the same event.
    control_id = active(sub_fhir, pump, receiver, classic(receiver.url))
    current = sub_fhir.request("GET", f"/fhir/Subscription/{sub_id}").get_json()
    assert (
        sub_fhir.request("PUT", f"/fhir/Subscription/{sub_id}", {**current, "status": "off"}).status_code
        == 200
    )
    sub_fhir.create(encounter())
    pump(lambda: len(receiver.of_kind("event-notification")) >= 1)
    pump(lambda: True)  # one more pass: anything for the "off" subscription would have been sent by now
    notified = [n.status["subscription"]["reference"] for n in receiver.of_kind("event-notification")]
    assert [ref.rsplit("/", 1)[-1] for ref in notified] == [control_id]


def test_handshake_failure_sets_error(sub_fhir: Fhir, receiver: Receiver, pump: Pump) -> None:
    receiver.answer = 500
    sub = sub_fhir.create(classic(receiver.url))
    pump(lambda: sub_fhir.request("GET", f"/fhir/Subscription/{sub['id']}").get_json()["status"] == "error")


def test_heartbeat_when_idle(sub_fhir: Fhir, receiver: Receiver, pump: Pump) -> None:
    hb = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period"
    active(sub_fhir, pump, receiver, classic(receiver.url, extension=[{"url": hb, "valueUnsignedInt": 1}]))
    pump(lambda: len(receiver.of_kind("heartbeat")) >= 1, timeout=5)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "http://example.org/hook",  # plain http off loopback
        "https://[fe80::1]/hook",
        "ftp://127.0.0.1/hook",
    ],
)
def test_ssrf_refusals(sub_fhir: Fhir, url: str) -> None:
    response = sub_fhir.request("POST", "/fhir/Subscription", classic(url))
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert sub_fhir.search("Subscription").get("total", 0) == 0


def test_update_to_private_endpoint_is_refused(sub_fhir: Fhir, receiver: Receiver, pump: Pump) -> None:
    sub_id = active(sub_fhir, pump, receiver, classic(receiver.url))
    current = sub_fhir.request("GET", f"/fhir/Subscription/{sub_id}").get_json()
    moved = {**current, "channel": {**current["channel"], "endpoint": "https://192.168.1.10/x"}}
    assert sub_fhir.request("PUT", f"/fhir/Subscription/{sub_id}", moved).status_code == 422
    assert (
        sub_fhir.request("GET", f"/fhir/Subscription/{sub_id}").get_json()["channel"]["endpoint"]
        == receiver.url
    )


def test_bad_criteria_is_refused(sub_fhir: Fhir, receiver: Receiver) -> None:
    response = sub_fhir.request(
        "POST", "/fhir/Subscription", classic(receiver.url, criteria="Encounter?nope=1")
    )
    assert response.status_code == 422


def test_worker_loop_thread_stops(sub_app: Flask, sub_fhir: Fhir, receiver: Receiver) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=worker_loop, args=(sub_app, stop))
    thread.start()
    try:
        sub = sub_fhir.create(classic(receiver.url))
        deadline = time.monotonic() + 10
        while sub_fhir.request("GET", f"/fhir/Subscription/{sub['id']}").get_json()["status"] != "active":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_concurrent_writers_get_distinct_event_numbers(
    sub_fhir: Fhir, sub_app: Flask, receiver: Receiver, pump: Pump
) -> None:
    active(sub_fhir, pump, receiver, classic(receiver.url))
    repo = sub_app.extensions["coordination"].repo
    errors: list[Exception] = []

    def write() -> None:
        try:
            for _ in range(10):
                with repo.writing() as conn:
                    repo.create(conn, "Encounter", encounter())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with repo.engine.connect() as conn:
        numbers = list(conn.scalars(select(subscription_outbox.c.event_number).order_by("event_number")))
    assert numbers == list(range(1, 31))
    pump(lambda: len(receiver.of_kind("event-notification")) == 30)
    sent = [
        int(n.status["notification-event"][0]["event-number"]) for n in receiver.of_kind("event-notification")
    ]
    assert sent == list(range(1, 31))
