"""Review 24: a version number out of the database's integer range (a page form's ``version``, an
If-Match, a vread, a transaction entry) is a client error, never a 500 (SQLite and PostgreSQL refuse to
bind it)."""

from __future__ import annotations

from flask import Flask

from tests.conftest import Fhir
from tests.support.pages import Cpts, api_client, session_csrf, sign_in

HUGE = ("9" * 19, "9" * 40)
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def test_out_of_range_versions_are_client_errors(app: Flask, cpts: Cpts, fhir: Fhir) -> None:
    task = fhir.search(f"Task?_id={cpts.offer}")["entry"][0]["resource"]
    outsider = api_client(app, "dr-dehors")  # refused the write: the repository looks the named version up
    for version in HUGE:
        put = outsider.put(
            f"/fhir/Task/{cpts.offer}", json=task, headers={**FHIR_JSON, "If-Match": f'W/"{version}"'}
        )
        assert put.status_code in {400, 403, 404, 412}, put.get_json()
        vread = fhir.client.get(f"/fhir/Task/{cpts.offer}/_history/{version}")
        assert vread.status_code == 404, vread.get_json()
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": task,
                    "request": {"method": "PUT", "url": f"Task/{cpts.offer}", "ifMatch": f'W/"{version}"'},
                }
            ],
        }
        batch = fhir.client.post("/fhir", json=bundle, headers=FHIR_JSON)
        assert batch.status_code in {400, 412}, batch.get_json()
        for who, action in (("ide-a", "accept"), ("dr-martin", "accept"), ("coord", "assign")):
            browser = sign_in(app, who)
            browser.get("/app/")
            form = {"csrf_token": session_csrf(browser), "version": version, "owner": "x"}
            page = browser.post(f"/app/tasks/{cpts.offer}/{action}", data=form)
            assert page.status_code < 500 and page.mimetype == "text/html", page.get_data(as_text=True)
    assert fhir.search(f"Task?_id={cpts.offer}")["entry"][0]["resource"]["status"] == "requested"
