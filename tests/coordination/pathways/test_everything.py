"""Patient/[id]/$everything and Encounter/[id]/$everything (R4 patient-operation-everything.html)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from sqlalchemy import text

from coordination_api.fhir.everything import CARE_DATE
from tests.conftest import Fhir
from tests.coordination.pathways.support import directory, pathway
from tests.factories import create_consent_deny
from tests.support.auth import (
    PASSWORD,
    authorize_url,
    bearer,
    csrf_token_of,
    exchange_code,
    log_in,
    pkce_pair,
    practitioner_user,
    public_client,
    session_key_ready,
    user_token,
)
from tests.support.search import entries_by_mode, link, local, observation, put, typed_ids

__all__ = ["session_key_ready"]  # autouse fixture: the auth pages' session key is loaded

P1_RECORD = {
    "Patient/p1",
    "RelatedPerson/p1-aidant",
    "CareTeam/p1-team",
    "Encounter/p1-stay",
    "Goal/p1-goal",
    "ServiceRequest/p1-soins",
    "CommunicationRequest/p1-cr",
    "Task/p1-t-visit",
    "Task/p1-t-call",
    "Task/p1-t-open",
    "Task/p1-t-done",
    "CarePlan/p1-plan",
    "Appointment/p1-rdv",
}


@pytest.fixture
def record(fhir: Fhir) -> Fhir:
    directory(fhir)
    pathway(fhir, "p1")
    pathway(fhir, "p2")
    return fhir


def everything(fhir: Fhir, url: str, status: int = 200, **headers: str) -> dict[str, Any]:
    response = fhir.request("GET", url, **headers)
    body: dict[str, Any] = response.get_json()
    assert response.status_code == status, body
    return body


def test_returns_the_patient_record_and_what_supports_it(record: Fhir) -> None:
    bundle = everything(record, "/fhir/Patient/p1/$everything?_count=100")
    assert bundle["type"] == "searchset"
    assert typed_ids(bundle, "match") == P1_RECORD
    assert bundle["total"] == len(P1_RECORD)
    # Referenced practitioners, roles, organizations and locations come as includes (never p2's data).
    assert typed_ids(bundle, "include") == {
        "Practitioner/gp",
        "Practitioner/pharma",
        "PractitionerRole/nurse-cpts",
        "Organization/cpts",
        "Organization/chu",
        "Location/cabinet",
    }
    assert bundle["entry"][0]["fullUrl"] == "http://localhost/fhir/Patient/p1"


def test_pages_follow_next_links_without_gaps_or_repeats(record: Fhir) -> None:
    bundle = everything(record, "/fhir/Patient/p1/$everything?_count=4")
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        seen += [
            f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries_by_mode(bundle, "match")
        ]
        assert bundle["total"] == len(P1_RECORD)
        if pages == 1:  # created after the first page: not part of this paging session
            put(record, observation("late", subject="Patient/p1"))
        nxt = link(bundle, "next")
        if nxt is None:
            break
        bundle = everything(record, local(nxt))
    assert pages == 4
    assert len(seen) == len(set(seen)) and set(seen) == P1_RECORD
    assert "Observation/late" in typed_ids(
        everything(record, "/fhir/Patient/p1/$everything?_count=100"), "match"
    )


def test_start_and_end_apply_to_care_dates(record: Fhir) -> None:
    put(record, observation("old", subject="Patient/p1", effectiveDateTime="2025-06-01"))
    put(record, observation("undated", subject="Patient/p1"))
    bundle = everything(record, "/fhir/Patient/p1/$everything?start=2026-03-07&end=2026-03-31&_count=100")
    matches = typed_ids(bundle, "match")
    # In range: the appointment (the 12th), CareTeam/CarePlan periods still open; undated resources stay.
    assert {"Appointment/p1-rdv", "CareTeam/p1-team", "CarePlan/p1-plan", "Observation/undated"} <= matches
    # Out of range: the stay (1st-6th), orders and tasks authored on the 6th, the 2025 observation.
    for out in ("Encounter/p1-stay", "ServiceRequest/p1-soins", "Task/p1-t-visit", "Observation/old"):
        assert out not in matches
    assert "Patient/p1" in matches and "Goal/p1-goal" not in matches
    only_start = typed_ids(everything(record, "/fhir/Patient/p1/$everything?start=2026&_count=100"), "match")
    assert "Observation/old" not in only_start and "Encounter/p1-stay" in only_start
    only_end = typed_ids(everything(record, "/fhir/Patient/p1/$everything?end=2025-12&_count=100"), "match")
    assert "Observation/old" in only_end and "Encounter/p1-stay" not in only_end


def test_since_keeps_what_changed_after(record: Fhir) -> None:
    stamp = everything(record, "/fhir/Patient/p1/$everything?_count=100")["entry"][-1]["resource"]["meta"]
    updated = put(record, observation("recent", subject="Patient/p1"))
    since = updated["meta"]["lastUpdated"]
    assert since > stamp["lastUpdated"]
    bundle = everything(record, f"/fhir/Patient/p1/$everything?_since={since.replace('+', '%2B')}")
    assert typed_ids(bundle, "match") == {"Observation/recent"}


def test_type_restricts_the_resource_types(record: Fhir) -> None:
    bundle = everything(record, "/fhir/Patient/p1/$everything?_type=Task,CarePlan&_count=100")
    assert typed_ids(bundle, "match") == {r for r in P1_RECORD if r.startswith(("Task/", "CarePlan/"))}


def test_post_with_a_parameters_body(record: Fhir) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Goal,Patient"},
            {"name": "_count", "valueInteger": 10},
        ],
    }
    response = record.request("POST", "/fhir/Patient/p1/$everything", body)
    assert response.status_code == 200, response.get_json()
    assert typed_ids(response.get_json(), "match") == {"Patient/p1", "Goal/p1-goal"}


def test_encounter_everything_is_the_encounter_compartment(record: Fhir) -> None:
    put(record, observation("during", subject="Patient/p1", encounter={"reference": "Encounter/p1-stay"}))
    put(record, observation("elsewhere", subject="Patient/p1"))
    bundle = everything(record, "/fhir/Encounter/p1-stay/$everything")
    assert typed_ids(bundle, "match") == {"Encounter/p1-stay", "Observation/during"}
    assert typed_ids(bundle, "include") == {"Organization/chu"}


def test_unknown_patient_is_404(record: Fhir) -> None:
    body = everything(record, "/fhir/Patient/nobody/$everything", 404)
    assert body["resourceType"] == "OperationOutcome"
    everything(record, "/fhir/Encounter/nothing/$everything", 404)


@pytest.mark.parametrize(
    "query",
    [
        "start=yesterday",
        "end=2026-13-01",
        "start=2026-04-01&end=2026-03-01",
        "_since=soon",
        "_type=Spaceship",
        "_count=-1",
        "_count=many",
        "unknown=1",
        "_type=Task&_type=Goal",
        "_page=not-a-token",
    ],
)
def test_bad_parameters_are_400(record: Fhir, query: str) -> None:
    body = everything(record, f"/fhir/Patient/p1/$everything?{query}", 400)
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["diagnostics"]


def test_care_dates_name_date_parameters(app: Flask) -> None:
    registry = app.extensions["coordination"].repo.registry
    for resource_type, code in CARE_DATE.items():
        param = registry.get(resource_type, code)
        assert param is not None and param.type == "date", (resource_type, code)


def test_capability_statement_declares_the_operations(record: Fhir) -> None:
    statement = everything(record, "/fhir/metadata")
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    for resource_type in ("Patient", "Encounter"):
        names = {op["name"]: op["definition"] for op in resources[resource_type]["operation"]}
        assert names["everything"] == f"http://hl7.org/fhir/OperationDefinition/{resource_type}-everything"


# -- policy ------------------------------------------------------------------------------------------


def _member_record(fhir: Fhir, app: Flask) -> str:
    member = practitioner_user(app, "dr", "10101010101")
    directory(fhir)
    pathway(fhir, "p1", gp=f"Practitioner/{member}")
    pathway(fhir, "p2")
    return member


def test_care_team_member_gets_everything_and_it_is_audited(fhir: Fhir, app: Flask) -> None:
    member = _member_record(fhir, app)
    token = user_token(app, "user/*.rs", "dr")
    bundle = everything(fhir, "/fhir/Patient/p1/$everything?_count=100", **bearer(token))
    assert typed_ids(bundle, "match") == P1_RECORD
    app.extensions["audit_writer"].flush()
    with app.extensions["coordination"].repo.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT a.subtype, a.outcome, p.patient_id, a.content FROM audit_event a "
                "JOIN audit_patient p ON p.audit_pk = a.pk WHERE a.agent = :agent AND a.subtype = 'operation'"
            ),
            {"agent": f"Practitioner/{member}"},
        ).all()
    assert [(r[0], r[1], r[2]) for r in rows] == [("operation", "0", "p1")]
    assert '"reference":"Goal/p1-goal"' in rows[0][3]  # each resource returned is an entity


def test_outsider_is_refused(fhir: Fhir, app: Flask) -> None:
    _member_record(fhir, app)
    practitioner_user(app, "outsider", "10101010102")
    token = user_token(app, "user/*.rs", "outsider")
    body = everything(fhir, "/fhir/Patient/p1/$everything", 403, **bearer(token))
    assert body["resourceType"] == "OperationOutcome"
    everything(fhir, "/fhir/Encounter/p1-stay/$everything", 403, **bearer(token))


def test_member_is_refused_another_patient(fhir: Fhir, app: Flask) -> None:
    _member_record(fhir, app)
    token = user_token(app, "user/*.rs", "dr")
    everything(fhir, "/fhir/Patient/p2/$everything", 403, **bearer(token))


def test_consent_denial_wins_over_the_care_team(fhir: Fhir, app: Flask) -> None:
    member = _member_record(fhir, app)
    create_consent_deny(fhir.client, "p1", f"Practitioner/{member}")
    token = user_token(app, "user/*.rs", "dr")
    everything(fhir, "/fhir/Patient/p1/$everything", 403, **bearer(token))


def test_scopes_limit_the_types_returned(fhir: Fhir, app: Flask) -> None:
    _member_record(fhir, app)
    token = user_token(app, "user/Patient.rs user/Task.rs", "dr")
    bundle = everything(fhir, "/fhir/Patient/p1/$everything?_count=100", **bearer(token))
    assert typed_ids(bundle, "match") == {r for r in P1_RECORD if r.startswith(("Patient/", "Task/"))}
    assert typed_ids(bundle, "include") == set()


def _patient_token(app: Flask, patient_id: str) -> str:
    """SMART standalone launch with ``launch/patient``: the practitioner picks ``patient_id``."""
    scope = "launch/patient patient/*.rs"
    client_id = public_client(app, scope)
    verifier, challenge = pkce_pair()
    browser = app.test_client()
    url = authorize_url(client_id, challenge, scope)
    assert log_in(browser, "dr", PASSWORD, next_url=url).status_code == 303
    page = browser.get(url)
    form = {
        "csrf_token": csrf_token_of(page.get_data(as_text=True)),
        "decision": "approve",
        "patient": patient_id,
    }
    done = browser.post(url, data=form)
    assert done.status_code == 302, done.get_data(as_text=True)
    code = parse_qs(urlsplit(done.headers["Location"]).query)["code"][0]
    token: str = exchange_code(browser, client_id, code, verifier).get_json()["access_token"]
    return token


def test_patient_scoped_token_reaches_only_its_patient(fhir: Fhir, app: Flask) -> None:
    member = practitioner_user(app, "dr", "10101010101")
    directory(fhir)
    pathway(fhir, "p1", gp=f"Practitioner/{member}")
    pathway(fhir, "p2", gp=f"Practitioner/{member}")  # in both care teams
    token = _patient_token(app, "p1")
    bundle = everything(fhir, "/fhir/Patient/p1/$everything?_count=100", **bearer(token))
    assert typed_ids(bundle, "match") == P1_RECORD
    everything(fhir, "/fhir/Patient/p2/$everything", 403, **bearer(token))


def test_resource_shared_with_a_patient_out_of_reach_is_left_out(fhir: Fhir, app: Flask) -> None:
    _member_record(fhir, app)
    shared = {
        "resourceType": "Appointment",
        "id": "joint",
        "status": "booked",
        "start": "2026-03-10T09:00:00Z",  # app-3: a booked appointment has its dates
        "end": "2026-03-10T09:30:00Z",
        "participant": [
            {"actor": {"reference": "Patient/p1"}, "status": "accepted"},
            {"actor": {"reference": "Patient/p2"}, "status": "accepted"},
        ],
    }
    put(fhir, shared)
    assert "Appointment/joint" in typed_ids(
        everything(fhir, "/fhir/Patient/p1/$everything?_count=100"), "match"
    )
    token = user_token(app, "user/*.rs", "dr")
    seen: set[str] = set()
    bundle = everything(fhir, "/fhir/Patient/p1/$everything?_count=3", **bearer(token))
    while True:
        assert bundle["total"] == len(P1_RECORD)
        seen |= typed_ids(bundle, "match")
        nxt = link(bundle, "next")
        if nxt is None:
            break
        bundle = everything(fhir, local(nxt), **bearer(token))
    assert seen == P1_RECORD  # the joint appointment (p2 is out of reach) is not among them
