#!/usr/bin/env python3
"""Bulk Data export, FHIR Bulk Data Access 2.0 (docs/integration.md section 5): kick-off, poll, download.

1. Kick-off: ``GET /fhir/$export?_type=Patient,Encounter`` with ``Prefer: respond-async`` -> 202 and a
   ``Content-Location`` (the status URL).
2. Poll the status URL: 202 with ``X-Progress`` and ``Retry-After`` while it runs, then 200 and the
   manifest (``output``: one entry per file, ``<Type>.<generation>-<n>.ndjson``).
3. Download each file with the same token (``application/fhir+ndjson``, one resource per line), then
   ``DELETE`` the status URL to remove the job and its files.

Needs a system token that may read the exported types (``system/*.rs`` or per type).
Environment: BASE_URL, CLIENT_ID, CLIENT_SECRET; EXPORT_DIR (optional: where to save the files)
(examples/README.md).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import requests

BASE = os.environ.get("BASE_URL", "http://127.0.0.1:8080").rstrip("/")
FHIR = f"{BASE}/fhir"


def fail(message: str, answer: requests.Response | None = None) -> None:
    detail = f" -> {answer.status_code} {answer.text[:500]}" if answer is not None else ""
    sys.exit(f"export: {message}{detail}")


def expect(answer: requests.Response, *statuses: int) -> requests.Response:
    if answer.status_code not in statuses:
        fail(f"{answer.request.method} {answer.url}: expected {statuses}", answer)
    return answer


def main() -> None:
    token = requests.post(
        f"{BASE}/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/Patient.rs system/Encounter.rs"},
        auth=(os.environ["CLIENT_ID"], os.environ["CLIENT_SECRET"]),
        timeout=30,
    )
    auth = {"Authorization": f"Bearer {expect(token, 200).json()['access_token']}"}

    kickoff = requests.get(
        f"{FHIR}/$export",
        params={"_type": "Patient,Encounter"},
        headers={**auth, "Accept": "application/fhir+json", "Prefer": "respond-async"},
        timeout=30,
    )
    status_url = expect(kickoff, 202).headers["Content-Location"]
    print(f"kick-off: 202, status at {status_url}")

    deadline = time.monotonic() + 120
    while True:
        status = expect(requests.get(status_url, headers=auth, timeout=30), 200, 202)
        if status.status_code == 200:
            break
        if time.monotonic() > deadline:
            fail("the export did not finish within 120 s")
        progress = status.headers.get("X-Progress", "")
        wait = min(float(status.headers.get("Retry-After", "1")), 2.0)  # a script in a hurry
        print(f"running: {progress}; next poll in {wait:.0f} s")
        time.sleep(wait)
    manifest = status.json()
    print(f"manifest: transactionTime {manifest['transactionTime']}, expires {status.headers.get('Expires')}")

    target = Path(os.environ["EXPORT_DIR"]) if os.environ.get("EXPORT_DIR") else None
    for output in manifest["output"]:
        answer = expect(requests.get(output["url"], headers=auth, timeout=60), 200)
        if not answer.headers["Content-Type"].startswith("application/fhir+ndjson"):
            fail(f"{output['url']} is {answer.headers['Content-Type']}")
        lines = [json.loads(line) for line in answer.text.splitlines() if line.strip()]
        if len(lines) != output.get("count", len(lines)) or any(
            r["resourceType"] != output["type"] for r in lines
        ):
            fail(f"{output['url']}: {len(lines)} lines, manifest says {output.get('count')} {output['type']}")
        name = output["url"].rsplit("/", 1)[1]
        print(f"{name}: {len(lines)} {output['type']}")
        if target is not None:
            target.mkdir(parents=True, exist_ok=True)
            (target / name).write_text(answer.text, encoding="utf-8")
    if not manifest["output"]:
        print("nothing to export")

    expect(requests.delete(status_url, headers=auth, timeout=30), 202)
    print("job deleted")


if __name__ == "__main__":
    main()
