"""A no-op update (issue 18: the body is the current content) is no event: no outbox row, no
notification; a real change right after it is event 2."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from sqlalchemy import select

from coordination_api.storage.schema import subscription_outbox
from tests.conftest import Fhir
from tests.subscriptions.conftest import Receiver
from tests.support.subscriptions import active, classic, encounter

Pump = Callable[..., None]


def _events(sub_app: Flask) -> list[int]:
    with sub_app.extensions["coordination"].repo.engine.connect() as conn:
        rows = conn.execute(
            select(subscription_outbox.c.event_number).order_by(subscription_outbox.c.event_number)
        )
        return list(rows.scalars())


def test_a_no_op_update_notifies_nobody(
    sub_fhir: Fhir, sub_app: Flask, receiver: Receiver, pump: Pump
) -> None:
    active(sub_fhir, pump, receiver, classic(receiver.url, payload="application/fhir+json"))
    created = sub_fhir.create(encounter())
    pump(lambda: len(receiver.of_kind("event-notification")) == 1)
    same = sub_fhir.request("PUT", f"/fhir/Encounter/{created['id']}", created)
    assert same.status_code == 200 and same.headers["ETag"] == 'W/"1"'
    assert _events(sub_app) == [1]
    changed = {**created, "period": {"end": "2026-01-02"}}
    assert sub_fhir.request("PUT", f"/fhir/Encounter/{created['id']}", changed).headers["ETag"] == 'W/"2"'
    pump(lambda: len(receiver.of_kind("event-notification")) == 2)
    pump(lambda: True)
    notes = receiver.of_kind("event-notification")
    assert [n.status["notification-event"][0]["event-number"] for n in notes] == ["1", "2"]
    assert notes[1].body["entry"][1]["resource"]["meta"]["versionId"] == "2"
    assert _events(sub_app) == [1, 2]
