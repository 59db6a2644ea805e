#!/usr/bin/env python3
"""DMP push through a PDSm, IHE MHD ITI-65 (docs/integration.md section 6.4).

1. Records a document for a patient whose INS identity is validated (dmp-document-bundle.json: a
   transaction; the Patient and the DocumentReference are created only when missing).
2. ``POST /fhir/DocumentReference/{id}/$dmp-push`` -> 202 "queued for the DMP" (a document already
   sent answers 409: this script then sends it again with ``?force=true``, as a rerun would).
3. The delivery worker sends it; the outcome is recorded on the DocumentReference, extension
   ``https://coordination.cpts.fr/fhir/StructureDefinition/dmp-submission`` (status requested | sent |
   failed). The script polls until ``sent``; ``failed`` or a timeout ends it in error.

Needs a token that may read and update DocumentReference (here system/*.cruds) and a configured DMP
recipient (COORDINATION_DMP_RECIPIENT_URL) on the server.
Environment: BASE_URL, CLIENT_ID, CLIENT_SECRET (examples/README.md).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
BASE = os.environ.get("BASE_URL", "http://127.0.0.1:8080").rstrip("/")
FHIR = f"{BASE}/fhir"
FHIR_JSON = "application/fhir+json"
SUBMISSION = "https://coordination.cpts.fr/fhir/StructureDefinition/dmp-submission"


def fail(message: str, answer: requests.Response | None = None) -> None:
    detail = f" -> {answer.status_code} {answer.text[:500]}" if answer is not None else ""
    sys.exit(f"dmp_push: {message}{detail}")


def expect(answer: requests.Response, *statuses: int) -> requests.Response:
    if answer.status_code not in statuses:
        fail(f"{answer.request.method} {answer.url}: expected {statuses}", answer)
    return answer


def submission(document: dict[str, Any]) -> dict[str, str]:
    """The dmp-submission extension as {status, date, location, diagnostics}."""
    for extension in document.get("extension", []):
        if extension.get("url") == SUBMISSION:
            return {
                part["url"]: str(next(v for k, v in part.items() if k.startswith("value")))
                for part in extension.get("extension", [])
            }
    return {}


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

    bundle = json.loads((HERE / "dmp-document-bundle.json").read_text(encoding="utf-8"))
    written = expect(requests.post(FHIR, json=bundle, headers=headers, timeout=30), 200).json()
    location = written["entry"][1]["response"]["location"]
    document_id = location.split("/DocumentReference/")[1].split("/")[0]
    print(f"DocumentReference/{document_id}: {written['entry'][1]['response']['status']}")

    push = f"{FHIR}/DocumentReference/{document_id}/$dmp-push"
    answer = expect(requests.post(push, headers=headers, timeout=30), 202, 409)
    if answer.status_code == 409:  # sent by an earlier run: send it again on purpose
        print("already sent (409); sending again with ?force=true")
        answer = expect(requests.post(push, params={"force": "true"}, headers=headers, timeout=30), 202)
    print(f"$dmp-push: 202 {answer.json()['issue'][0]['diagnostics']}")

    deadline = time.monotonic() + 60
    while True:
        read = expect(
            requests.get(f"{FHIR}/DocumentReference/{document_id}", headers=headers, timeout=30), 200
        )
        state = submission(read.json())
        if state.get("status") == "sent":
            print(f"sent to the DMP on {state.get('date')}, location {state.get('location') or '-'}")
            return
        if state.get("status") == "failed":
            fail(f"the push failed: {state.get('diagnostics')}")
        if time.monotonic() > deadline:
            fail(f"still {state.get('status')} after 60 s (is the delivery worker running?)")
        time.sleep(0.5)


if __name__ == "__main__":
    main()
