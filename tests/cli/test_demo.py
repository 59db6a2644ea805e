"""`coordination demo`: the fictional CPTS loads once, refuses real data, and its printed flow works.

The flow test follows the printed instructions over HTTP: the hospital client's token with the printed
credentials, the printed discharge file posted to `$process-message`, then each professional signs in
through the printed authorize URL and runs the printed worklist query.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from coordination_api.cli import main
from coordination_api.config import DispatchSettings
from coordination_api.coordination.dispatch import DISPATCH_STATUS
from coordination_api.demo import DEMO_SYSTEM, PKCE_VERIFIER, accounts, coordinator_warnings, demo_resources
from coordination_api.storage.schema import resource_history
from tests.conftest import stored_invalid
from tests.support.auth import approve, exchange_code, log_in

BASE = "http://localhost"  # the test client's host: printed URLs can be used as they are
ELDERLY = "https://coordination.cpts.fr/fhir/PlanDefinition/retour-domicile-personne-agee"


def _demo(app: Flask, out: Path, *args: str) -> Any:
    return app.test_cli_runner().invoke(main, args=["demo", "--out", str(out), "--base-url", BASE, *args])


def _versions(app: Flask) -> int:
    with app.extensions["coordination"].repo.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(resource_history)).scalar_one())


def _printed(output: str, pattern: str) -> str:
    found = re.search(pattern, output)
    assert found, output
    return found.group(1)


def test_demo_loads_the_cpts_once_and_a_second_run_changes_nothing(
    app: Flask, anonymous_client: FlaskClient, tmp_path: Path
) -> None:
    first = _demo(app, tmp_path)
    assert first.exit_code == 0, first.output
    assert "Demo CPTS loaded" in first.output
    assert "demo-infirmiere" in first.output and "client_secret: " in first.output
    versions, clients = _versions(app), app.extensions["auth"].store.list_clients()
    second = _demo(app, tmp_path)
    assert second.exit_code == 0, second.output
    assert second.output.startswith("Nothing to do: the demo CPTS is already loaded")
    assert _versions(app) == versions
    assert app.extensions["auth"].store.list_clients() == clients
    # The secret was printed once; its owner-only copy lets the second run print it again.
    secret = _printed(first.output, r"client_secret: (\S+)")
    assert f"client_secret: {secret}" in second.output
    assert (tmp_path / "demo-credentials.json").stat().st_mode & 0o077 == 0


def test_every_demo_resource_is_tagged_and_patients_carry_test_range_ins(
    app: Flask, anonymous_client: FlaskClient, tmp_path: Path
) -> None:
    assert _demo(app, tmp_path).exit_code == 0
    repo = app.extensions["coordination"].repo
    with repo.engine.connect() as conn:
        for resource in demo_resources():
            stored = repo.current(conn, resource["resourceType"], resource["id"])
            assert stored is not None, resource["id"]
            assert {"system": DEMO_SYSTEM, "code": "demo"}.items() <= stored.json()["meta"]["tag"][0].items()
            if resource["resourceType"] == "Patient":
                systems = {i["system"] for i in stored.json()["identifier"]}
                assert "urn:oid:1.2.250.1.213.1.4.10" in systems  # INS-NIR-TEST: the ANS test range


def test_demo_refuses_a_database_with_other_data_unless_forced(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    created = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "name": [{"family": "Réel"}]},
        headers={"Content-Type": "application/fhir+json"},
    )
    assert created.status_code == 201
    versions = _versions(app)
    refused = _demo(app, tmp_path)
    assert refused.exit_code == 1
    assert "not the demo's" in refused.output and f"Patient/{created.get_json()['id']}" in refused.output
    assert "client 'tests'" in refused.output and "--force" in refused.output
    assert _versions(app) == versions  # nothing written
    assert not (tmp_path / "demo-discharge.json").exists()
    forced = _demo(app, tmp_path, "--force")
    assert forced.exit_code == 0, forced.output
    assert "Demo CPTS loaded" in forced.output


def test_a_configured_coordinator_other_than_the_demos_is_pointed_out() -> None:
    assert coordinator_warnings(DispatchSettings()) == []
    assert coordinator_warnings(DispatchSettings(coordinator="Practitioner/demo-coordinatrice")) == []
    [elsewhere] = coordinator_warnings(DispatchSettings(coordinator="Organization/cpts"))
    assert "Organization/cpts" in elsewhere
    [role] = coordinator_warnings(DispatchSettings(coordinator_role="coordinatrice"))
    assert "'coordinateur-parcours'" in role


def _user_token(app: Flask, authorize_url: str, username: str, password: str, client_id: str) -> str:
    """Sign in through the printed authorize URL, approve, exchange the code (PKCE) as printed."""
    url = authorize_url.removeprefix(BASE)
    browser = app.test_client()
    assert browser.get(url).status_code == 303  # to the login page
    login = log_in(browser, username, password, next_url=url)
    assert login.status_code == 303, login.get_data(as_text=True)
    done = approve(browser, url)
    assert done.status_code == 302, done.get_data(as_text=True)
    location = urlsplit(done.headers["Location"])
    redirect = f"{location.scheme}://{location.netloc}{location.path}"
    code = parse_qs(location.query)["code"][0]
    response = exchange_code(browser, client_id, code, PKCE_VERIFIER, redirect)
    assert response.status_code == 200, response.get_json()
    token: str = response.get_json()["access_token"]
    return token


def _search(app: Flask, token: str, query: str) -> list[dict[str, Any]]:
    response = app.test_client().get(f"/fhir/{query}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_json()
    return [e["resource"] for e in response.get_json().get("entry", []) if e["search"]["mode"] == "match"]


def _recipients(task: dict[str, Any]) -> set[str]:
    return {r["reference"] for r in task.get("restriction", {}).get("recipient", [])}


def test_the_printed_discharge_offers_the_protocol_tasks_to_the_demo_professionals(
    app: Flask, anonymous_client: FlaskClient, tmp_path: Path
) -> None:
    result = _demo(app, tmp_path)
    assert result.exit_code == 0, result.output
    out = result.output
    client_id = _printed(out, r"export CLIENT_ID=(\S+)")
    secret = _printed(out, r"CLIENT_SECRET='([^']+)'")
    scope = _printed(out, r"-d 'scope=([^']+)'")
    body = Path(_printed(out, r"--data-binary @(\S+)"))
    message_url = _printed(out, r"'(\S+/fhir/\$process-message)'").removeprefix(BASE)
    authorize = _printed(out, r"(\S+/auth/authorize\?\S+)")
    practice_client = parse_qs(urlsplit(authorize).query)["client_id"][0]

    # 1. The hospital: client credentials, then the discharge file as written.
    token_response = anonymous_client.post(
        "/auth/token", data={"grant_type": "client_credentials", "scope": scope}, auth=(client_id, secret)
    )
    assert token_response.status_code == 200, token_response.get_json()
    system = token_response.get_json()["access_token"]
    body_path = body if body.is_absolute() else Path.cwd() / body
    posted = anonymous_client.post(
        message_url,
        data=body_path.read_bytes(),
        headers={"Authorization": f"Bearer {system}", "Content-Type": "application/fhir+json"},
    )
    assert posted.status_code == 200, posted.get_json()
    assert posted.get_json()["entry"][0]["resource"]["response"]["code"] == "ok"

    # The protocol started for the demo's first patient.
    plans = _search(app, system, "CarePlan?subject=Patient/demo-patient-1")
    assert [p["instantiatesCanonical"] for p in plans] == [[ELDERLY]]
    tasks = {t["id"]: t for t in _search(app, system, f"Task?based-on=CarePlan/{plans[0]['id']}")}
    assert len(tasks) == 3

    # 2. Each professional's worklist query, with her own token.
    password = accounts()["password"]
    seen: dict[str, set[str]] = {}
    for username in ("demo-infirmiere", "demo-pharmacien", "demo-medecin"):
        user = _user_token(app, authorize, username, password, practice_client)
        worklist = _printed(out, rf"  {username} +(Task\?\S+)")
        seen[username] = {t["id"] for t in _search(app, user, worklist)}
    nurse = next(t for t in tasks.values() if "PractitionerRole/demo-role-infirmiere" in _recipients(t))
    pharmacist = next(t for t in tasks.values() if "PractitionerRole/demo-role-pharmacien" in _recipients(t))
    gp = next(t for t in tasks.values() if t.get("owner", {}).get("reference") == "Practitioner/demo-medecin")
    for offered in (nurse, pharmacist):
        assert offered["status"] == "requested" and "owner" not in offered
        assert offered["businessStatus"]["coding"][0] == {
            "system": DISPATCH_STATUS,
            "code": "offered-area",
            "display": "Proposée aux professionnels du secteur",
        }
    assert seen["demo-infirmiere"] == {nurse["id"]}
    assert seen["demo-pharmacien"] == {pharmacist["id"]}
    assert gp["id"] in seen["demo-medecin"]  # her patient's: she is the médecin traitant
    # 3. The printed coordinators' page: the coordinator sees the discharge; the nurse her offer.
    pages = _printed(out, r"The coordinators' pages: (\S+/app/) ").removeprefix(BASE)
    for username, expected in (("demo-coordinatrice", "Moreau"), ("demo-infirmiere", "Accepter la tâche")):
        browser = app.test_client()
        assert log_in(browser, username, password, pages).status_code in (302, 303)
        page = browser.get(pages)
        assert page.status_code == 200 and expected in page.get_data(as_text=True), username
    # What intake, the protocol and dispatch wrote meets the base rules clients are held to.
    assert stored_invalid(app) == []

    # The demo stays the demo's: the discharge matched the demo patient and hospital, created none.
    again = _demo(app, tmp_path)
    assert again.exit_code == 0, again.output
    assert again.output.startswith("Nothing to do")
    assert json.loads(body_path.read_text())["type"] == "message"
