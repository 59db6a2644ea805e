"""`coordination directory sync`: a CPTS's members imported from the directory, idempotently."""

from __future__ import annotations

import copy
from typing import Any

from click.testing import Result
from flask import Flask

from coordination_api.cli import main
from fhir_profiles.french_identifiers import FINESS, ID_NAT_PS, RPPS
from tests.conftest import Fhir
from tests.support.ans_server import DirectoryServer

# The CPTS: 1 organization, 1 service, 5 practitioners, 6 roles (one doctor has two).
CPTS_RECORDS = 1 + 1 + 5 + 6


def _sync(app: Flask, organization: str = "330000001") -> Result:
    return app.test_cli_runner().invoke(main, args=["directory", "sync", "--organization", organization])


def _resources(fhir: Fhir, query: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in fhir.search(query).get("entry", []) if e["search"]["mode"] == "match"]


def test_sync_imports_the_organization_its_members_and_services(
    dir_app: Flask, dir_fhir: Fhir, ans: DirectoryServer
) -> None:
    result = _sync(dir_app)
    assert result.exit_code == 0, result.output
    assert f"created {CPTS_RECORDS}, updated 0, unchanged 0, failed 0" in result.stdout
    assert "members" in result.output  # the progress bar (on stderr)

    [org] = _resources(dir_fhir, f"Organization?identifier={FINESS}|330000001")
    assert org["name"] == "CPTS Bordeaux Rive Droite"
    assert "extension" not in org and org["address"][0]["city"] == "Bordeaux"
    [doctor] = _resources(dir_fhir, f"Practitioner?identifier={RPPS}|10000000003")
    assert doctor["name"][0]["family"] == "Nom3"
    assert {"system": ID_NAT_PS, "value": "810000000003"} in [
        {"system": i["system"], "value": i["value"]} for i in doctor["identifier"]
    ]
    assert [q["code"]["coding"][0]["code"] for q in doctor["qualification"]] == ["DE05", "10"]
    assert all("extension" not in q for q in doctor["qualification"])
    assert "as-dp-practitioner" not in str(doctor.get("meta"))
    roles = _resources(dir_fhir, f"PractitionerRole?organization=Organization/{org['id']}&_count=50")
    assert len(roles) == 6
    assert {r["practitioner"]["reference"].split("/")[0] for r in roles} == {"Practitioner"}
    mine = _resources(dir_fhir, f"PractitionerRole?practitioner=Practitioner/{doctor['id']}")
    assert len(mine) == 1 and mine[0]["organization"]["reference"] == f"Organization/{org['id']}"
    [hs] = _resources(dir_fhir, f"HealthcareService?organization=Organization/{org['id']}")
    assert hs["name"] == "Coordination des parcours" and "location" not in hs


def test_sync_twice_changes_nothing_then_only_what_changed(
    dir_app: Flask, dir_fhir: Fhir, ans: DirectoryServer
) -> None:
    assert _sync(dir_app).exit_code == 0
    again = _sync(dir_app, "001-01-1001")  # by the directory's id this time
    assert again.exit_code == 0, again.output
    assert f"created 0, updated 0, unchanged {CPTS_RECORDS}, failed 0" in again.stdout
    assert len(_resources(dir_fhir, "Practitioner?_count=100")) == 5
    assert len(_resources(dir_fhir, "PractitionerRole?_count=100")) == 6

    people = ans.data.resources["Practitioner"]
    saved = copy.deepcopy(people["003-000002"])
    try:
        people["003-000002"]["name"][0]["family"] = "Nom2-Epouse"
        third = _sync(dir_app)
    finally:
        people["003-000002"] = saved
    assert f"created 0, updated 1, unchanged {CPTS_RECORDS - 1}, failed 0" in third.stdout
    [renamed] = _resources(dir_fhir, f"Practitioner?identifier={RPPS}|10000000002")
    assert renamed["name"][0]["family"] == "Nom2-Epouse" and renamed["meta"]["versionId"] == "2"


def test_a_record_our_rules_refuse_fails_alone(dir_app: Flask, dir_fhir: Fhir, ans: DirectoryServer) -> None:
    result = _sync(dir_app, "330000002")
    assert result.exit_code == 1
    # Organization + the good doctor and its role; the 10-digit RPPS and its role fail.
    assert "created 3, updated 0, unchanged 0, failed 2" in result.stdout
    assert "Practitioner/003-bad" in result.stdout and "RPPS" in result.stdout
    assert len(_resources(dir_fhir, f"Practitioner?identifier={RPPS}|10000002002")) == 1


def test_sync_with_the_directory_down_says_so_and_keeps_nothing_half_done(
    dir_app: Flask, dir_fhir: Fhir, ans: DirectoryServer
) -> None:
    ans.fail("503")
    result = _sync(dir_app)
    assert result.exit_code == 1
    assert "annuaire-sante: answered HTTP 503" in result.output and "run it again" in result.output
    assert _resources(dir_fhir, "Organization") == []
    ans.reset()
    assert _sync(dir_app).exit_code == 0


def test_sync_of_an_unknown_or_malformed_organization(
    dir_app: Flask, dir_fhir: Fhir, ans: DirectoryServer
) -> None:
    unknown = _sync(dir_app, "990000001")
    assert unknown.exit_code == 1 and "no organization 990000001" in unknown.output
    bad = _sync(dir_app, "../etc/passwd")
    assert bad.exit_code == 1 and "FINESS number or a directory id" in bad.output
    assert not any("passwd" in q for _p, q in ans.requests)


def test_sync_without_a_configured_directory_is_refused(app: Flask) -> None:
    result = _sync(app)
    assert result.exit_code == 1 and "no directory configured" in result.output


def test_a_member_who_left_loses_the_role(dir_app: Flask, dir_fhir: Fhir, ans: DirectoryServer) -> None:
    """Review of issue 8 (stale affiliations are access): a role the directory no longer lists for the
    organization is made inactive by the next full sync; it grants no more care-team reach."""
    assert _sync(dir_app).exit_code == 0
    roles = ans.data.resources["PractitionerRole"]
    saved = dict(roles)  # the directory server is shared by the module's tests: restored as it was
    roles.pop("pr-1")
    try:
        ans.reset()
        dir_app.extensions["directory"].cache.clear()
        again = _sync(dir_app)
        assert again.exit_code == 0, again.output
    finally:
        roles.clear()
        roles.update(saved)
    [doctor] = _resources(dir_fhir, f"Practitioner?identifier={RPPS}|10000000001")
    [role] = _resources(dir_fhir, f"PractitionerRole?practitioner=Practitioner/{doctor['id']}")
    assert role["active"] is False
    others = _resources(dir_fhir, "PractitionerRole?active=true")
    assert others, "the roles still listed stay active"
