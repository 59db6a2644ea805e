"""The ``coordination`` console commands, run in-process on the test app (both databases)."""

from __future__ import annotations

from pathlib import Path

import orjson
from flask import Flask

from coordination_api.cli import main
from tests.conftest import Fhir


def _write(path: Path, data: object) -> str:
    path.write_bytes(orjson.dumps(data))
    return str(path)


def test_db_upgrade_is_idempotent(app: Flask) -> None:
    result = app.test_cli_runner().invoke(main, args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


def test_import_ndjson_creates_then_updates(app: Flask, fhir: Fhir, tmp_path: Path) -> None:
    lines = [
        orjson.dumps({"resourceType": "Patient", "id": f"nd{i}", "name": [{"family": f"Nd{i}"}]})
        for i in range(5)
    ]
    path = tmp_path / "patients.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    runner = app.test_cli_runner()
    first = runner.invoke(main, args=["import", str(path), "--chunk-size", "2"])
    assert first.exit_code == 0, first.output
    assert "created: 5" in first.output
    second = runner.invoke(main, args=["import", str(path)])
    assert "unchanged: 5" in second.output  # the same content again writes no version
    changed = [orjson.dumps({**orjson.loads(line), "gender": "unknown"}) for line in lines]
    path.write_bytes(b"\n".join(changed) + b"\n")
    third = runner.invoke(main, args=["import", str(path)])
    assert "updated: 5" in third.output
    assert fhir.ids("Patient?family=nd") == {f"nd{i}" for i in range(5)}


def test_import_transaction_bundle_resolves_urn_references_across_chunks(
    app: Flask, fhir: Fhir, tmp_path: Path
) -> None:
    patient_urn = "urn:uuid:6c1d8a2e-0000-4000-8000-000000000001"
    org_urn = "urn:uuid:6c1d8a2e-0000-4000-8000-000000000002"
    entries = [
        # Forward reference: the Encounter comes before the Patient it points to, in another chunk.
        {
            "fullUrl": "urn:uuid:6c1d8a2e-0000-4000-8000-000000000003",
            "resource": {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                "subject": {"reference": patient_urn},
                "serviceProvider": {"reference": org_urn},
            },
            "request": {"method": "POST", "url": "Encounter"},
        },
        {
            "fullUrl": org_urn,
            "resource": {
                "resourceType": "Organization",
                "identifier": [{"system": "https://github.com/synthetichealth/synthea", "value": "org-1"}],
                "name": "CH Synthea",
            },
            "request": {
                "method": "POST",
                "url": "Organization",
                "ifNoneExist": "identifier=https://github.com/synthetichealth/synthea|org-1",
            },
        },
        {
            "fullUrl": patient_urn,
            "resource": {"resourceType": "Patient", "name": [{"family": "Synthea"}]},
            "request": {"method": "POST", "url": "Patient"},
        },
    ]
    path = _write(
        tmp_path / "synthea.json", {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    )
    result = app.test_cli_runner().invoke(main, args=["import", path, "--chunk-size", "1"])
    assert result.exit_code == 0, result.output
    assert "created: 3" in result.output
    patient_id = next(iter(fhir.ids("Patient?family=synthea")))
    encounters = fhir.search(f"Encounter?subject=Patient/{patient_id}&_include=Encounter:service-provider")
    modes = sorted(e["search"]["mode"] for e in encounters["entry"])
    assert modes == ["include", "match"]
    again = app.test_cli_runner().invoke(main, args=["import", path])
    assert "unchanged: 1" in again.output  # the conditional Organization is found, not duplicated
    assert len(fhir.ids("Organization")) == 1


def test_import_reports_failures_with_reasons(app: Flask, fhir: Fhir, tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "ok1"}},
            {"resource": {"resourceType": "Patient", "id": "bad1", "birthDate": "not-a-date"}},
            {"resource": {"resourceType": "Patient", "id": "ok2"}},
        ],
    }
    path = _write(tmp_path / "mixed.json", bundle)
    result = app.test_cli_runner().invoke(main, args=["import", path])
    assert result.exit_code == 1
    assert "created: 2" in result.output
    assert "failed: 1" in result.output
    assert "birthDate" in result.output
    assert fhir.ids("Patient") == {"ok1", "ok2"}


def test_import_unreadable_file_is_reported(app: Flask, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    result = app.test_cli_runner().invoke(main, args=["import", str(path)])
    assert result.exit_code == 1
    assert "unreadable" in result.output


def test_import_with_worker_processes(app: Flask, fhir: Fhir, tmp_path: Path) -> None:
    patient_urns = [f"urn:uuid:00000000-0000-4000-8000-{i:012d}" for i in range(6)]
    entries = [
        {
            "fullUrl": urn,
            "resource": {"resourceType": "Patient", "name": [{"family": f"Jobs{i}"}]},
            "request": {"method": "POST", "url": "Patient"},
        }
        for i, urn in enumerate(patient_urns)
    ] + [
        {
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "w"},
                "subject": {"reference": urn},
            },
            "request": {"method": "POST", "url": "Observation"},
        }
        for urn in patient_urns
    ]
    path = _write(tmp_path / "jobs.json", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    result = app.test_cli_runner().invoke(main, args=["import", path, "--jobs", "2", "--chunk-size", "4"])
    assert result.exit_code == 0, result.output
    assert "created: 12" in result.output
    patients = fhir.ids("Patient?family=jobs&_count=50")
    assert len(patients) == 6
    observed = fhir.search("Observation?_count=50&_include=Observation:subject")
    included = {e["resource"]["id"] for e in observed["entry"] if e["search"]["mode"] == "include"}
    assert included == patients


def test_import_file_with_utf8_bom(app: Flask, fhir: Fhir, tmp_path: Path) -> None:
    """RFC 8259 section 8.1: a byte order mark at the start of the file is ignored."""
    single = tmp_path / "patient.json"
    single.write_bytes(b"\xef\xbb\xbf" + orjson.dumps({"resourceType": "Patient", "id": "bom1"}))
    lines = tmp_path / "patients.ndjson"
    lines.write_bytes(b"\xef\xbb\xbf" + orjson.dumps({"resourceType": "Patient", "id": "bom2"}) + b"\n")
    result = app.test_cli_runner().invoke(main, args=["import", str(single), str(lines)])
    assert result.exit_code == 0, result.output
    assert fhir.ids("Patient") == {"bom1", "bom2"}
