"""Subscriptions as the tests make them: classic criteria or the discharge topic, activated through the
real handshake by the ``pump`` fixture (tests/subscriptions/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

from coordination_api.subscriptions.topics import TOPIC_BASE
from tests import factories
from tests.conftest import Fhir
from tests.subscriptions.conftest import Receiver

Pump = Callable[..., None]


def classic(url: str, criteria: str = "Encounter?status=finished", **channel: Any) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": url, **channel},
    }


def encounter(status: str = "finished", patient: str = "p1") -> dict[str, Any]:
    """An Encounter of ``Patient/<patient>`` (no id: POST it)."""
    return factories.encounter(subject=f"Patient/{patient}", status=status)


def active(fhir: Fhir, pump: Pump, receiver: Receiver, body: dict[str, Any]) -> str:
    sub = fhir.create(body)
    assert sub["status"] == "requested"
    pump(lambda: fhir.request("GET", f"/fhir/Subscription/{sub['id']}").get_json()["status"] == "active")
    sub_id: str = sub["id"]
    return sub_id


def discharge_subscription(receiver: Receiver) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "sorties d'hospitalisation",
        "criteria": TOPIC_BASE + "encounter-discharge",
        "channel": {
            "type": "rest-hook",
            "endpoint": receiver.url,
            "payload": "application/fhir+json",
            "header": ["X-CPTS: nord"],
        },
    }


def outbox_pending(fhir_base: str) -> float | None:
    """The server's ``coordination_outbox_pending`` gauge (GET /metrics; None when unreadable). Zero
    means every notification row is settled: none can be claimed, and so none sent, again."""
    answer = requests.get(fhir_base.rsplit("/fhir", 1)[0] + "/metrics", timeout=10)
    for line in answer.text.splitlines():
        if line.startswith("coordination_outbox_pending "):
            return float(line.split()[1])
    return None
