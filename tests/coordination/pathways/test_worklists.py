"""The worklist searches practice software runs against a CPTS pathway (issue 7), and who sees them."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from tests.conftest import Fhir
from tests.coordination.pathways.support import PHARMACIST, directory, pathway
from tests.support.auth import bearer, practitioner_user, session_key_ready, user_token
from tests.support.search import match_ids, put, typed_ids

__all__ = ["session_key_ready"]  # autouse fixture: the auth pages' session key is loaded


@pytest.fixture
def two_pathways(fhir: Fhir) -> Fhir:
    directory(fhir)
    pathway(fhir, "p1")
    pathway(fhir, "p2")
    return fhir


def test_active_care_plan_includes_its_activities(two_pathways: Fhir) -> None:
    bundle = two_pathways.search(
        "CarePlan?patient=Patient/p1&status=active&_include=CarePlan:activity-reference"
    )
    assert match_ids(bundle) == ["p1-plan"]
    assert typed_ids(bundle, "include") == {
        "Task/p1-t-visit",
        "ServiceRequest/p1-soins",
        "CommunicationRequest/p1-cr",
    }


def test_owner_worklist_is_sorted_by_deadline(two_pathways: Fhir) -> None:
    bundle = two_pathways.search("Task?owner=Practitioner/gp&status=requested,accepted&_sort=deadline")
    # p1 and p2 each have one accepted call for the GP (due the 8th); the completed ones are left out.
    assert sorted(match_ids(bundle)) == ["p1-t-call", "p2-t-call"]
    put(
        two_pathways,
        {
            "resourceType": "Task",
            "id": "urgent",
            "status": "requested",
            "intent": "order",
            "for": {"reference": "Patient/p2"},
            "owner": {"reference": "Practitioner/gp"},
            "restriction": {"period": {"end": "2026-03-07T08:00:00Z"}},
        },
    )
    ordered = match_ids(
        two_pathways.search("Task?owner=Practitioner/gp&status=requested,accepted&_sort=deadline")
    )
    assert ordered[0] == "urgent" and sorted(ordered[1:]) == ["p1-t-call", "p2-t-call"]
    latest_first = match_ids(
        two_pathways.search("Task?owner=Practitioner/gp&status=requested,accepted&_sort=-deadline")
    )
    assert latest_first[-1] == "urgent"


def test_overdue_tasks_by_deadline(two_pathways: Fhir) -> None:
    due = match_ids(
        two_pathways.search("Task?status=requested,accepted&deadline=lt2026-03-09&_sort=deadline")
    )
    assert sorted(due) == ["p1-t-call", "p2-t-call"]


def test_owner_worklist_sorts_on_execution_period(two_pathways: Fhir) -> None:
    put(
        two_pathways,
        {
            "resourceType": "Task",
            "id": "started",
            "status": "accepted",
            "intent": "order",
            "for": {"reference": "Patient/p1"},
            "owner": {"reference": "PractitionerRole/nurse-cpts"},
            "executionPeriod": {"start": "2026-03-07T08:00:00Z"},
        },
    )
    ordered = match_ids(
        two_pathways.search("Task?owner=PractitionerRole/nurse-cpts&status=requested,accepted&_sort=period")
    )
    # R4 Task 'period' is executionPeriod: Tasks without one sort last.
    assert ordered[0] == "started" and sorted(ordered[1:]) == ["p1-t-visit", "p2-t-visit"]


def test_open_requests_for_a_profession_have_no_owner(two_pathways: Fhir) -> None:
    bundle = two_pathways.search(f"Task?performer={PHARMACIST}&status=requested&owner:missing=true")
    assert sorted(match_ids(bundle)) == ["p1-t-open", "p2-t-open"]
    taken = two_pathways.search(f"Task?performer={PHARMACIST}&status=requested&owner:missing=false")
    assert match_ids(taken) == []


def test_care_teams_of_a_participant(two_pathways: Fhir) -> None:
    for member in ("Practitioner/gp", "PractitionerRole/nurse-cpts", "Organization/cpts"):
        bundle = two_pathways.search(f"CareTeam?participant={member}&status=active")
        assert sorted(match_ids(bundle)) == ["p1-team", "p2-team"], member
    assert match_ids(two_pathways.search("CareTeam?participant=RelatedPerson/p1-aidant&status=active")) == [
        "p1-team"
    ]


def test_discharges_with_their_follow_up_tasks(two_pathways: Fhir) -> None:
    bundle = two_pathways.search("Encounter?status=finished&date=ge2026-03-01&_revinclude=Task:focus")
    assert sorted(match_ids(bundle)) == ["p1-stay", "p2-stay"]
    assert {i for i in typed_ids(bundle, "include") if i.startswith("Task/")} == {
        f"Task/{p}-t-{kind}" for p in ("p1", "p2") for kind in ("visit", "call", "open", "done")
    }
    assert match_ids(two_pathways.search("Encounter?status=finished&date=ge2026-04-01")) == []


def test_discharges_still_awaiting_follow_up(two_pathways: Fhir) -> None:
    for kind in ("visit", "call", "open"):
        resource = two_pathways.search(f"Task?_id=p2-t-{kind}")["entry"][0]["resource"]
        put(two_pathways, {**resource, "status": "completed"})
    bundle = two_pathways.search(
        "Encounter?status=finished&date=ge2026-03-01&_has:Task:focus:status=requested,accepted"
    )
    assert match_ids(bundle) == ["p1-stay"]


# -- the care-team rule on worklists --------------------------------------------------------------

WORKLISTS = [
    "CarePlan?patient=Patient/p1&status=active&_include=CarePlan:activity-reference",
    "Task?status=requested,accepted&_sort=deadline",
    f"Task?performer={PHARMACIST}&status=requested&owner:missing=true",
    "CareTeam?participant=PractitionerRole/nurse-cpts&status=active",
    "Encounter?status=finished&date=ge2026-03-01&_revinclude=Task:focus",
    "ServiceRequest?status=active",
    "CommunicationRequest?status=active",
    "Appointment?status=booked",
    "Goal?lifecycle-status=active",
]


def _as(fhir: Fhir, token: str, query: str) -> dict[str, Any]:
    response = fhir.request("GET", f"/fhir/{query}", **bearer(token))
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def _patients_of(bundle: dict[str, Any]) -> set[str]:
    """The patients the entries are about (Appointments by their patient participant)."""
    out = set()
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        refs = [resource.get(k, {}).get("reference") for k in ("subject", "for", "patient")]
        refs += [p.get("actor", {}).get("reference") for p in resource.get("participant", [])]
        out |= {r.split("/")[1] for r in refs if isinstance(r, str) and r.startswith("Patient/")}
    return out


@pytest.mark.parametrize("query", WORKLISTS)
def test_care_team_member_sees_the_worklist_and_outsider_nothing(fhir: Fhir, app: Flask, query: str) -> None:
    member = practitioner_user(app, "dr", "10101010101")
    practitioner_user(app, "outsider", "10101010102")
    directory(fhir)
    pathway(fhir, "p1", gp=f"Practitioner/{member}")
    pathway(fhir, "p2")  # the member is not in p2's care team
    inside = _as(fhir, user_token(app, "user/*.rs", "dr"), query)
    outside = _as(fhir, user_token(app, "user/*.rs", "outsider"), query)
    assert _patients_of(inside) == {"p1"}
    assert outside.get("entry", []) == []
