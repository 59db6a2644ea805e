"""Each intake door ends at the subscriber: $process-message, NdE and HL7 v2 → webhook received."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import Fhir
from tests.subscriptions.conftest import Receiver
from tests.support.hl7v2 import adt
from tests.support.messages import as_sender, discharge_message, nde
from tests.support.subscriptions import active, discharge_subscription

Pump = Callable[..., None]


def _discharges(receiver: Receiver) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for note in receiver.of_kind("event-notification")
        for e in note.body["entry"][1:]
        if e.get("resource", {}).get("resourceType") == "Encounter"
    ]


def test_each_door_reaches_the_subscriber(sub_fhir: Fhir, receiver: Receiver, pump: Pump) -> None:
    active(sub_fhir, pump, receiver, discharge_subscription(receiver))
    client = sub_fhir.client
    # 1. $process-message
    response = as_sender(client).post(
        "/fhir/$process-message",
        json=discharge_message(message_id="door-1", visit="V-FHIR"),
        headers={"Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 200, response.get_json()
    # 2. NdE CommunicationRequest (a discharge: the derived Encounter is finished)
    response = as_sender(client).post(
        "/fhir/CommunicationRequest", json=nde(identifier="door-2", ipp="IPP-NDE")
    )
    assert response.status_code == 201, response.get_json()
    # 3. HL7 v2 over HTTP: admission, then discharge of the same visit
    for trigger, control in (("A01", "door-3a"), ("A03", "door-3b")):
        pv1 = {45: "20240320113000"} if trigger == "A03" else None
        response = as_sender(client).post(
            "/hl7v2",
            data=adt(trigger, control_id=control, pv1=pv1),
            headers={"Content-Type": "x-application/hl7-v2+er7"},
        )
        assert b"MSA|AA" in response.data, response.data
    pump(lambda: len(_discharges(receiver)) >= 3, timeout=20)
    encounters = _discharges(receiver)
    assert len(encounters) == 3 and all(e["status"] == "finished" for e in encounters)
    note = receiver.of_kind("event-notification")[0]
    assert note.headers.get("X-CPTS") == "nord"
    numbers = [
        n.status["notification-event"][0]["event-number"] for n in receiver.of_kind("event-notification")
    ]
    assert numbers == [str(i) for i in range(1, len(numbers) + 1)]
    # The same HL7 discharge again: no new event.
    as_sender(client).post(
        "/hl7v2",
        data=adt("A03", control_id="door-3b", pv1={45: "20240320113000"}),
        headers={"Content-Type": "x-application/hl7-v2+er7"},
    )
    pump(lambda: True)
    assert len(_discharges(receiver)) == 3
