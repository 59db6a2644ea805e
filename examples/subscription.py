#!/usr/bin/env python3
"""Subscriptions: being told of discharges (docs/integration.md section 4).

Creates both kinds of R4 Subscription with a rest-hook channel pointing at a small receiver this script
runs itself on loopback (plain http to loopback is allowed under the default ``make run``
configuration; production requires https):

- subscription-r4-criteria.json: classic R4 criteria ``Encounter?status=finished``;
- subscription-backport-topic.json: the Backport IG topic
  ``https://coordination.cpts.fr/fhir/SubscriptionTopic/encounter-discharge`` narrowed by a
  ``backport-filter-criteria`` extension, ``id-only`` payload.

Then waits for both to become ``active`` (after the handshake), records a finished Encounter, waits for a
notification on each, reads ``$status`` of the topic one, and deletes both (a Subscription whose endpoint
has gone would otherwise be retried for 24 h).

Environment: BASE_URL, CLIENT_ID, CLIENT_SECRET; RECEIVER_HOST (127.0.0.1) (examples/README.md).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
BASE = os.environ.get("BASE_URL", "http://127.0.0.1:8080").rstrip("/")
FHIR = f"{BASE}/fhir"
FHIR_JSON = "application/fhir+json"
RECEIVED: list[dict[str, Any]] = []


class Receiver(BaseHTTPRequestHandler):
    """The subscriber's endpoint: keeps every notification Bundle, answers 200."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        RECEIVED.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def fail(message: str, answer: requests.Response | None = None) -> None:
    detail = f" -> {answer.status_code} {answer.text[:500]}" if answer is not None else ""
    sys.exit(f"subscription: {message}{detail}")


def expect(answer: requests.Response, *statuses: int) -> requests.Response:
    if answer.status_code not in statuses:
        fail(f"{answer.request.method} {answer.url}: expected {statuses}", answer)
    return answer


def wait(what: str, predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


def notified(subscription_id: str, event: bool) -> bool:
    """A notification for that subscription (an event notification, or any, e.g. the handshake). In R4 the
    Bundle's first entry is the Backport IG's status Parameters (backport-subscription-status-r4)."""
    for bundle in list(RECEIVED):
        entries = bundle.get("entry") or [{}]
        status = {
            p.get("name"): p.get("valueReference", {}).get("reference") or p.get("valueCode")
            for p in entries[0].get("resource", {}).get("parameter", [])
        }
        mine = str(status.get("subscription", "")).endswith(f"Subscription/{subscription_id}")
        if mine and (not event or status.get("type") == "event-notification"):
            return True
    return False


def main() -> None:
    token = requests.post(
        f"{BASE}/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
        auth=(os.environ["CLIENT_ID"], os.environ["CLIENT_SECRET"]),
        timeout=30,
    )
    headers = {
        "Authorization": f"Bearer {expect(token, 200).json()['access_token']}",
        "Content-Type": FHIR_JSON,
    }

    server = ThreadingHTTPServer((os.environ.get("RECEIVER_HOST", "127.0.0.1"), 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://{server.server_address[0]}:{server.server_address[1]}/notify"

    created: list[str] = []
    try:
        for name in ("subscription-r4-criteria.json", "subscription-backport-topic.json"):
            subscription = json.loads((HERE / name).read_text(encoding="utf-8"))
            subscription["channel"]["endpoint"] = endpoint
            answer = expect(
                requests.post(f"{FHIR}/Subscription", json=subscription, headers=headers, timeout=30), 201
            )
            created.append(answer.json()["id"])
            print(f"{name}: Subscription/{created[-1]} {answer.json()['status']}")

        def active(sid: str) -> bool:
            read = expect(requests.get(f"{FHIR}/Subscription/{sid}", headers=headers, timeout=30), 200)
            if read.json()["status"] == "error":
                fail(f"Subscription/{sid} is in error", read)
            return bool(read.json()["status"] == "active")

        for sid in created:
            wait(f"Subscription/{sid} active", lambda sid=sid: active(sid))
        print("both active")

        patient = json.loads((HERE / "patient.json").read_text(encoding="utf-8"))
        found = expect(
            requests.post(
                f"{FHIR}/Patient",
                json=patient,
                headers={**headers, "If-None-Exist": "identifier=urn:oid:1.2.250.1.71.4.2.2.1|IPP-0004"},
                timeout=30,
            ),
            200,
            201,
        )
        encounter = {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": f"Patient/{found.json()['id']}"},
            "period": {"start": "2026-11-18T08:00:00+01:00", "end": "2026-11-24T16:00:00+01:00"},
        }
        stay = expect(requests.post(f"{FHIR}/Encounter", json=encounter, headers=headers, timeout=30), 201)
        print(f"Encounter/{stay.json()['id']} finished")
        for sid in created:
            wait(f"a notification for Subscription/{sid}", lambda sid=sid: notified(sid, event=True))
        print(f"notified: {len(RECEIVED)} Bundles received (handshakes and events)")

        status = expect(
            requests.get(f"{FHIR}/Subscription/{created[1]}/$status", headers=headers, timeout=30), 200
        )
        bundle = status.json()  # a searchset Bundle of status Parameters (Backport IG, R4)
        values = {
            p.get("name"): p.get("valueCode") or p.get("valueString") or p.get("valueUnsignedInt")
            for p in bundle["entry"][0]["resource"].get("parameter", [])
        }
        if values.get("status") != "active":
            fail("unexpected $status", status)
        print(
            f"$status: {values.get('status')},",
            f"events since start {values.get('events-since-subscription-start')}",
        )
    finally:
        for sid in created:
            requests.delete(f"{FHIR}/Subscription/{sid}", headers=headers, timeout=30)
        server.shutdown()


if __name__ == "__main__":
    main()
