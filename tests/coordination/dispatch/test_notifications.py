"""What dispatch tells the outside, through ordinary subscriptions and a real HTTP receiver: each offer is
a Task version, the acceptance a Communication to the requester (and the task-assigned topic)."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from tests.conftest import Fhir
from tests.coordination.dispatch.conftest import NURSE, Cpts, address, later
from tests.subscriptions.conftest import Receiver
from tests.support.subscriptions import active, classic

Pump = Callable[..., None]
FULL = "application/fhir+json"


def _focuses(receiver: Receiver) -> list[str]:
    """ "Type/id/_history/version" of the resources notified in full, in the order received."""
    return [
        f"{r['resourceType']}/{r['id']}/_history/{r['meta']['versionId']}"
        for note in receiver.of_kind("event-notification")
        for r in (entry.get("resource") for entry in note.body["entry"][1:])
        if r is not None
    ]


def test_offers_and_the_taking_reach_subscribers(
    sub_app: Flask, sub_fhir: Fhir, receiver: Receiver, pump: Pump
) -> None:
    cpts = Cpts(sub_app, sub_fhir)
    cpts.patient = cpts.create(
        {"resourceType": "Patient", "name": [{"family": "Durand"}], "address": [address("33000")]}
    )
    requester = cpts.practitioner("requester")
    nurse = cpts.practitioner("usual-nurse")
    cpts.care_team((nurse, NURSE))
    area = cpts.role("nurse-33000", location=address("33000"))
    # A practice software watching open Tasks, and the requester's own inbox.
    active(sub_fhir, pump, receiver, classic(receiver.url, "Task?status=requested", payload=FULL))
    active(
        sub_fhir, pump, receiver, classic(receiver.url, f"Communication?recipient={requester}", payload=FULL)
    )

    task = cpts.task()
    cpts.dispatcher.tick(later(1801))
    pump(lambda: len(_focuses(receiver)) == 3)
    tid = task["id"]
    assert _focuses(receiver) == [f"Task/{tid}/_history/{v}" for v in (1, 2, 3)]
    offered = sub_fhir.request("GET", f"/fhir/Task/{tid}/_history/3").get_json()
    assert [r["reference"] for r in offered["restriction"]["recipient"]] == [nurse, area]

    accept = {**offered, "status": "accepted", "owner": {"reference": area}}
    response = sub_fhir.request("PUT", f"/fhir/Task/{tid}", accept, If_Match='W/"3"')
    assert response.status_code == 200, response.get_json()
    pump(lambda: len(_focuses(receiver)) == 4)
    assert _focuses(receiver)[-1].startswith("Communication/")
