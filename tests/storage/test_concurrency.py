"""Uniqueness under concurrency is enforced by the database, on both backends."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import orjson
from flask import Flask

from tests.conftest import Fhir, authed

# A validated identity with its INS (NIR key 87 = 97 - 2840575056123 mod 97).
PATIENT = {
    "resourceType": "Patient",
    "extension": [
        {
            "url": "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability",
            "extension": [
                {
                    "url": "identityStatus",
                    "valueCoding": {
                        "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445",
                        "code": "VALI",
                    },
                }
            ],
        }
    ],
    "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "284057505612387"}],
    "name": [{"family": "Concurrent"}],
}


def _conditional_create(app: Flask) -> tuple[int, str]:
    response = authed(app.test_client()).post(
        "/fhir/Patient",
        data=orjson.dumps(PATIENT),
        headers={
            "Content-Type": "application/fhir+json",
            "If-None-Exist": "identifier=urn:oid:1.2.250.1.213.1.4.8|284057505612387",
        },
    )
    return response.status_code, response.get_json()["id"]


def test_50_parallel_identical_conditional_creates_make_exactly_one(app: Flask, fhir: Fhir) -> None:
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda _: _conditional_create(app), range(50)))
    statuses = sorted(status for status, _ in results)
    assert statuses.count(201) == 1, statuses
    assert statuses.count(200) == 49, statuses
    assert len({rid for _, rid in results}) == 1
    assert len(fhir.ids("Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|284057505612387")) == 1


def test_parallel_updates_never_reuse_a_version(app: Flask, fhir: Fhir) -> None:
    created = fhir.create({"resourceType": "Patient", "name": [{"family": "Racy"}]})
    pid = created["id"]

    def bump(i: int) -> int:
        body = {**created, "name": [{"family": f"Racy{i}"}]}
        response = authed(app.test_client()).put(
            f"/fhir/Patient/{pid}", data=orjson.dumps(body), headers={"Content-Type": "application/fhir+json"}
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(bump, range(20)))
    # At least one update wins; each loser is refused as a conflict (409, R4 http.html#concurrency), never
    # lost or given a reused version. All 409 would mean no update can succeed under contention.
    assert statuses.count(200) >= 1, statuses
    assert all(s in (200, 409, 412) for s in statuses), statuses
    history = fhir.request("GET", f"/fhir/Patient/{pid}/_history?_count=100").get_json()
    versions = [int(e["response"]["etag"].strip('W/"')) for e in history["entry"]]
    assert len(versions) == len(set(versions)) == 1 + statuses.count(200)


def test_stale_conditional_claim_is_released(fhir: Fhir) -> None:
    criteria = "identifier=urn:test|stale"
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": "stale"}]}
    first = fhir.request("POST", "/fhir/Patient", body, If_None_Exist=criteria).get_json()
    # The resource stops matching the criteria: a new conditional create must create again.
    fhir.request("PUT", f"/fhir/Patient/{first['id']}", {"resourceType": "Patient", "id": first["id"]})
    second = fhir.request("POST", "/fhir/Patient", body, If_None_Exist=criteria)
    assert second.status_code == 201
    assert second.get_json()["id"] != first["id"]
