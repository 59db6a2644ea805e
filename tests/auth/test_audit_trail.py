"""The audit trail as FHIR: AuditEvent search and read (R4 auditevent.html), who may see it."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, func, select

from auth.audit import AuditRecord, AuditUnavailableError, AuditWriter, audit_row
from auth.schema import audit_event, audit_patient
from coordination_api.app import create_app
from coordination_api.config import Settings
from tests.conftest import close_app, system_token
from tests.factories import create_care_team, create_observation, create_patient
from tests.support.auth import bearer, practitioner_user, session_key_ready, user_token

__all__ = ["session_key_ready"]  # autouse fixture: the auth pages' session key is loaded

AUDIT_SCOPE = "system/AuditEvent.rs"


def _auditor(client: FlaskClient) -> dict[str, str]:
    return bearer(system_token(client, AUDIT_SCOPE))


def _search(client: FlaskClient, query: str, headers: dict[str, str]) -> dict[str, Any]:
    response = client.get(f"/fhir/AuditEvent{query}", headers=headers)
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
    return body


def _events(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def test_wildcard_scope_does_not_open_the_audit_trail(client: FlaskClient) -> None:
    response = client.get("/fhir/AuditEvent")  # the fixture's token is system/*.cruds
    assert response.status_code == 403
    assert response.get_json()["issue"][0]["code"] == "forbidden"


def test_audit_trail_needs_a_token(anonymous_client: FlaskClient) -> None:
    response = anonymous_client.get("/fhir/AuditEvent")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_reads_are_found_by_patient_newest_first(client: FlaskClient) -> None:
    patient_id = create_patient(client, "Martin")
    other = create_patient(client, "Durand")
    for _ in range(2):
        assert client.get(f"/fhir/Patient/{patient_id}").status_code == 200
    assert client.get(f"/fhir/Patient/{other}").status_code == 200
    auditor = _auditor(client)
    bundle = _search(client, f"?patient=Patient/{patient_id}&subtype=read", auditor)
    events = _events(bundle)
    assert len(events) == 2
    assert all(e["subtype"][0]["code"] == "read" for e in events)
    assert events[0]["recorded"] >= events[1]["recorded"]
    patients = [
        ent["what"]["reference"]
        for e in events
        for ent in e["entity"]
        if ent.get("role", {}).get("code") == "1"
    ]
    assert patients == [f"Patient/{patient_id}"] * 2
    # Bare ids and absolute references name the same patient.
    assert len(_events(_search(client, f"?patient={patient_id}&subtype=read", auditor))) == 2
    creates = _events(_search(client, f"?patient={patient_id}&subtype=create", auditor))
    assert [e["action"] for e in creates] == ["C"]


def test_search_by_entity_outcome_and_client(client: FlaskClient) -> None:
    patient_id = create_patient(client, "Petit")
    obs = create_observation(client, patient_id)
    assert client.get(f"/fhir/Observation/{obs}").status_code == 200
    assert client.get("/fhir/Observation/does-not-exist").status_code == 404
    auditor = _auditor(client)
    reads = _events(_search(client, f"?entity=Observation/{obs}&subtype=read", auditor))
    assert len(reads) == 1 and reads[0]["outcome"] == "0"
    failures = _events(_search(client, "?outcome=4&subtype=read", auditor))
    assert [e["outcome"] for e in failures] == ["4"]
    client_id = reads[0]["agent"][0]["who"]["identifier"]["value"]
    mine = _events(
        _search(client, f"?agent:identifier=urn:coordination:client|{client_id}&subtype=read", auditor)
    )
    assert len(mine) == 2
    assert _events(_search(client, "?agent:identifier=urn:coordination:client|nobody", auditor)) == []


def test_date_prefixes(client: FlaskClient) -> None:
    create_patient(client, "Dates")
    auditor = _auditor(client)
    assert _events(_search(client, "?date=ge2020-01-01&subtype=create", auditor))
    assert _events(_search(client, "?date=lt2020-01-01", auditor)) == []
    assert _events(_search(client, "?date=gt2999-01-01", auditor)) == []
    response = client.get("/fhir/AuditEvent?date=yesterday", headers=auditor)
    assert response.status_code == 400
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_paging_follows_next_links_without_repeats(client: FlaskClient) -> None:
    patient_id = create_patient(client, "Pages")
    for _ in range(5):
        client.get(f"/fhir/Patient/{patient_id}")
    auditor = _auditor(client)
    bundle = _search(client, f"?patient={patient_id}&subtype=read&_count=2&_total=accurate", auditor)
    assert bundle["total"] == 5
    seen = [e["id"] for e in _events(bundle)]
    while True:
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            break
        path = nxt[0].split("/fhir", 1)[1]
        response = client.get(f"/fhir{path}", headers=auditor)
        assert response.status_code == 200
        bundle = response.get_json()
        seen += [e["id"] for e in _events(bundle)]
    assert len(seen) == 5 and len(set(seen)) == 5


def test_read_by_id_and_vread(client: FlaskClient) -> None:
    create_patient(client, "Byid")
    auditor = _auditor(client)
    event = _events(_search(client, "?subtype=create", auditor))[0]
    response = client.get(f"/fhir/AuditEvent/{event['id']}", headers=auditor)
    assert response.status_code == 200
    assert response.get_json() == event
    assert response.headers["ETag"] == 'W/"1"'
    assert client.get(f"/fhir/AuditEvent/{event['id']}/_history/1", headers=auditor).status_code == 200
    assert client.get(f"/fhir/AuditEvent/{event['id']}/_history/2", headers=auditor).status_code == 404
    assert client.get("/fhir/AuditEvent/unknown", headers=auditor).status_code == 404


def test_audit_trail_cannot_be_written(client: FlaskClient) -> None:
    auditor = bearer(system_token(client, "system/AuditEvent.cruds"))
    body = {"resourceType": "AuditEvent"}
    created = client.post(
        "/fhir/AuditEvent", json=body, headers={**auditor, "Content-Type": "application/fhir+json"}
    )
    assert created.status_code == 405
    event = _events(_search(client, "", auditor))[0]
    deleted = client.delete(f"/fhir/AuditEvent/{event['id']}", headers=auditor)
    assert deleted.status_code == 405
    assert client.get(f"/fhir/AuditEvent/{event['id']}", headers=auditor).status_code == 200


def test_unknown_parameter_is_a_warning_or_400_when_strict(client: FlaskClient) -> None:
    auditor = _auditor(client)
    bundle = _search(client, "?site=somewhere", auditor)
    outcomes = [e for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"]
    assert outcomes and "site" in outcomes[0]["resource"]["issue"][0]["diagnostics"]
    strict = client.get("/fhir/AuditEvent?site=x", headers={**auditor, "Prefer": "handling=strict"})
    assert strict.status_code == 400


def test_bad_input_is_4xx_operation_outcome(client: FlaskClient) -> None:
    auditor = _auditor(client)
    for query in [
        "?_count=abc",
        "?patient=a/b/c",
        "?subtype=",
        "?_sort=date",
        "?agent:missing=true",
        "?_page=not-a-token",
        "?_page=" + base64.urlsafe_b64encode(b'{"p":[],"o":0,"c":2,"b":0,"k":["x"]}').decode(),
    ]:
        response = client.get(f"/fhir/AuditEvent{query}", headers=auditor)
        assert response.status_code == 400, query
        assert response.get_json()["resourceType"] == "OperationOutcome", query
    history = client.get("/fhir/AuditEvent/_history", headers=auditor)
    assert history.status_code == 400


def test_practitioner_sees_only_own_accesses(client: FlaskClient, app: Flask) -> None:
    practitioner_id = practitioner_user(app)
    colleague = practitioner_user(app, "colleague", "10101010102")
    patient_id = create_patient(client, "Shared")
    create_care_team(client, patient_id, f"Practitioner/{practitioner_id}")
    create_care_team(client, patient_id, f"Practitioner/{colleague}")
    mine = user_token(app, "user/Patient.rs user/AuditEvent.rs")
    theirs = user_token(app, "user/Patient.rs", "colleague")
    assert client.get(f"/fhir/Patient/{patient_id}", headers=bearer(mine)).status_code == 200
    assert client.get(f"/fhir/Patient/{patient_id}", headers=bearer(theirs)).status_code == 200
    events = _events(_search(client, "?subtype=read", bearer(mine)))
    assert len(events) == 1
    assert any(a["who"].get("reference") == f"Practitioner/{practitioner_id}" for a in events[0]["agent"])
    everything = _events(_search(client, "?subtype=read", _auditor(client)))
    assert len(everything) == 2
    other_event = next(e for e in everything if e["id"] != events[0]["id"])
    assert client.get(f"/fhir/AuditEvent/{other_event['id']}", headers=bearer(mine)).status_code == 403


def test_reading_the_audit_trail_is_itself_audited(client: FlaskClient) -> None:
    auditor = _auditor(client)
    _search(client, "?subtype=read", auditor)
    searches = _events(_search(client, "?subtype=search-type", auditor))
    queries = [
        base64.b64decode(ent["query"]).decode()
        for e in searches
        for ent in e.get("entity", [])
        if "query" in ent
    ]
    assert "subtype=read" in queries


def test_capability_statement_declares_smart_and_a_read_only_audit_trail(
    anonymous_client: FlaskClient,
) -> None:
    rest = anonymous_client.get("/fhir/metadata").get_json()["rest"][0]
    service = rest["security"]["service"][0]["coding"][0]
    assert service["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in rest["security"]["extension"][0]["extension"]}
    assert uris["token"].endswith("/auth/token") and uris["authorize"].endswith("/auth/authorize")
    audit = next(r for r in rest["resource"] if r["type"] == "AuditEvent")
    assert {i["code"] for i in audit["interaction"]} == {"read", "vread", "search-type"}
    assert {p["name"] for p in audit["searchParam"]} >= {"patient", "agent", "date", "entity", "subtype"}


def test_async_read_audit_is_committed_by_the_writer_thread(database_url: str) -> None:
    """The default mode: the response does not wait, the event is committed by the writer thread."""

    app = create_app(Settings(database_url=database_url, audit_reads="async"))
    client = app.test_client()
    client.get("/fhir/.well-known/smart-configuration")
    auditor = bearer(system_token(client, "system/Patient.cruds system/AuditEvent.rs"))
    created = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "name": [{"family": "Async"}]},
        headers={**auditor, "Content-Type": "application/fhir+json"},
    )
    patient_id = created.get_json()["id"]
    for _ in range(20):
        assert client.get(f"/fhir/Patient/{patient_id}", headers=auditor).status_code == 200
    assert app.extensions["audit_writer"].flush(10)
    events = _events(_search(client, f"?patient={patient_id}&subtype=read&_count=50", auditor))
    assert len(events) == 20
    close_app(app)


def test_audit_backlog_is_bounded_and_never_dropped(tmp_path: Any) -> None:
    """Database without the audit tables (as if down): events wait and are retried, and once the
    backlog is full the writer refuses (the API answers 503) rather than serve reads unaudited."""

    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    writer = AuditWriter(engine, "async", max_pending=2)
    record = AuditRecord("read", "GET", "/fhir/Patient/1", None, None)
    writer.write(audit_row(record, None, 200, 1))
    writer.write(audit_row(record, None, 200, 2))
    with pytest.raises(AuditUnavailableError):
        writer.write(audit_row(record, None, 200, 3))
    assert not writer.flush(0.5)  # still pending: retried, not dropped
    audit_event.create(engine)
    audit_patient.create(engine)  # the database is back
    assert writer.flush(20)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_event)).scalar_one() == 2
    sync = AuditWriter(engine, "sync")
    sync.write(audit_row(record, None, 200, 4))
    duplicate = audit_row(record, None, 200, 5)
    sync.write(duplicate)
    with pytest.raises(AuditUnavailableError):
        sync.write(duplicate)  # refused by the database: the request would get a 503
    # A bad event (here a duplicate) is dropped alone; the others of its batch are committed.
    writer.write(duplicate)
    writer.write(audit_row(record, None, 200, 6))
    assert writer.flush(20)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_event)).scalar_one() == 5
    with pytest.raises(ValueError, match="audit mode"):
        AuditWriter(engine, "later")


# -- issue 16: every read audited with its patients ----------------------------------------------------


def _query_of(event: dict[str, Any]) -> str | None:
    for entity in event.get("entity", []):
        if "query" in entity:
            return base64.b64decode(entity["query"]).decode()
    return None


def test_post_search_criteria_are_audited_like_get(client: FlaskClient) -> None:
    patient_id = create_patient(client, "Martin")
    response = client.post(
        "/fhir/Observation/_search",
        data={"subject": f"Patient/{patient_id}", "code": "8867-4"},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.get_json()
    events = _events(_search(client, "?subtype=search-type", _auditor(client)))
    queries = [_query_of(e) for e in events]
    assert any(q and f"subject=Patient%2F{patient_id}" in q and "code=8867-4" in q for q in queries), queries


def test_a_count_only_search_is_audited_with_its_patients(client: FlaskClient) -> None:
    patient_id = create_patient(client, "Martin")
    create_observation(client, patient_id)
    response = client.get(f"/fhir/Observation?subject={patient_id}&_summary=count")
    assert response.status_code == 200 and response.get_json()["total"] == 1
    events = _events(_search(client, f"?patient={patient_id}&subtype=search-type", _auditor(client)))
    assert len(events) == 1


def test_reads_of_a_batch_with_a_write_are_audited(client: FlaskClient) -> None:
    patient_id = create_patient(client, "Martin")
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "DELETE", "url": "Observation/nothing-here"}},
            {"request": {"method": "GET", "url": f"Patient/{patient_id}"}},
        ],
    }
    response = client.post("/fhir", json=batch, headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 200, response.get_json()
    events = _events(_search(client, f"?patient={patient_id}", _auditor(client)))
    assert [e for e in events if e["subtype"][0]["code"] != "create"], events
