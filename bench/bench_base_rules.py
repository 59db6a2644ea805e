"""Cost of the base R4 rules (fhir_profiles.base_rules, issue 18) on the write path, in-process.

Same run for both figures, interleaved rounds, so the ratio holds on a noisy machine:

    python bench/bench_base_rules.py [--rounds 5] [--n 300] [--db-url URL]

1. ``validate_resource`` on typical Patient / Encounter / Observation / Task bodies, base rules off
   (``base=False``) vs on: per-type µs and the ratio.
2. Create: validate + store (SQLite in a temp dir unless --db-url), base rules off vs on: the ratio
   (goal <= 1.5).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from typing import Any

from coordination_api.app import create_app
from coordination_api.config import Settings
from coordination_api.fhir.resources import validate_resource
from coordination_api.storage.migrate import upgrade
from fhir_profiles import base_rules

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [
        {"use": "usual", "system": "urn:oid:1.2.250.1.71.4.2.7.750100125", "value": "123456"},
    ],
    "active": True,
    "name": [{"use": "official", "family": "Martin", "given": ["Claire", "Anne"]}],
    "telecom": [{"system": "phone", "value": "+33612345678", "use": "mobile"}],
    "gender": "female",
    "birthDate": "1954-03-02",
    "address": [{"line": ["3 rue des Lilas"], "city": "Lyon", "postalCode": "69003", "country": "FR"}],
    "generalPractitioner": [{"reference": "Practitioner/p1"}],
}
ENCOUNTER: dict[str, Any] = {
    "resourceType": "Encounter",
    "status": "finished",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
    "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "32485007"}]}],
    "subject": {"reference": "Patient/1"},
    "participant": [{"individual": {"reference": "Practitioner/p1"}}],
    "period": {"start": "2024-03-01T08:00:00+01:00", "end": "2024-03-05T11:00:00+01:00"},
    "hospitalization": {"dischargeDisposition": {"coding": [{"code": "home"}]}},
    "serviceProvider": {"reference": "Organization/o1"},
}
OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                }
            ]
        }
    ],
    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]},
    "subject": {"reference": "Patient/1"},
    "encounter": {"reference": "Encounter/1"},
    "effectiveDateTime": "2024-03-01T09:30:00+01:00",
    "valueQuantity": {"value": 71.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    "referenceRange": [{"low": {"value": 50, "system": "http://unitsofmeasure.org", "code": "kg"}}],
}
TASK: dict[str, Any] = {
    "resourceType": "Task",
    "status": "requested",
    "intent": "order",
    "priority": "routine",
    "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
    "for": {"reference": "Patient/1"},
    "authoredOn": "2024-03-01T10:00:00+01:00",
    "lastModified": "2024-03-01T10:05:00+01:00",
    "requester": {"reference": "Practitioner/p1"},
    "owner": {"reference": "Organization/o1"},
    "executionPeriod": {"start": "2024-03-02"},
    "input": [{"type": {"text": "note"}, "valueString": "call the patient"}],
    "note": [{"text": "follow-up at home"}],
}
BODIES = [PATIENT, ENCOUNTER, OBSERVATION, TASK]


def per_call_us(body: dict[str, Any], n: int, base: bool) -> float:
    copies = [copy.deepcopy(body) for _ in range(n)]
    started = time.perf_counter()
    for resource in copies:
        validate_resource(resource, resource["resourceType"], base=base)
    return (time.perf_counter() - started) / n * 1e6


def create_seconds(app: Any, n: int, base: bool) -> float:
    repo = app.extensions["coordination"].repo
    bodies = [copy.deepcopy(BODIES[i % len(BODIES)]) for i in range(n)]
    started = time.perf_counter()
    for start in range(0, n, 50):
        with repo.writing() as conn:
            for body in bodies[start : start + 50]:
                validate_resource(body, body["resourceType"], base=base)
                repo.create(conn, body["resourceType"], body)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--db-url", default="")
    args = parser.parse_args()
    for body in BODIES:
        assert not [i for i in base_rules.check(body) if i.is_error], body["resourceType"]
        per_call_us(body, 20, True)  # warm-up: definitions loaded, models built
    rows = []
    for body in BODIES:
        off = [per_call_us(body, args.n, False) for _ in range(args.rounds)]
        on = [per_call_us(body, args.n, True) for _ in range(args.rounds)]
        rows.append((body["resourceType"], statistics.median(off), statistics.median(on)))
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(database_url=args.db_url or f"sqlite:///{tmp}/bench.db"))
        upgrade(app.extensions["coordination"].repo.engine)
        create_seconds(app, 40, True)
        off_s, on_s = [], []
        for _ in range(args.rounds):
            off_s.append(create_seconds(app, args.n, False))
            on_s.append(create_seconds(app, args.n, True))
        app.extensions["coordination"].repo.engine.dispose()
    print("| validate_resource | base rules off, µs | on, µs | ratio |")
    print("| --- | --- | --- | --- |")
    for name, off_us, on_us in rows:
        print(f"| {name} | {off_us:.0f} | {on_us:.0f} | {on_us / off_us:.2f} |")
    total_off, total_on = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"| all four | {total_off:.0f} | {total_on:.0f} | {total_on / total_off:.2f} |")
    ratio = statistics.median(on_s) / statistics.median(off_s)
    print(f"\ncreate (validate + store, {args.n} mixed resources): ratio on/off {ratio:.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
