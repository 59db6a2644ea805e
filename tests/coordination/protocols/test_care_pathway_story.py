"""Issue 7 end to end, as the professionals live it: a hospital discharge starts the elderly-return
protocol, its Tasks land on the cercle de soins, the nurse accepts hers, the GP sees the plan and
``Patient/$everything`` returns it — each professional with their own SMART user token."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from coordination_api.accounts import create_practitioner_user
from tests.conftest import Fhir
from tests.coordination.protocols.builders import ELDERLY, care_team, load_library, practitioner
from tests.support.auth import PASSWORD, user_token
from tests.support.messages import as_sender, discharge_message, patient

FHIR_JSON = "application/fhir+json"


def _as(app: Flask, token: str) -> Fhir:
    client: FlaskClient = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return Fhir(client)


def test_discharge_to_plan_to_accepted_visit_to_everything(
    app: Flask, client: FlaskClient, fhir: Fhir
) -> None:
    load_library(app)
    app.test_client().get("/fhir/.well-known/smart-configuration")  # the session key
    gp = create_practitioner_user(app, "dr-martin", "10101010101", PASSWORD, "Martin", "Anne")
    nurse = create_practitioner_user(app, "idel-bernard", "20202020202", PASSWORD, "Bernard", "Luc")
    outsider = create_practitioner_user(app, "dr-other", "30303030303", PASSWORD, "Autre", "Paul")

    # The patient the hospital will name by its IPP, and her cercle de soins.
    known = patient(status="PROV")
    known.pop("id")
    known.pop("extension")
    subject = f"Patient/{fhir.create(known)['id']}"
    members = {
        "medecin-traitant": f"Practitioner/{gp}",
        "infirmier-habituel": f"Practitioner/{nurse}",
        "pharmacien-habituel": practitioner(fhir, "Petit"),
    }
    care_team(fhir, subject, members)

    # The hospital's discharge message.
    message = discharge_message(message_id="story-1", patient_resource=patient(status="PROV"), letter=False)
    response = as_sender(client).post(
        "/fhir/$process-message", json=message, headers={"Content-Type": FHIR_JSON}
    )
    assert response.status_code == 200, response.get_json()

    # The GP sees the plan and its Tasks in one search.
    doctor = _as(app, user_token(app, "user/*.cruds", "dr-martin"))
    found = doctor.search(f"CarePlan?patient={subject}&status=active&_include=CarePlan:activity-reference")
    plans = [e["resource"] for e in found["entry"] if e["resource"]["resourceType"] == "CarePlan"]
    assert [p["instantiatesCanonical"] for p in plans] == [[ELDERLY]]
    included = {
        e["resource"]["id"]: e["resource"] for e in found["entry"] if e["search"]["mode"] == "include"
    }
    tasks = [r for r in included.values() if r["resourceType"] == "Task"]
    assert {t["owner"]["reference"] for t in tasks} == set(members.values())

    # The nurse finds her Task in her worklist and accepts it (version-aware update).
    idel = _as(app, user_token(app, "user/*.cruds", "idel-bernard"))
    worklist = idel.search(f"Task?owner=Practitioner/{nurse}&status=requested,accepted&_sort=period")
    mine: dict[str, Any] = worklist["entry"][0]["resource"]
    assert mine["for"]["reference"] == subject
    accepted = idel.request(
        "PUT",
        f"/fhir/Task/{mine['id']}",
        {**mine, "status": "accepted"},
        **{"If-Match": f'W/"{mine["meta"]["versionId"]}"'},
    )
    assert accepted.status_code == 200, accepted.get_json()
    stale = idel.request(
        "PUT",
        f"/fhir/Task/{mine['id']}",
        {**mine, "status": "accepted"},
        **{"If-Match": f'W/"{mine["meta"]["versionId"]}"'},
    )
    assert stale.status_code == 412

    # The GP sees the nurse's acceptance, and $everything returns the whole pathway.
    assert doctor.request("GET", f"/fhir/Task/{mine['id']}").get_json()["status"] == "accepted"
    everything = doctor.request("GET", f"/fhir/{subject}/$everything?_count=500")
    assert everything.status_code == 200, everything.get_json()
    kinds = {e["resource"]["resourceType"] for e in everything.get_json()["entry"]}
    assert {"Patient", "Encounter", "CarePlan", "Task", "CareTeam"} <= kinds

    # A professional outside the cercle de soins sees none of it.
    other = _as(app, user_token(app, "user/*.cruds", "dr-other"))
    assert other.search(f"CarePlan?patient={subject}").get("entry", []) == []
    assert other.request("GET", f"/fhir/{subject}/$everything").status_code in {403, 404}
    assert outsider
