"""Task dispatch over HTTP, on both databases: entry, stages, escalation, access, the accept race."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from coordination_api.config import DispatchSettings
from tests.conftest import Fhir, stored_invalid
from tests.coordination.dispatch.conftest import (
    COORDINATOR,
    DOCTOR,
    GP,
    NURSE,
    USUAL_NURSE,
    Cpts,
    address,
    later,
    recipients,
    stage,
)
from tests.coordination.protocols.builders import load_library, parameters
from tests.factories import create_consent_deny


def _history(fhir: Fhir, task_id: str) -> list[dict[str, Any]]:
    bundle = fhir.search(f"Task/{task_id}/_history")
    return [e["resource"] for e in bundle["entry"]]


def test_created_task_is_offered_to_the_usual_nurse_in_the_same_transaction(cpts: Cpts) -> None:
    nurse = cpts.practitioner("usual-nurse")
    doctor = cpts.practitioner("gp")
    cpts.care_team((nurse, NURSE), (doctor, DOCTOR))
    task = cpts.task()
    assert task["meta"]["versionId"] == "2"  # version 1 as posted, version 2 offered
    assert stage(task) == "offered-usual"
    assert recipients(task) == [nurse]
    assert task["status"] == "requested" and "owner" not in task
    assert [v["meta"]["versionId"] for v in _history(cpts.fhir, task["id"])] == ["2", "1"]


def test_the_create_response_is_the_offered_version(cpts: Cpts) -> None:
    # R4 http.html#create: the answer describes the resource as stored; the offer is its version 2,
    # so an accept may use the create's ETag.
    nurse = cpts.practitioner("usual-nurse")
    cpts.care_team((nurse, NURSE))
    body = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": {"reference": f"Patient/{cpts.patient}"},
        "performerType": [NURSE],
    }
    response = cpts.fhir.request("POST", "/fhir/Task", body)
    assert response.status_code == 201
    assert response.headers["ETag"] == 'W/"2"'
    assert response.headers["Location"].endswith("/_history/2")
    assert recipients(response.get_json()) == [nurse]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": body, "request": {"method": "POST", "url": "Task"}}],
    }
    answer = cpts.fhir.request("POST", "/fhir", bundle).get_json()
    assert answer["entry"][0]["response"]["etag"] == 'W/"2"'


def test_task_created_in_a_transaction_enters_dispatch_too(cpts: Cpts) -> None:
    nurse = cpts.practitioner("usual-nurse")
    cpts.care_team((nurse, NURSE))
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:4f1c2d3e-0000-4000-8000-000000000001",
                "request": {"method": "POST", "url": "Task"},
                "resource": {
                    "resourceType": "Task",
                    "status": "requested",
                    "intent": "order",
                    "for": {"reference": f"Patient/{cpts.patient}"},
                    "performerType": [NURSE],
                },
            }
        ],
    }
    response = cpts.fhir.request("POST", "/fhir", bundle)
    assert response.status_code == 200, response.get_json()
    task_id = response.get_json()["entry"][0]["response"]["location"].split("Task/")[1].split("/")[0]
    task = cpts.read(task_id)
    assert stage(task) == "offered-usual" and recipients(task) == [nurse]


def test_tasks_that_are_not_open_do_not_enter_dispatch(cpts: Cpts) -> None:
    nurse = cpts.practitioner("usual-nurse")
    cpts.care_team((nurse, NURSE))
    owned = cpts.task(owner={"reference": nurse})
    without_type = cpts.task(performerType=None)
    draft = cpts.task(status="draft")
    for task in (owned, without_type, draft):
        assert task["meta"]["versionId"] == "1" and "businessStatus" not in task
    assert cpts.dispatcher.tick(later(10_000)) == 0


def test_tick_after_the_usual_delay_offers_to_the_area_by_postal_or_insee_code(cpts: Cpts) -> None:
    nurse = cpts.practitioner("usual-nurse")
    cpts.care_team((nurse, NURSE))
    by_postal = cpts.role("nurse-33000", location=address("33000"))
    by_insee = cpts.role("nurse-insee", covers=address(insee="33063"))
    cpts.role("nurse-paris", location=address("75011", "75111"))
    cpts.role("doctor-33000", DOCTOR, location=address("33000"))
    cpts.role("retired-33000", location=address("33000"), active=False)
    task = cpts.task()
    assert recipients(task) == [nurse]

    assert cpts.dispatcher.tick(later(1700)) == 0  # not due yet
    assert cpts.read(task["id"])["meta"]["versionId"] == "2"

    assert cpts.dispatcher.tick(later(1801)) == 1
    task = cpts.read(task["id"])
    assert task["meta"]["versionId"] == "3"
    assert stage(task) == "offered-area"
    assert recipients(task) == [nurse, by_postal, by_insee]
    # The offer is visible to a practice software polling open Tasks of its role.
    found = cpts.fhir.ids(f"Task?status=requested&business-status=offered-area&patient={cpts.patient}")
    assert found == {task["id"]}


def test_care_circle_role_finds_the_usual_nurse_then_nurses_of_the_area(cpts: Cpts) -> None:
    # As the protocol library writes it: performerType = the care-circle role "infirmier-habituel".
    nurse = cpts.practitioner("usual-nurse")
    cpts.care_team((nurse, USUAL_NURSE))
    area = cpts.role("nurse-33000", location=address("33000"))
    task = cpts.task(performerType=[USUAL_NURSE])
    assert stage(task) == "offered-usual" and recipients(task) == [nurse]
    cpts.dispatcher.tick(later(1801))
    assert recipients(cpts.read(task["id"])) == [nurse, area]


def test_speciality_matches_practitioner_role_specialty(cpts: Cpts) -> None:
    gp = cpts.role("gp-33000", DOCTOR, specialty=GP, location=address("33000"))
    cpts.role("cardiologist-33000", DOCTOR, location=address("33000"))
    task = cpts.task(performerType=[GP])  # no usual GP in a care team: straight to the area
    assert stage(task) == "offered-area" and recipients(task) == [gp]


def test_unaccepted_task_escalates_to_the_care_team_coordinator(cpts: Cpts) -> None:
    nurse = cpts.practitioner("usual-nurse")
    coordinator = cpts.practitioner("coordinator")
    cpts.care_team((nurse, NURSE), (coordinator, COORDINATOR))
    area = cpts.role("nurse-33000", location=address("33000"))
    task = cpts.task()
    cpts.dispatcher.tick(later(1801))
    assert cpts.dispatcher.tick(later(7201)) == 1
    task = cpts.read(task["id"])
    assert stage(task) == "escalated"
    assert task["owner"] == {"reference": coordinator}
    assert task["status"] == "requested"
    assert recipients(task) == [nurse, area, coordinator]  # the others may still take it
    assert cpts.dispatcher.tick(later(100_000)) == 0  # nothing more is due


def test_what_dispatch_writes_meets_the_base_rules(cpts: Cpts) -> None:
    """Escalation to nobody (no coordinator, no professional) once wrote ``restriction.recipient: []``,
    which a client reading the Task and writing it back got refused (ele-1)."""
    nobody = cpts.task()
    assert stage(nobody) == "escalated" and "recipient" not in nobody.get("restriction", {})
    nurse = cpts.practitioner("usual-nurse")
    cpts.care_team((nurse, NURSE))
    cpts.task()
    cpts.dispatcher.tick(later(10_000))
    assert stored_invalid(cpts.app) == []


def test_nobody_to_offer_to_escalates_at_once_to_the_configured_coordinator(cpts: Cpts) -> None:
    cpts.dispatcher.settings = replace(DispatchSettings(), coordinator="Organization/cpts-coordination")
    task = cpts.task()
    assert stage(task) == "escalated"
    assert task["owner"] == {"reference": "Organization/cpts-coordination"}
    assert task["meta"]["versionId"] == "2"


def test_offered_practitioner_reads_and_accepts_others_cannot(cpts: Cpts) -> None:
    nurse = cpts.practitioner("usual-nurse", login=True)
    doctor = cpts.practitioner("gp", login=True)
    cpts.practitioner("stranger", login=True)
    cpts.care_team((nurse, NURSE), (doctor, DOCTOR))
    task = cpts.task()
    offered, stranger = cpts.user("usual-nurse"), cpts.user("stranger")

    assert offered.request("GET", f"/fhir/Task/{task['id']}").status_code == 200
    assert offered.request("GET", f"/fhir/Patient/{cpts.patient}").status_code == 200
    assert offered.ids("Task?status=requested") == {task["id"]}
    assert stranger.request("GET", f"/fhir/Task/{task['id']}").status_code == 403
    assert stranger.request("GET", f"/fhir/Patient/{cpts.patient}").status_code == 403
    assert stranger.ids("Task?status=requested") == set()

    accept = {**task, "status": "accepted", "owner": {"reference": cpts.refs["stranger"]}}
    refused = stranger.request("PUT", f"/fhir/Task/{task['id']}", accept, If_Match='W/"2"')
    assert refused.status_code == 403, refused.get_json()
    # The patient's doctor reaches the Task (care team) but it was not offered to them.
    accept = {**task, "status": "accepted", "owner": {"reference": doctor}}
    refused = cpts.user("gp").request("PUT", f"/fhir/Task/{task['id']}", accept, If_Match='W/"2"')
    assert refused.status_code == 403, refused.get_json()
    assert "offer" in refused.get_json()["issue"][0]["diagnostics"]  # taken by accepting an offer only

    accept = {**task, "status": "accepted", "owner": {"reference": nurse}}
    response = offered.request("PUT", f"/fhir/Task/{task['id']}", accept, If_Match='W/"2"')
    assert response.status_code == 200, response.get_json()
    assert response.headers["ETag"] == 'W/"3"'
    # Owner of an open Task: still reaches the patient; the requester is told, in the same transaction.
    assert offered.request("GET", f"/fhir/Patient/{cpts.patient}").status_code == 200
    bundle = cpts.fhir.search(f"Communication?recipient={cpts.refs['requester']}")
    assert [e["resource"]["basedOn"] for e in bundle["entry"]] == [[{"reference": f"Task/{task['id']}"}]]
    note = bundle["entry"][0]["resource"]
    assert note["status"] == "completed" and note["sender"] == {"reference": nurse}
    assert note["subject"] == {"reference": f"Patient/{cpts.patient}"}
    assert cpts.dispatcher.tick(later(100_000)) == 0  # taken: no more stages


def test_an_offer_shows_the_task_and_the_patient_not_the_record_until_accepted(cpts: Cpts) -> None:
    # Least privilege: a professional of the area deciding on an offer sees the Patient and its Tasks;
    # the rest of the record opens only once they take the Task (and take part in the care).
    area_nurse = cpts.role("area-nurse", location=address("33000"), login=True)
    observation = cpts.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "Poids"},
            "subject": {"reference": f"Patient/{cpts.patient}"},
        }
    )
    task = cpts.task()
    assert recipients(task) == [area_nurse]  # nobody usual: offered to the area at once
    nurse = cpts.user("area-nurse")
    assert nurse.request("GET", f"/fhir/Task/{task['id']}").status_code == 200
    assert nurse.request("GET", f"/fhir/Patient/{cpts.patient}").status_code == 200
    assert nurse.request("GET", f"/fhir/Observation/{observation}").status_code == 403
    assert nurse.ids(f"Observation?patient={cpts.patient}") == set()
    # Nor through a protocol's conditions and dynamic values, which read the record.
    plan = cpts.create({"resourceType": "PlanDefinition", "status": "active", "action": [{"title": "x"}]})
    applied = nurse.request("GET", f"/fhir/PlanDefinition/{plan}/$apply?subject=Patient/{cpts.patient}")
    assert applied.status_code == 403, applied.get_json()

    accept = {**task, "status": "accepted", "owner": {"reference": area_nurse}}
    response = nurse.request("PUT", f"/fhir/Task/{task['id']}", accept, If_Match='W/"2"')
    assert response.status_code == 200, response.get_json()
    assert nurse.request("GET", f"/fhir/Observation/{observation}").status_code == 200


def test_an_offer_cannot_be_turned_into_access_to_the_record(cpts: Cpts) -> None:
    area_nurse = cpts.role("area-nurse", location=address("33000"), login=True)
    cpts.practitioner("colleague")
    observation = cpts.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "Poids"},
            "subject": {"reference": f"Patient/{cpts.patient}"},
        }
    )
    task = cpts.task()
    nurse = cpts.user("area-nurse")
    # A Task of one's own for that patient does not open the record (nor is it written).
    own = {
        "resourceType": "Task",
        "status": "in-progress",
        "intent": "order",
        "for": {"reference": f"Patient/{cpts.patient}"},
        "owner": {"reference": area_nurse},
    }
    assert nurse.request("POST", "/fhir/Task", own).status_code == 403
    assert nurse.request("GET", f"/fhir/Observation/{observation}").status_code == 403
    # The offered Task may be accepted, not handed to someone else, nor the Patient changed.
    handed = {**task, "status": "accepted", "owner": {"reference": cpts.refs["colleague"]}}
    assert nurse.request("PUT", f"/fhir/Task/{task['id']}", handed, If_Match='W/"2"').status_code == 403
    patient = cpts.fhir.request("GET", f"/fhir/Patient/{cpts.patient}").get_json()
    assert nurse.request("PUT", f"/fhir/Patient/{cpts.patient}", patient).status_code == 403
    # Once accepted, the owner works on their Task (same owner: the grant is theirs already).
    accept = {**task, "status": "accepted", "owner": {"reference": area_nurse}}
    taken = nurse.request("PUT", f"/fhir/Task/{task['id']}", accept, If_Match='W/"2"')
    assert taken.status_code == 200, taken.get_json()
    done = {**taken.get_json(), "status": "completed"}
    finished = nurse.request("PUT", f"/fhir/Task/{task['id']}", done, If_Match='W/"3"')
    assert finished.status_code == 200, finished.get_json()


def test_accepting_a_task_no_longer_requested_is_a_conflict(cpts: Cpts) -> None:
    nurse = cpts.practitioner("usual-nurse", login=True)
    colleague = cpts.practitioner("colleague", login=True)
    cpts.care_team((nurse, NURSE), (colleague, NURSE))
    task = cpts.task()
    assert recipients(task) == [nurse, colleague]
    first = cpts.user("usual-nurse").request(
        "PUT", f"/fhir/Task/{task['id']}", {**task, "status": "accepted", "owner": {"reference": nurse}}
    )
    assert first.status_code == 200, first.get_json()
    taken = cpts.read(task["id"])
    # The colleague re-read the Task (current If-Match) and still tries to take it: 409.
    late = {**taken, "owner": {"reference": colleague}}
    response = cpts.user("colleague").request("PUT", f"/fhir/Task/{task['id']}", late, If_Match='W/"3"')
    assert response.status_code == 409, response.get_json()
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert cpts.read(task["id"])["owner"] == {"reference": nurse}


def test_twenty_concurrent_accepts_make_exactly_one_owner(cpts: Cpts) -> None:
    cpts.dispatcher.settings = replace(DispatchSettings(), usual_seconds=0)
    names = [f"area-nurse-{i}" for i in range(20)]
    roles = [cpts.role(name, location=address("33000"), login=True) for name in names]
    task = cpts.task()
    assert stage(task) == "offered-area" and recipients(task) == roles
    sessions = [cpts.user(name) for name in names]
    start = threading.Barrier(20)

    def accept(i: int) -> int:
        body = {**task, "status": "accepted", "owner": {"reference": roles[i]}}
        start.wait()
        response = sessions[i].request("PUT", f"/fhir/Task/{task['id']}", body, If_Match='W/"2"')
        if response.status_code == 412:
            assert response.get_json()["resourceType"] == "OperationOutcome"
        return int(response.status_code)

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(accept, range(20)))
    assert sorted(statuses) == [200] + [412] * 19, statuses
    final = cpts.read(task["id"])
    assert final["status"] == "accepted" and final["meta"]["versionId"] == "3"
    winner = roles[statuses.index(200)]
    assert final["owner"] == {"reference": winner}
    notes = cpts.fhir.search(f"Communication?based-on=Task/{task['id']}")["entry"]
    assert len(notes) == 1 and notes[0]["resource"]["sender"] == {"reference": winner}


def test_two_concurrent_ticks_advance_a_task_once(cpts: Cpts) -> None:
    nurse = cpts.practitioner("usual-nurse")
    cpts.care_team((nurse, NURSE))
    cpts.role("nurse-33000", location=address("33000"))
    tasks = [cpts.task() for _ in range(3)]
    now = later(1801)
    start = threading.Barrier(2)

    def tick(_: int) -> int:
        start.wait()
        return cpts.dispatcher.tick(now)

    with ThreadPoolExecutor(max_workers=2) as pool:
        claimed = list(pool.map(tick, range(2)))
    assert sum(claimed) == 3, claimed
    for task in tasks:
        versions = _history(cpts.fhir, task["id"])
        assert [stage(v) for v in versions[:-1]] == ["offered-area", "offered-usual"]
        assert len(versions) == 3  # posted, offered to the usual nurse, offered to the area: once


def test_coordinator_creating_a_task_nobody_can_take_gets_it_back(cpts: Cpts) -> None:
    coordinator = cpts.practitioner("coordinator", login=True)
    cpts.care_team((coordinator, COORDINATOR))
    body = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": {"reference": f"Patient/{cpts.patient}"},
        "requester": {"reference": coordinator},
        "performerType": [NURSE],
    }
    response = cpts.user("coordinator").request("POST", "/fhir/Task", body)
    assert response.status_code == 201, response.get_json()
    task = cpts.read(response.get_json()["id"])
    assert stage(task) == "escalated" and task["owner"] == {"reference": coordinator}


def test_open_request_started_by_a_protocol_is_offered_to_the_gps_of_the_area(cpts: Cpts) -> None:
    load_library(cpts.app)
    gp = cpts.role("gp-33000", DOCTOR, specialty=GP, location=address("33000"))
    cpts.role("gp-paris", DOCTOR, specialty=GP, location=address("75011"))
    subject = f"Patient/{cpts.patient}"
    response = cpts.fhir.request(
        "POST", "/fhir/PlanDefinition/soins-non-programmes/$start", parameters(subject=subject)
    )
    assert response.status_code == 201, response.get_json()
    [entry] = cpts.fhir.search(f"Task?patient={subject}&performer={GP['coding'][0]['code']}")["entry"]
    task = entry["resource"]
    assert stage(task) == "offered-area" and recipients(task) == [gp]
    assert "end" in task["restriction"]["period"]  # the protocol's deadline is kept


def test_consent_denial_wins_over_an_offer(cpts: Cpts) -> None:
    nurse = cpts.practitioner("usual-nurse")
    cpts.care_team((nurse, NURSE))
    area = cpts.role("nurse-33000", location=address("33000"), login=True)
    create_consent_deny(cpts.fhir.client, cpts.patient, nurse)
    create_consent_deny(
        cpts.fhir.client, cpts.patient, cpts.refs["nurse-33000"]
    )  # the person behind the role
    task = cpts.task()
    assert stage(task) == "offered-area" and recipients(task) == [area]  # the opposed nurse is skipped
    session = cpts.user("nurse-33000")
    assert session.request("GET", f"/fhir/Task/{task['id']}").status_code == 403
    assert session.ids("Task?status=requested") == set()
