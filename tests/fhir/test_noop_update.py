"""No-op updates (issue 18): a body equal to the current version's content (meta.versionId and
meta.lastUpdated aside) writes no version, as HAPI FHIR does; the answer is the current version."""

from __future__ import annotations

import time
from typing import Any

import orjson
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from auth.schema import audit_event
from coordination_api.storage.schema import resource_history
from tests.conftest import Fhir
from tests.factories import bundle_ok, put_entry

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "noop",
    "meta": {"tag": [{"system": "urn:test:tags", "code": "a"}]},
    "name": [{"family": "Dupont", "given": ["Jean"]}],
    "gender": "male",
    "birthDate": "1950-02-03",
}


def _rows(app: Flask, table: Any) -> int:
    with app.extensions["coordination"].repo.engine.connect() as conn:
        count: int = conn.execute(select(func.count()).select_from(table)).scalar_one()
    return count


def _put(fhir: Fhir, body: dict[str, Any], **headers: str) -> Any:
    return fhir.request("PUT", f"/fhir/{body['resourceType']}/{body['id']}", body, **headers)


def _created(fhir: Fhir, body: dict[str, Any]) -> Any:
    response = _put(fhir, body)
    assert response.status_code == 201, response.get_json()
    time.sleep(0.002)  # a later write would have a later lastUpdated (millisecond precision)
    return response


def test_identical_put_answers_the_current_version_and_writes_nothing(
    app: Flask, client: FlaskClient, fhir: Fhir
) -> None:
    first = _created(fhir, PATIENT)
    history, audits = _rows(app, resource_history), _rows(app, audit_event)
    again = _put(fhir, first.get_json())  # as read back: meta.versionId/lastUpdated included
    assert again.status_code == 200
    assert again.get_json() == first.get_json()
    assert again.headers["ETag"] == 'W/"1"'
    assert again.headers["Last-Modified"] == first.headers["Last-Modified"]
    bare = _put(fhir, {k: PATIENT[k] for k in reversed(PATIENT)})  # no server meta, keys reordered
    assert bare.status_code == 200 and bare.headers["ETag"] == 'W/"1"'
    assert _rows(app, resource_history) == history
    assert _rows(app, audit_event) == audits + 2  # the attempts are audited all the same
    assert fhir.request("GET", "/fhir/Patient/noop/_history").get_json()["total"] == 1


def test_a_change_of_meta_tag_profile_or_security_is_a_change(fhir: Fhir) -> None:
    _created(fhir, PATIENT)
    changes: list[dict[str, Any]] = [
        {"tag": [{"system": "urn:test:tags", "code": "b"}]},
        {"tag": [{"system": "urn:test:tags", "code": "b"}], "profile": ["http://example.org/p"]},
        {
            "tag": [{"system": "urn:test:tags", "code": "b"}],
            "profile": ["http://example.org/p"],
            "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
        },
        {},  # dropping them all (no meta at all: an empty one breaks ele-1)
    ]
    for number, meta in enumerate(changes, start=2):
        response = _put(fhir, {**PATIENT, "meta": meta} if meta else PATIENT)
        assert response.status_code == 200
        assert response.headers["ETag"] == f'W/"{number}"'


def test_a_decimal_written_with_another_precision_is_a_change(fhir: Fhir) -> None:
    """1 and 1.0 are equal as Python values, not as FHIR decimals (their precision differs)."""
    body = {
        "resourceType": "Observation",
        "id": "noop-obs",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
        "valueQuantity": {"value": 1.0, "unit": "m"},
    }
    _created(fhir, body)
    assert _put(fhir, body).headers["ETag"] == 'W/"1"'
    changed = _put(fhir, {**body, "valueQuantity": {"value": 1, "unit": "m"}})
    assert changed.status_code == 200 and changed.headers["ETag"] == 'W/"2"'


def test_a_reference_to_our_own_base_compares_as_stored(fhir: Fhir) -> None:
    """The stored body has absolute references to this server made relative (localized): the
    comparison is with the body as it would be stored."""
    _created(fhir, PATIENT)
    body = {
        "resourceType": "Observation",
        "id": "noop-ref",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
        "subject": {"reference": "Patient/noop"},
    }
    _created(fhir, body)
    absolute = {**body, "subject": {"reference": "http://localhost/fhir/Patient/noop"}}
    assert _put(fhir, absolute).headers["ETag"] == 'W/"1"'


def test_if_match_is_checked_before_anything(fhir: Fhir) -> None:
    _created(fhir, PATIENT)
    assert _put(fhir, {**PATIENT, "gender": "female"}).headers["ETag"] == 'W/"2"'
    stale = _put(fhir, {**PATIENT, "gender": "female"}, If_Match='W/"1"')
    assert stale.status_code == 412
    current = _put(fhir, {**PATIENT, "gender": "female"}, If_Match='W/"2"')
    assert current.status_code == 200 and current.headers["ETag"] == 'W/"2"'


def test_a_deleted_resource_put_back_as_it_was_is_a_new_version(fhir: Fhir) -> None:
    _created(fhir, PATIENT)
    assert fhir.request("DELETE", "/fhir/Patient/noop").status_code in (200, 204)
    response = _put(fhir, PATIENT)
    assert response.status_code == 201 and response.headers["ETag"] == 'W/"3"'


def test_conditional_put_and_patch_without_change(app: Flask, fhir: Fhir) -> None:
    body = {**PATIENT, "identifier": [{"system": "urn:test:mrn", "value": "N1"}]}
    _created(fhir, body)
    history = _rows(app, resource_history)
    response = fhir.request("PUT", "/fhir/Patient?identifier=urn:test:mrn|N1", body)
    assert response.status_code == 200 and response.headers["ETag"] == 'W/"1"'
    patch = [{"op": "replace", "path": "/gender", "value": "male"}]
    response = fhir.request(
        "PATCH", "/fhir/Patient/noop", orjson.dumps(patch), **{"Content-Type": "application/json-patch+json"}
    )
    assert response.status_code == 200 and response.headers["ETag"] == 'W/"1"'
    assert _rows(app, resource_history) == history


def test_transaction_put_entries_without_change(app: Flask, fhir: Fhir) -> None:
    _created(fhir, PATIENT)
    other = {**PATIENT, "id": "noop-2"}
    _created(fhir, other)
    history = _rows(app, resource_history)
    changed = {**other, "gender": "female"}
    body = bundle_ok(fhir, [put_entry(PATIENT, "Patient/noop"), put_entry(changed, "Patient/noop-2")])
    # The first entry changes nothing; the second one writes version 2.
    assert [e["response"]["status"] for e in body["entry"]] == ["200 OK", "200 OK"]
    assert [e["response"]["etag"] for e in body["entry"]] == ['W/"1"', 'W/"2"']
    assert body["entry"][0]["response"]["location"].endswith("/Patient/noop/_history/1")
    assert _rows(app, resource_history) == history + 1
    body = bundle_ok(
        fhir, [put_entry(PATIENT, "Patient/noop"), put_entry(changed, "Patient/noop-2")], "batch"
    )
    assert [e["response"]["etag"] for e in body["entry"]] == ['W/"1"', 'W/"2"']
    assert _rows(app, resource_history) == history + 1
