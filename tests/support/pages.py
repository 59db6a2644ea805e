"""A small CPTS for the /app/ pages' tests (HTTP and browser): a coordinator, two usual nurses, a GP
and an outsider with logins; a patient and her cercle de soins; a discharge posted through
``$process-message`` (the elderly-return protocol starts); a Task dispatch offers to both nurses."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from coordination_api.accounts import create_practitioner_user
from tests.conftest import Fhir
from tests.coordination.protocols.builders import ROLE, care_team, load_library
from tests.support.auth import PASSWORD, bearer, csrf_token_of, user_token
from tests.support.messages import as_sender, discharge_message, patient

FHIR_JSON = "application/fhir+json"
USUAL_NURSE = {"coding": [{"system": ROLE, "code": "infirmier-habituel"}]}
USERS = {
    "coord": ("10000000001", "Coordinatrice", "Claire"),
    "ide-a": ("10000000002", "Arnaud", "Alice"),
    "ide-b": ("10000000003", "Bernard", "Basile"),
    "dr-martin": ("10000000004", "Martin", "Anne"),
    "dr-dehors": ("10000000005", "Dehors", "Paul"),
}


@dataclass
class Cpts:
    """Who is who (username -> Practitioner id) and what the scenario wrote."""

    practitioners: dict[str, str]
    patient: str  # "Patient/<id>"
    care_team: str
    encounter: str | None = None  # the discharge's "Encounter/<id>"
    offer: str | None = None  # the Task offered to both nurses, "<id>"


def fhir_instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_cpts(app: Flask, fhir: Fhir) -> Cpts:
    """The users, the patient (known by her IPP, as the hospital will name her) and her care team."""
    load_library(app)
    app.test_client().get("/fhir/.well-known/smart-configuration")  # loads the session key
    ids = {
        username: create_practitioner_user(app, username, rpps, PASSWORD, family, given)
        for username, (rpps, family, given) in USERS.items()
    }
    known = patient(status="PROV")
    known.pop("id")
    known.pop("extension")
    subject = f"Patient/{fhir.create(known)['id']}"
    team = care_team(
        fhir,
        subject,
        {
            "coordinateur-parcours": f"Practitioner/{ids['coord']}",
            "medecin-traitant": f"Practitioner/{ids['dr-martin']}",
            "infirmier-habituel": f"Practitioner/{ids['ide-a']}",
        },
    )
    # The second usual nurse: a participant of her own (the builder keys members by role).
    body = fhir.client.get(f"/fhir/{team}").get_json()
    body["participant"].append(
        {"role": [USUAL_NURSE], "member": {"reference": f"Practitioner/{ids['ide-b']}"}}
    )
    response = fhir.request("PUT", f"/fhir/{team}", body)
    assert response.status_code == 200, response.get_json()
    return Cpts(ids, subject, team)


def post_discharge(client: FlaskClient, cpts: Cpts, days_ago: float = 4, message_id: str = "sortie-1") -> str:
    """The hospital's discharge message, ``days_ago`` days ago; returns the Encounter reference."""
    ended = datetime.now(UTC) - timedelta(days=days_ago)
    message = discharge_message(message_id=message_id, patient_resource=patient(status="PROV"), letter=False)
    for entry in message["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Encounter":
            resource["period"] = {
                "start": fhir_instant(ended - timedelta(days=6)),
                "end": fhir_instant(ended),
            }
            resource["identifier"][0]["value"] = f"V-{message_id}"
    response = as_sender(client).post(
        "/fhir/$process-message", json=message, headers={"Content-Type": FHIR_JSON}
    )
    assert response.status_code == 200, response.get_json()
    fhir = Fhir(client)
    found = fhir.ids(f"Encounter?subject={cpts.patient}&identifier=V-{message_id}")
    found = found or fhir.ids(f"Encounter?subject={cpts.patient}")
    cpts.encounter = f"Encounter/{sorted(found)[-1]}"
    return cpts.encounter


def offer_task(fhir: Fhir, cpts: Cpts, description: str = "Pansement à domicile") -> str:
    """An open Task for a usual nurse: dispatch offers it to both nurses of the care team."""
    due = datetime.now(UTC) + timedelta(days=2)
    body: dict[str, Any] = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "description": description,
        "code": {"text": description},
        "for": {"reference": cpts.patient},
        "performerType": [USUAL_NURSE],
        "restriction": {"period": {"end": fhir_instant(due)}},
    }
    if cpts.encounter:
        body["encounter"] = {"reference": cpts.encounter}
    cpts.offer = str(fhir.create(body)["id"])
    return cpts.offer


def sign_in(app: Flask, username: str) -> FlaskClient:
    """A browser session of ``username`` through the real login page (next back to /app/)."""
    browser = app.test_client()
    page = browser.get("/auth/login", query_string={"next": "/app/"})
    csrf = csrf_token_of(page.get_data(as_text=True))
    done = browser.post(
        "/auth/login", data={"username": username, "password": PASSWORD, "csrf_token": csrf, "next": "/app/"}
    )
    assert done.status_code == 303 and done.headers["Location"] == "/app/", done.get_data(as_text=True)
    return browser


def session_csrf(browser: FlaskClient) -> str:
    """The CSRF token of this browser's session (what every form of its pages carries)."""
    with browser.session_transaction("/app/") as session:
        token: str = session["csrf"]
    return token


def row_ids(html: str, prefix: str) -> set[str]:
    """The ids of a table's rows: ``sortie-<Encounter id>``, ``a-prendre-<Task id>``, ``mienne-<Task id>``."""
    return set(re.findall(rf'<tr id="{prefix}-([^"]+)"', html))


def task_version(html: str, task_id: str, action: str) -> str:
    match = re.search(
        rf'action="/app/tasks/{re.escape(task_id)}/{action}">\s*<input type="hidden" name="csrf_token" '
        r'value="[^"]+">\s*<input type="hidden" name="version" value="(\d+)"',
        html,
    )
    assert match, html
    return match.group(1)


def post_action(browser: FlaskClient, task_id: str, action: str, **fields: str) -> Any:
    """Post a Task action the way the page's form does (its CSRF token and version)."""
    html = browser.get("/app/").get_data(as_text=True)
    form = {"csrf_token": csrf_token_of(html), "version": task_version(html, task_id, action), **fields}
    return browser.post(f"/app/tasks/{task_id}/{action}", data=form)


def api_client(app: Flask, username: str) -> FlaskClient:
    """A FHIR API client holding a user token of ``username`` (what the pages are compared with)."""
    api = app.test_client()
    api.environ_base["HTTP_AUTHORIZATION"] = bearer(user_token(app, "user/*.cruds", username))[
        "Authorization"
    ]
    return api
