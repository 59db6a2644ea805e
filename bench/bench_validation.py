"""Validation cost benchmark (issue 4): full FR Core profile validation vs base R4 validation only.

Runs in-process against a fresh SQLite (or PostgreSQL with --db-url) database, same run for both
figures, so the ratio is meaningful on a noisy machine:

    python bench/bench_validation.py [--n 1000] [--db-url URL]

1. Create throughput: validate + store N FR Core Patient INS resources, base-only vs full.
2. A 50-entry transaction Bundle of FR Core resources POSTed to /fhir: p50/p95 over repeats.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from coordination_api.app import create_app
from coordination_api.config import Settings
from coordination_api.fhir.resources import validate_resource
from coordination_api.storage.migrate import upgrade

EXAMPLES = Path(__file__).resolve().parent.parent / "tests" / "data" / "fr-core"


def nir(seed: int) -> str:
    number = f"1{50 + seed % 50:02d}{1 + seed % 12:02d}75{seed % 1000:03d}{seed % 997:03d}"
    return number + f"{97 - int(number) % 97:02d}"


def patient(seed: int) -> dict[str, Any]:
    resource: dict[str, Any] = json.loads((EXAMPLES / "patient-ins-valid.json").read_text())
    resource.pop("id", None)
    for identifier in resource.get("identifier", []):
        if identifier.get("system", "").startswith("urn:oid:1.2.250.1.213.1.4."):
            identifier["value"] = nir(seed)
    return resource


def create_rate(app: Any, n: int, profiles: bool) -> float:
    repo = app.extensions["coordination"].repo
    bodies = [patient(i) for i in range(n)]
    started = time.perf_counter()
    for start in range(0, n, 50):
        with repo.writing() as conn:
            for body in bodies[start : start + 50]:
                validate_resource(body, "Patient", profiles=profiles)
                repo.create(conn, "Patient", body)
    return n / (time.perf_counter() - started)


def transaction_bundle(seed: int) -> dict[str, Any]:
    entries = []
    for name in (
        "patient-ins-valid.json",
        "practitioner-valid.json",
        "organization-valid.json",
        "location-valid.json",
        "practitioner-role-valid.json",
    ):
        template = json.loads((EXAMPLES / name).read_text())
        template.pop("id", None)
        for i in range(10):
            resource = copy.deepcopy(template)
            if name.startswith("patient"):
                resource = patient(seed * 100 + i)
            entries.append(
                {
                    "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                    "resource": resource,
                    "request": {"method": "POST", "url": resource["resourceType"]},
                }
            )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--db-url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db_url or f"sqlite:///{tmp}/bench.db"
        app = create_app(Settings(database_url=url))
        upgrade(app.extensions["coordination"].repo.engine)
        create_rate(app, 50, True)  # warm-up: compile profiles and extractors
        base = create_rate(app, args.n, profiles=False)
        full = create_rate(app, args.n, profiles=True)
        client = app.test_client()
        timings = []
        for repeat in range(args.repeats):
            body = json.dumps(transaction_bundle(repeat))
            started = time.perf_counter()
            response = client.post("/fhir", data=body, headers={"Content-Type": "application/fhir+json"})
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.get_json()
        timings.sort()
        p95 = timings[max(0, int(len(timings) * 0.95) - 1)]
        print("| figure | value |")
        print("| --- | --- |")
        print(f"| creates/s, base R4 validation | {base:.0f} |")
        print(f"| creates/s, full FR Core profile + identifier validation | {full:.0f} |")
        print(f"| cost ratio base/full (goal <= 2.0) | {base / full:.2f} |")
        print(f"| 50-entry FR Core transaction, p50 ms | {statistics.median(timings):.1f} |")
        print(f"| 50-entry FR Core transaction, p95 ms | {p95:.1f} |")
        app.extensions["coordination"].repo.engine.dispose()


if __name__ == "__main__":
    main()
