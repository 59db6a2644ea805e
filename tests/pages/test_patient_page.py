"""GET /app/patients/<id> and its document download over HTTP (issue 22): the pathway a practitioner of
the cercle de soins sees, the same Tasks as the FHIR API gives her, one 404 for an unknown patient and
one out of reach, objections shown, the download access-checked and audited."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient

from coordination_api.pages.blueprint import PAGE_CLIENT
from tests.conftest import Fhir
from tests.support.auth import audit_rows, bearer, user_token
from tests.support.pages import sign_in
from tests.support.patient_page import LETTER, PatientWorld, build_patient_world


@pytest.fixture
def world(app: Flask, client: FlaskClient, fhir: Fhir) -> PatientWorld:
    return build_patient_world(app, client, fhir)


def _api_task_ids(app: Flask, username: str, patient: str) -> set[str]:
    token = user_token(app, "user/*.cruds", username)
    response = app.test_client().get(f"/fhir/Task?patient={patient}&_count=200", headers=bearer(token))
    assert response.status_code == 200, response.get_json()
    return {
        e["resource"]["id"] for e in response.get_json().get("entry", []) if e["search"]["mode"] == "match"
    }


def _page_task_ids(html: str) -> set[str]:
    return set(re.findall(r'<li id="tache-([^"]+)"', html))


def _audits_since(app: Flask, start: int) -> list[Any]:
    app.extensions["audit_writer"].flush()
    return [row for row in audit_rows(app) if row.pk > start]


def _last_audit(app: Flask) -> int:
    app.extensions["audit_writer"].flush()
    rows = audit_rows(app)
    return int(rows[-1].pk) if rows else 0


def test_a_practitioner_of_the_cercle_de_soins_sees_the_pathway(app: Flask, world: PatientWorld) -> None:
    w = world
    browser = sign_in(app, "dr-martin")
    before = _last_audit(app)
    response = browser.get(f"/app/patients/{w.pid}")
    html = response.get_data(as_text=True)
    assert response.status_code == 200, html
    assert '<html lang="fr">' in html and "Hélène Lefèvre" in html
    assert 'id="ins-statut"' in html and "Identité" in html
    for heading in ("Identité", "Cercle de soins", "Parcours en cours", "Séjours récents", "Documents"):
        assert f">{heading}</h2>" in html
    assert "Claire Coordinatrice" in html and "Coordinateur de parcours" in html
    assert "Médecin traitant" in html
    assert "Hôpital Nord" in html and "Hospitalisation" in html
    # The protocol the discharge started: its CarePlan and Tasks, the same Tasks the API gives her.
    page_tasks = _page_task_ids(html)
    assert page_tasks and page_tasks == _api_task_ids(app, "dr-martin", w.patient)
    # The objection, plainly.
    assert 'id="opposition"' in html and "Opposition au partage" in html and "Pierre Aubert" in html
    # The letter, downloadable from the page.
    link = f"/app/patients/{w.pid}/documents/{w.document}"
    assert f'href="{link}"' in html
    csp = response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    # Audited as an API read: the user, the page's application, the patient, what was shown.
    rows = [r for r in _audits_since(app, before) if r.client_id == PAGE_CLIENT]
    assert len(rows) == 1 and rows[0].outcome == "0"
    event = orjson.loads(rows[0].content)
    entities = {e["what"]["reference"] for e in event["entity"] if "what" in e}
    assert w.patient in entities and {f"Task/{t}" for t in page_tasks} <= entities
    assert rows[0].agent == f"Practitioner/{w.cpts.practitioners['dr-martin']}"


def test_an_outsider_gets_the_same_answer_as_for_an_unknown_patient(app: Flask, world: PatientWorld) -> None:
    w = world
    browser = sign_in(app, "dr-dehors")
    outside = browser.get(f"/app/patients/{w.pid}")
    unknown = browser.get("/app/patients/no-such-patient")
    odd = browser.get("/app/patients/bad%00id")
    assert outside.status_code == unknown.status_code == odd.status_code == 404
    assert outside.get_data() == unknown.get_data() == odd.get_data()
    assert "Hélène" not in outside.get_data(as_text=True)
    # Nor the documents, by a guessed URL.
    guessed = browser.get(f"/app/patients/{w.pid}/documents/{w.document}")
    assert guessed.status_code == 404 and guessed.get_data() == unknown.get_data()
    # And the API agrees that she may not read it (its answer is a refusal, not data).
    token = user_token(app, "user/*.cruds", "dr-dehors")
    api = app.test_client().get(f"/fhir/{w.patient}", headers=bearer(token))
    assert api.status_code in (403, 404)
    assert _api_task_ids(app, "dr-dehors", w.patient) == set()


def test_the_document_download_is_access_checked_and_audited(
    app: Flask, world: PatientWorld, fhir: Fhir
) -> None:
    w = world
    url = f"/app/patients/{w.pid}/documents/{w.document}"
    assert app.test_client().get(url).status_code == 303  # not signed in: to the login page
    browser = sign_in(app, "dr-martin")
    before = _last_audit(app)
    response = browser.get(url)
    assert response.status_code == 200
    assert response.get_data() == LETTER
    assert response.mimetype == "application/pdf"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="Lettre-de-sortie.pdf"')
    assert "sandbox" in response.headers["Content-Security-Policy"]
    rows = [r for r in _audits_since(app, before) if r.client_id == PAGE_CLIENT]
    assert len(rows) == 1 and rows[0].subtype == "read" and rows[0].outcome == "0"
    entities = {e["what"]["reference"] for e in orjson.loads(rows[0].content)["entity"] if "what" in e}
    assert {
        f"DocumentReference/{w.document}",
        f"Binary/{w.binary}",
        w.patient,
    } <= entities
    # Another patient's URL for the same document: not shown (the document names its own patient).
    other = fhir.create({"resourceType": "Patient", "name": [{"family": "Autre"}]})["id"]
    wrong = browser.get(f"/app/patients/{other}/documents/{w.document}")
    assert wrong.status_code == 404
    # The refused download is audited too (outcome 4), as a refused API read is.
    before = _last_audit(app)
    assert sign_in(app, "dr-dehors").get(url).status_code == 404
    refused = [r for r in _audits_since(app, before) if r.client_id == PAGE_CLIENT]
    assert len(refused) == 1 and refused[0].outcome == "4"
