"""The shipped protocol library: valid FHIR R4, loaded idempotently by url."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask import Flask

from coordination_api.cli import main
from coordination_api.coordination.protocol_library import SHIPPED_DIR, load_definitions
from tests.conftest import Fhir
from tests.coordination.protocols.builders import ELDERLY

SHIPPED = sorted(SHIPPED_DIR.glob("*.json"))


def test_library_ships_five_plan_definitions() -> None:
    plans = [json.loads(p.read_text("utf-8")) for p in SHIPPED if p.name.startswith("PlanDefinition-")]
    assert len(plans) == 5
    for plan in plans:
        assert plan["status"] == "active" and plan["experimental"] is False
        assert plan["url"].startswith("https://coordination.cpts.fr/fhir/PlanDefinition/")
        assert "HAS" in plan["description"] or "conventionnel" in plan["description"]
        assert "CPTS" in plan["description"]


def test_every_library_file_passes_the_api_validator(fhir: Fhir) -> None:
    for path in SHIPPED:
        resource = json.loads(path.read_text("utf-8"))
        response = fhir.request("POST", f"/fhir/{resource['resourceType']}", resource)
        assert response.status_code == 201, (path.name, response.get_json())


def _load(app: Flask, *args: str) -> str:
    result = app.test_cli_runner().invoke(main, args=["protocols", "load", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_protocols_load_is_idempotent(app: Flask, fhir: Fhir) -> None:
    first = _load(app)
    assert f"{len(SHIPPED)} created" in first
    assert "0 created, 0 updated" in _load(app)
    assert len(fhir.ids(f"PlanDefinition?url={ELDERLY}")) == 1
    assert fhir.request("GET", "/fhir/PlanDefinition/retour-domicile-personne-agee").status_code == 200


def test_startup_load_keeps_a_cpts_edited_copy(app: Flask, fhir: Fhir) -> None:

    with app.app_context():
        load_definitions(app.extensions["coordination"], mode="missing")
    plan = fhir.request("GET", "/fhir/PlanDefinition/retour-domicile-personne-agee").get_json()
    plan["title"] = "Retour à domicile (version CPTS du Val)"
    assert fhir.request("PUT", f"/fhir/PlanDefinition/{plan['id']}", plan).status_code == 200
    with app.app_context():
        again = load_definitions(app.extensions["coordination"], mode="missing")
    assert again.created == again.updated == 0
    kept = fhir.request("GET", f"/fhir/PlanDefinition/{plan['id']}").get_json()
    assert kept["title"] == "Retour à domicile (version CPTS du Val)"


def test_load_dir_adds_a_cpts_folder(app: Flask, fhir: Fhir, tmp_path: Path) -> None:
    own = {
        "resourceType": "PlanDefinition",
        "url": "https://cpts-du-val.example/fhir/PlanDefinition/chutes",
        "version": "1",
        "status": "active",
        "title": "Prévention des chutes",
        "action": [{"title": "Évaluer le risque de chute"}],
    }
    (tmp_path / "chutes.json").write_text(json.dumps(own), "utf-8")
    assert "1 created" in _load(app, "--dir", str(tmp_path))
    own["title"] = "Prévention des chutes (v1 corrigée)"
    (tmp_path / "chutes.json").write_text(json.dumps(own), "utf-8")
    assert "1 updated" in _load(app, "--dir", str(tmp_path))
    found = fhir.search(f"PlanDefinition?url={own['url']}")["entry"]
    assert [e["resource"]["title"] for e in found] == ["Prévention des chutes (v1 corrigée)"]


@pytest.mark.usefixtures("client")
def test_load_refuses_an_invalid_file(app: Flask, tmp_path: Path) -> None:
    bad = {"resourceType": "PlanDefinition", "url": "https://x.example/p", "status": "nonsense"}
    (tmp_path / "bad.json").write_text(json.dumps(bad), "utf-8")
    result = app.test_cli_runner().invoke(main, args=["protocols", "load", "--dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "bad.json" in result.output
