"""The directory completes what other writes only name: new accounts (`users create --rpps`) and the
practitioners and organizations of a discharge (a connector job, retried while the directory is down)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from coordination_api import jobs
from coordination_api.cli import main
from coordination_api.integrations.annuaire_sync import ENRICH
from coordination_api.storage.schema import connector_job as j
from fhir_profiles.french_identifiers import FINESS, ID_NAT_ST, RPPS
from tests.conftest import Fhir
from tests.support.ans_server import DirectoryServer
from tests.support.messages import as_sender, discharge_message

PASSWORD = "a long enough password"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _users_create(app: Flask, *extra: str) -> Any:
    args = ["users", "create", "--username", "dr-nom1", "--rpps", "10000000001", "--password-stdin", "--json"]
    return app.test_cli_runner().invoke(main, args=[*args, *extra], input=PASSWORD + "\n")


def _practitioner(fhir: Fhir, rpps: str) -> dict[str, Any]:
    [entry] = fhir.search(f"Practitioner?identifier={RPPS}|{rpps}")["entry"]
    resource: dict[str, Any] = entry["resource"]
    return resource


def _jobs(app: Flask) -> list[Any]:
    with app.extensions["coordination"].repo.engine.connect() as conn:
        return list(conn.execute(select(j).where(j.c.kind == ENRICH).order_by(j.c.pk)).all())


def _due_now(app: Flask) -> None:
    with app.extensions["coordination"].repo.writing() as conn:
        conn.execute(update(j).values(next_attempt_us=0))


# -- users create --rpps -----------------------------------------------------------------------


def test_users_create_fills_names_and_qualifications_from_the_directory(
    dir_app: Flask, dir_fhir: Fhir, ans: DirectoryServer
) -> None:
    result = _users_create(dir_app)
    assert result.exit_code == 0, result.output
    doctor = _practitioner(dir_fhir, "10000000001")
    assert doctor["name"][0]["family"] == "Nom1" and doctor["name"][0]["given"] == ["Prenom1"]
    assert [q["code"]["coding"][0]["code"] for q in doctor["qualification"]] == ["DE05", "10"]
    assert f'"fhirUser": "Practitioner/{doctor["id"]}"' in result.stdout


def test_users_create_with_names_given_does_not_ask_the_directory(
    dir_app: Flask, dir_fhir: Fhir, ans: DirectoryServer
) -> None:
    result = _users_create(dir_app, "--family", "House", "--given", "Greg")
    assert result.exit_code == 0, result.output
    assert _practitioner(dir_fhir, "10000000001")["name"][0]["family"] == "House"
    assert ans.requests == []


def test_users_create_succeeds_with_the_directory_down(
    dir_app: Flask, dir_fhir: Fhir, ans: DirectoryServer
) -> None:
    ans.fail("slow")
    result = _users_create(dir_app)
    assert result.exit_code == 0, result.output
    assert "warning: the directory could not be asked" in result.output and "timed out" in result.output
    assert '"username": "dr-nom1"' in result.stdout
    doctor = _practitioner(dir_fhir, "10000000001")
    assert "name" not in doctor


# -- discharge enrichment -----------------------------------------------------------------------


def _discharge(client: FlaskClient, message_id: str = "msg-enrich") -> None:
    response = as_sender(client).post(
        "/fhir/$process-message", json=discharge_message(message_id=message_id), headers=FHIR_JSON
    )
    assert response.status_code == 200, response.get_json()


def test_a_discharge_naming_unknown_people_queues_enrichment_in_its_transaction(
    dir_app: Flask, dir_client: FlaskClient, ans: DirectoryServer
) -> None:
    ans.fail("503")  # the discharge never asks the directory itself
    _discharge(dir_client)
    rows = _jobs(dir_app)
    assert sorted(r.job_key for r in rows) == ["Organization|750100125", "Practitioner|10003456789"]
    assert {r.status for r in rows} == {"pending"} and ans.requests == []
    _discharge(dir_client, "msg-enrich-2")  # known now: nothing more to ask
    assert len(_jobs(dir_app)) == 2


def test_enrichment_retries_while_the_directory_is_down_then_completes_the_records(
    dir_app: Flask, dir_client: FlaskClient, dir_fhir: Fhir, ans: DirectoryServer
) -> None:
    _discharge(dir_client)
    ans.fail("503")
    assert jobs.run_due(dir_app) == 2
    rows = _jobs(dir_app)
    assert {(r.status, r.attempts) for r in rows} == {("pending", 1)}
    assert all("503" in r.last_error for r in rows)
    assert jobs.run_due(dir_app) == 0  # backing off

    ans.reset()
    _due_now(dir_app)
    assert jobs.run_due(dir_app) == 2
    assert {r.status for r in _jobs(dir_app)} == {"done"}
    doctor = _practitioner(dir_fhir, "10003456789")
    assert [q["code"]["coding"][0]["code"] for q in doctor["qualification"]] == ["DE05", "10"]
    assert doctor["telecom"][0]["value"] == "paul.martin@medecin.mssante.fr"
    [org_entry] = dir_fhir.search(f"Organization?identifier={FINESS}|750100125")["entry"]
    org = org_entry["resource"]
    assert org["name"] == "Hôpital Nord (Annuaire)"
    assert {"system": ID_NAT_ST, "value": "1750100125"} in org["identifier"]
    # The Encounter still points at the same records (enriched in place, not duplicated).
    [encounter] = dir_fhir.search("Encounter")["entry"]
    assert encounter["resource"]["serviceProvider"]["reference"] == f"Organization/{org['id']}"
    assert (
        encounter["resource"]["participant"][0]["individual"]["reference"] == f"Practitioner/{doctor['id']}"
    )


def test_a_person_the_directory_does_not_know_ends_the_job_quietly(
    dir_app: Flask, dir_client: FlaskClient, dir_fhir: Fhir, ans: DirectoryServer
) -> None:
    people = ans.data.resources["Practitioner"]
    saved = people.pop("003-777")
    try:
        _discharge(dir_client)
        jobs.run_due(dir_app)
    finally:
        people["003-777"] = saved
    assert {r.status for r in _jobs(dir_app)} == {"done"}
    assert _practitioner(dir_fhir, "10003456789")["name"][0]["family"] == "Martin"  # the message's


def test_without_a_directory_a_discharge_queues_nothing(app: Flask, client: FlaskClient) -> None:
    _discharge(client)
    assert _jobs(app) == []
