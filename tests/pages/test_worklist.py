"""GET /app/ and its Task actions over HTTP (issue 22): sign-in, the three tables, the same answers as
the FHIR API for the same practitioner, CSRF, the first-to-accept race, and the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from tests.conftest import Fhir
from tests.support.auth import audit_rows, csrf_token_of
from tests.support.pages import (
    Cpts,
    api_client,
    post_action,
    row_ids,
    session_csrf,
    sign_in,
)

OPEN = "requested,received,accepted,ready,in-progress,on-hold"


def _ids(api: FlaskClient, query: str) -> list[dict[str, Any]]:
    response = api.get(f"/fhir/{query}")
    assert response.status_code == 200, response.get_json()
    return [e["resource"] for e in response.get_json().get("entry", []) if e["search"]["mode"] == "match"]


def test_unauthenticated_visitor_is_sent_to_the_login_page_and_back(app: Flask, cpts: Cpts) -> None:
    browser = app.test_client()
    first = browser.get("/app/?filtre=en-retard")
    assert first.status_code == 303
    assert first.headers["Location"] == "/auth/login?next=%2Fapp%2F%3Ffiltre%3Den-retard"
    assert browser.post(f"/app/tasks/{cpts.offer}/accept").status_code == 303  # no session: no write
    page = browser.get(first.headers["Location"])
    csrf = csrf_token_of(page.get_data(as_text=True))
    form = {"username": "coord", "password": "a-long-password-123", "csrf_token": csrf}
    back = browser.post("/auth/login", data={**form, "next": "/app/?filtre=en-retard"})
    assert back.status_code == 303 and back.headers["Location"] == "/app/?filtre=en-retard"
    # Only this server's own pages: an absolute or protocol-relative target ends on the login's own page.
    for elsewhere in ("https://evil.example/app/", "//evil.example/app/", "/app/../fhir/Patient"):
        again = app.test_client()
        csrf = csrf_token_of(again.get("/auth/login").get_data(as_text=True))
        done = again.post("/auth/login", data={**form, "csrf_token": csrf, "next": elsewhere})
        assert done.status_code == 200 and "Location" not in done.headers


def test_tables_title_counts_and_page_rules(app: Flask, cpts: Cpts) -> None:
    response = sign_in(app, "coord").get("/app/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert '<html lang="fr">' in html and 'href="#contenu"' in html
    for caption in ("Sorties à suivre", "Tâches à prendre", "Mes tâches"):
        assert f"<caption>{caption}</caption>" in html
    assert "<title>Liste de travail (1 sortie, 2 à prendre, 0 en cours)" in html
    assert "Hélène Lefèvre" in html and "Hôpital Nord" in html and " ans</td>" in html
    assert '<span class="badge">En retard</span>' in html  # the IDEL visit was due 48 h after discharge
    assert "Attribuer" in html and "Accepter la tâche" not in html  # the coordinator is offered nothing
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    css = app.test_client().get("/app/static/pages.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    css.close()
    # Filters: the discharge is late and nobody has taken anything yet.
    browser = sign_in(app, "coord")
    encounter = str(cpts.encounter).split("/")[1]
    assert row_ids(browser.get("/app/?filtre=en-retard").get_data(as_text=True), "sortie") == {encounter}
    assert row_ids(browser.get("/app/?filtre=non-suivies").get_data(as_text=True), "sortie") == {encounter}


@pytest.mark.parametrize("username", ["coord", "ide-a", "ide-b", "dr-martin", "dr-dehors"])
def test_the_page_shows_what_the_api_returns_to_the_same_practitioner(
    app: Flask, cpts: Cpts, username: str
) -> None:
    html = sign_in(app, username).get("/app/").get_data(as_text=True)
    api = api_client(app, username)
    me = f"Practitioner/{cpts.practitioners[username]}"
    since = (datetime.now(UTC) - timedelta(days=14)).date().isoformat()
    encounters = _ids(api, f"Encounter?status=finished&date=ge{since}")
    assert row_ids(html, "sortie") == {e["id"] for e in encounters}
    requested = {t["id"]: t for t in _ids(api, "Task?status=requested&_count=1000")}
    assert row_ids(html, "a-prendre") <= set(requested)
    offered = {
        i
        for i, t in requested.items()
        if me in {r["reference"] for r in t.get("restriction", {}).get("recipient", [])}
    }
    assert offered <= row_ids(html, "a-prendre")
    owned = _ids(api, f"Task?owner={me}&status={OPEN}")
    escalated = {
        t["id"] for t in owned if t["status"] == "requested" and "escalated" in str(t.get("businessStatus"))
    }
    assert row_ids(html, "mienne") == {t["id"] for t in owned} - escalated
    patients = {p["id"] for p in _ids(api, "Patient?_count=1000")}
    if username == "dr-dehors":  # outside the cercle de soins: neither the patient nor a Task
        assert not patients and "Lefèvre" not in html
        assert not (row_ids(html, "sortie") | row_ids(html, "a-prendre") | row_ids(html, "mienne"))
    else:
        assert patients == {cpts.patient.split("/")[1]} and "Lefèvre" in html
    if username in {"ide-a", "ide-b"}:
        assert row_ids(html, "a-prendre") == {cpts.offer} and "Accepter la tâche" in html


def test_a_post_without_the_csrf_token_is_refused(app: Flask, cpts: Cpts, fhir: Fhir) -> None:
    browser = sign_in(app, "ide-a")
    html = browser.get("/app/").get_data(as_text=True)
    for form in ({"version": "2"}, {"version": "2", "csrf_token": "forged"}):
        response = browser.post(f"/app/tasks/{cpts.offer}/accept", data=form)
        assert response.status_code == 400
        assert response.mimetype == "text/html" and "Formulaire expiré" in response.get_data(as_text=True)
    assert "csrf_token" in html
    assert fhir.search(f"Task?_id={cpts.offer}")["entry"][0]["resource"]["status"] == "requested"


def test_first_to_accept_takes_it_the_second_sees_already_taken(app: Flask, cpts: Cpts, fhir: Fhir) -> None:
    first, second = sign_in(app, "ide-a"), sign_in(app, "ide-b")
    # Both pages show the offer at the same version, then both click.
    second_page = second.get("/app/").get_data(as_text=True)
    taken = post_action(first, str(cpts.offer), "accept")
    assert taken.status_code == 303 and taken.headers["Location"] == "/app/"
    late = second.post(
        f"/app/tasks/{cpts.offer}/accept",
        data={"csrf_token": csrf_token_of(second_page), "version": _version(second_page, str(cpts.offer))},
    )
    assert late.status_code == 409
    assert "Déjà prise par Alice Arnaud" in late.get_data(as_text=True)
    task = fhir.search(f"Task?_id={cpts.offer}")["entry"][0]["resource"]
    assert task["status"] == "accepted"
    assert task["owner"]["reference"] == f"Practitioner/{cpts.practitioners['ide-a']}"
    after = first.get("/app/").get_data(as_text=True)
    assert "Tâche acceptée" in after and cpts.offer in row_ids(after, "mienne")
    assert cpts.offer not in row_ids(second.get("/app/").get_data(as_text=True), "a-prendre")


def _version(html: str, task_id: str) -> str:
    marker = f'action="/app/tasks/{task_id}/accept">'
    start = html.index(marker)
    return html[start:].split('name="version" value="', 1)[1].split('"', 1)[0]


def test_owner_completes_or_cancels_and_the_coordinator_sees_it(app: Flask, cpts: Cpts, fhir: Fhir) -> None:
    nurse = sign_in(app, "ide-a")
    assert post_action(nurse, str(cpts.offer), "accept").status_code == 303
    assert post_action(nurse, str(cpts.offer), "complete").status_code == 303
    assert fhir.search(f"Task?_id={cpts.offer}")["entry"][0]["resource"]["status"] == "completed"
    coordinator = sign_in(app, "coord").get("/app/").get_data(as_text=True)
    assert '<td class="done">1 / 4</td>' in coordinator
    # Cancelling needs a reason, kept in statusReason.
    visit = next(iter(row_ids(nurse.get("/app/").get_data(as_text=True), "mienne")))
    refused = post_action(nurse, visit, "cancel", reason=" ")
    assert refused.status_code == 400 and "motif" in refused.get_data(as_text=True)
    assert post_action(nurse, visit, "cancel", reason="Patiente réhospitalisée").status_code == 303
    cancelled = fhir.search(f"Task?_id={visit}")["entry"][0]["resource"]
    assert (
        cancelled["status"] == "cancelled" and cancelled["statusReason"]["text"] == "Patiente réhospitalisée"
    )
    assert '<td class="done">1 / 3</td>' in sign_in(app, "coord").get("/app/").get_data(as_text=True)


def test_coordinator_assigns_an_escalated_task(app: Flask, cpts: Cpts, fhir: Fhir) -> None:
    coordinator = sign_in(app, "coord")
    html = coordinator.get("/app/").get_data(as_text=True)
    escalated = next(i for i in row_ids(html, "a-prendre") if i != cpts.offer)
    gp = f"Practitioner/{cpts.practitioners['dr-martin']}"
    # Only a member of the patient's care team (the form's list), also when the form is forged.
    outsider = post_action(coordinator, escalated, "assign", owner="Practitioner/not-in-the-team")
    assert outsider.status_code == 400 and outsider.mimetype == "text/html"
    assert post_action(coordinator, escalated, "assign", owner=gp).status_code == 303
    assigned = fhir.search(f"Task?_id={escalated}")["entry"][0]["resource"]
    assert assigned["owner"]["reference"] == gp and assigned["status"] == "ready"
    assert escalated in row_ids(sign_in(app, "dr-martin").get("/app/").get_data(as_text=True), "mienne")
    # The assignment ended the offer: nobody takes it back.
    late = sign_in(app, "ide-a")
    late.get("/app/")
    version = assigned["meta"]["versionId"]
    taken_back = late.post(
        f"/app/tasks/{escalated}/accept", data={"csrf_token": session_csrf(late), "version": version}
    )
    assert taken_back.status_code == 409 and "Déjà prise" in taken_back.get_data(as_text=True)
    assert fhir.search(f"Task?_id={escalated}")["entry"][0]["resource"]["owner"]["reference"] == gp
    # A professional who coordinates nothing may not give Tasks away (the policy's 403, as a page).
    nurse = sign_in(app, "ide-a")
    mine = next(iter(row_ids(nurse.get("/app/").get_data(as_text=True), "mienne")))
    csrf = session_csrf(nurse)
    refused = nurse.post(f"/app/tasks/{mine}/assign", data={"csrf_token": csrf, "version": "1", "owner": gp})
    assert refused.status_code in {400, 403, 409} and refused.mimetype == "text/html"


def test_page_reads_and_actions_are_audited_like_api_calls(app: Flask, cpts: Cpts) -> None:
    app.extensions["audit_writer"].flush()
    before = len(audit_rows(app))
    nurse = sign_in(app, "ide-a")
    nurse.get("/app/")
    assert post_action(nurse, str(cpts.offer), "accept").status_code == 303
    late = sign_in(app, "ide-b")
    csrf = session_csrf(late)
    assert (
        late.post(f"/app/tasks/{cpts.offer}/accept", data={"csrf_token": csrf, "version": "2"}).status_code
        == 409
    )
    app.extensions["audit_writer"].flush()
    rows = audit_rows(app)[before:]
    nurse_agent = f"Practitioner/{cpts.practitioners['ide-a']}"
    reads = [r for r in rows if r.agent == nurse_agent and r.subtype == "search-type"]
    assert reads and all(r.client_id == "coordination-pages" and r.outcome == "0" for r in reads)
    patient = cpts.patient.split("/")[1]
    engine = app.extensions["coordination"].repo.engine
    with engine.connect() as conn:
        audited = {
            pk
            for (pk,) in conn.execute(
                text("SELECT audit_pk FROM audit_patient WHERE patient_id = :p"), {"p": patient}
            )
        }
    assert any(r.pk in audited for r in reads)  # the patient whose data the page showed
    writes = [r for r in rows if r.agent == nurse_agent and r.subtype == "update"]
    assert [(w.outcome, w.entity) for w in writes] == [("0", f"Task/{cpts.offer}")]
    lost = [
        r for r in rows if r.agent == f"Practitioner/{cpts.practitioners['ide-b']}" and r.subtype == "update"
    ]
    assert [r.outcome for r in lost] == ["4"]  # the refused accept is on record too
