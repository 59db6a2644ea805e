"""Review 24 of the coordinators' pages: a Task action posted by hand (a forged form, an old page) is
judged on the rows the page shows it on, not only on what the write guard leaves open: « Terminer » and
« Annuler » are for the owner of an open Task (« Mes tâches »), « Attribuer » for a Task still to take."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Fhir
from tests.support.pages import Cpts, post_action, row_ids, session_csrf, sign_in


def _task(fhir: Fhir, task_id: str) -> dict[str, Any]:
    return dict(fhir.search(f"Task?_id={task_id}")["entry"][0]["resource"])


def _forged(browser: FlaskClient, task_id: str, action: str, version: str, **fields: str) -> Any:
    browser.get("/app/")
    form = {"csrf_token": session_csrf(browser), "version": version, **fields}
    return browser.post(f"/app/tasks/{task_id}/{action}", data=form)


def test_a_care_team_member_cannot_finish_a_task_she_does_not_own(
    app: Flask,
    cpts: Cpts,
    fhir: Fhir,
) -> None:
    offer = str(cpts.offer)
    version = _task(fhir, offer)["meta"]["versionId"]
    gp = sign_in(app, "dr-martin")  # in the cercle de soins, not offered the Task, not its owner
    for action, fields in (("complete", {}), ("cancel", {"reason": "Plus nécessaire"})):
        refused = _forged(gp, offer, action, version, **fields)
        assert refused.status_code == 403 and refused.mimetype == "text/html", refused.get_data(as_text=True)
        assert _task(fhir, offer)["status"] == "requested"
    # Once a nurse took it, neither the other nurse nor the GP finishes it for her.
    nurse = sign_in(app, "ide-a")
    assert post_action(nurse, offer, "accept").status_code == 303
    taken = _task(fhir, offer)
    for who in ("ide-b", "dr-martin"):
        refused = _forged(sign_in(app, who), offer, "cancel", taken["meta"]["versionId"], reason="Pas besoin")
        assert refused.status_code == 403 and refused.mimetype == "text/html"
    assert _task(fhir, offer)["status"] == "accepted"
    # The owner finishes it; then it is closed: no cancel of a completed Task.
    assert post_action(nurse, offer, "complete").status_code == 303
    done = _task(fhir, offer)
    again = _forged(nurse, offer, "cancel", done["meta"]["versionId"], reason="Erreur de saisie")
    assert again.status_code == 409 and "déjà close" in again.get_data(as_text=True)
    assert _task(fhir, offer)["status"] == "completed"


def test_a_coordinator_assigns_only_a_task_still_to_take(
    app: Flask,
    cpts: Cpts,
    fhir: Fhir,
) -> None:
    offer = str(cpts.offer)
    nurse = sign_in(app, "ide-a")
    assert post_action(nurse, offer, "accept").status_code == 303
    taken = _task(fhir, offer)
    gp = f"Practitioner/{cpts.practitioners['dr-martin']}"
    coordinator = sign_in(app, "coord")
    moved = _forged(coordinator, offer, "assign", taken["meta"]["versionId"], owner=gp)
    assert moved.status_code == 409 and moved.mimetype == "text/html"
    after = _task(fhir, offer)
    assert after["status"] == "accepted"
    assert after["owner"]["reference"] == f"Practitioner/{cpts.practitioners['ide-a']}"


def test_a_former_member_of_the_care_team_is_no_candidate(
    app: Flask,
    cpts: Cpts,
    fhir: Fhir,
) -> None:
    team = fhir.client.get(f"/fhir/{cpts.care_team}").get_json()
    nurse_b = f"Practitioner/{cpts.practitioners['ide-b']}"
    for participant in team["participant"]:
        if participant["member"]["reference"] == nurse_b:
            participant["period"] = {"end": "2020-01-01"}  # left the cercle de soins long ago
    assert fhir.request("PUT", f"/fhir/{cpts.care_team}", team).status_code == 200
    coordinator = sign_in(app, "coord")
    html = coordinator.get("/app/").get_data(as_text=True)
    escalated = next(i for i in row_ids(html, "a-prendre") if i != cpts.offer)
    assert f'<option value="{nurse_b}">' not in html
    assert f'<option value="Practitioner/{cpts.practitioners["ide-a"]}">' in html
    version = _task(fhir, escalated)["meta"]["versionId"]
    refused = _forged(coordinator, escalated, "assign", version, owner=nurse_b)
    assert refused.status_code == 400 and refused.mimetype == "text/html"
    assert _task(fhir, escalated).get("owner", {}).get("reference") != nurse_b
