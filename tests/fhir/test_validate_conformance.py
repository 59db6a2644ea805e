"""$validate (R4 resource-operation-validate) and the read-only conformance artefacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import Flask

from coordination_api.app import create_app
from coordination_api.config import Settings
from coordination_api.conformance_load import load_conformance
from coordination_api.core import profiles
from tests.conftest import Fhir, authed

EXAMPLES = Path(__file__).resolve().parent.parent / "data" / "fr-core"
PATIENT_INS = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins"


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return data


def parameters(resource: dict[str, Any], **extra: str) -> dict[str, Any]:
    params: list[dict[str, Any]] = [{"name": "resource", "resource": resource}]
    if "mode" in extra:
        params.append({"name": "mode", "valueCode": extra["mode"]})
    if "profile" in extra:
        params.append({"name": "profile", "valueUri": extra["profile"]})
    return {"resourceType": "Parameters", "parameter": params}


def test_validate_valid_resource_is_200_informational(fhir: Fhir) -> None:
    response = fhir.request("POST", "/fhir/Patient/$validate", example("patient-ins-valid.json"))
    assert response.status_code == 200
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert {i["severity"] for i in outcome["issue"]} <= {"information", "warning"}


def test_validate_invalid_resource_is_200_with_every_error(fhir: Fhir) -> None:
    response = fhir.request(
        "POST", "/fhir/Patient/$validate", parameters(example("patient-ins-invalid-status-prov.json"))
    )
    assert response.status_code == 200
    errors = [i for i in response.get_json()["issue"] if i["severity"] == "error"]
    assert errors and all(i["expression"] for i in errors)
    assert fhir.ids("Patient") == set()


def test_validate_with_profile_parameter_applies_it(fhir: Fhir) -> None:
    plain = {"resourceType": "Patient", "gender": "female"}
    response = fhir.request("POST", "/fhir/Patient/$validate", parameters(plain, profile=PATIENT_INS))
    errors = [i for i in response.get_json()["issue"] if i["severity"] == "error"]
    assert any("Patient.birthDate" in i["expression"][0] for i in errors)


def test_validate_structure_errors_are_reported_not_refused(fhir: Fhir) -> None:
    response = fhir.request(
        "POST", "/fhir/Patient/$validate", {"resourceType": "Patient", "birthDate": "soon"}
    )
    assert response.status_code == 200
    assert response.get_json()["issue"][0]["expression"] == ["Patient.birthDate"]


def test_validate_instance_modes(fhir: Fhir) -> None:
    created = fhir.create({"resourceType": "Patient", "gender": "male"})
    url = f"/fhir/Patient/{created['id']}/$validate"
    stored = fhir.request("GET", url)
    assert stored.status_code == 200
    assert stored.get_json()["issue"][0]["severity"] == "information"
    wrong_id = fhir.request(
        "POST", url, parameters({"resourceType": "Patient", "id": "other"}, mode="update")
    )
    assert any(i["severity"] == "error" for i in wrong_id.get_json()["issue"])
    deletable = fhir.request("POST", url + "?mode=delete")
    assert "can be deleted" in deletable.get_json()["issue"][0]["diagnostics"]
    assert fhir.request("POST", "/fhir/Patient/unknown/$validate?mode=delete").status_code == 404


def test_validate_bad_inputs_are_4xx(fhir: Fhir) -> None:
    assert (
        fhir.request("POST", "/fhir/Patient/$validate?mode=destroy", {"resourceType": "Patient"}).status_code
        == 400
    )
    assert fhir.request("POST", "/fhir/Patient/$validate", b"{nope").status_code == 400
    assert fhir.request("POST", "/fhir/Patient/$validate", {"resourceType": "Parameters"}).status_code == 400
    assert fhir.request("POST", "/fhir/Nope/$validate", {"resourceType": "Patient"}).status_code == 404
    assert (
        fhir.request("POST", "/fhir/Patient/$validate?mode=delete", {"resourceType": "Patient"}).status_code
        == 400
    )


def test_write_with_profile_errors_is_422_and_writes_nothing(fhir: Fhir) -> None:
    response = fhir.request("POST", "/fhir/Patient", example("patient-ins-invalid-nir-key.json"))
    assert response.status_code == 422
    assert all(i.get("expression") for i in response.get_json()["issue"])
    assert fhir.ids("Patient") == set()


def test_conformance_artefacts_are_loaded_searchable_and_read_only(app: Flask, fhir: Fhir) -> None:
    repo = app.extensions["coordination"].repo
    first = load_conformance(repo)
    assert first.created > 700
    again = load_conformance(repo)
    assert again.created == 0 and again.updated == 0
    found = fhir.search(f"StructureDefinition?url={PATIENT_INS}")
    assert [e["resource"]["url"] for e in found["entry"]] == [PATIENT_INS]
    sd_id = found["entry"][0]["resource"]["id"]
    assert fhir.search("StructureDefinition?name:exact=FRCorePatientINSProfile").get("total", 0) <= 1
    assert fhir.search("SearchParameter?code=birthdate&base=Patient")["total"] == 1
    assert fhir.search("ValueSet?url=http://hl7.org/fhir/ValueSet/administrative-gender")["total"] == 1
    assert fhir.request("GET", f"/fhir/StructureDefinition/{sd_id}").status_code == 200
    refused = fhir.request("PUT", f"/fhir/StructureDefinition/{sd_id}", found["entry"][0]["resource"])
    assert refused.status_code == 405
    assert refused.get_json()["resourceType"] == "OperationOutcome"
    assert fhir.request("DELETE", f"/fhir/StructureDefinition/{sd_id}").status_code == 405
    assert (
        fhir.request(
            "POST",
            "/fhir/CodeSystem",
            {"resourceType": "CodeSystem", "status": "draft", "content": "complete"},
        ).status_code
        == 405
    )


def test_capability_statement_lists_supported_profiles_and_validate(fhir: Fhir) -> None:
    metadata = fhir.request("GET", "/fhir/metadata").get_json()
    patient = next(r for r in metadata["rest"][0]["resource"] if r["type"] == "Patient")
    assert PATIENT_INS in patient["supportedProfile"]
    assert any(op["name"] == "validate" for op in patient["operation"])


def test_unknown_profile_is_refused_when_configured(database_url: str) -> None:

    strict = create_app(Settings(database_url=database_url, reject_unknown_profiles=True))
    try:
        response = authed(strict.test_client()).post(
            "/fhir/Patient",
            data=json.dumps(
                {"resourceType": "Patient", "meta": {"profile": ["https://example.org/unknown"]}}
            ),
            headers={"Content-Type": "application/fhir+json"},
        )
        assert response.status_code == 422
        assert response.get_json()["issue"][0]["expression"] == ["Patient.meta.profile[0]"]
    finally:
        profiles.configure(reject_unknown_profiles=False)
        strict.extensions["coordination"].repo.engine.dispose()


def test_validate_with_an_unknown_nominated_profile_is_an_error(fhir: Fhir) -> None:
    """R4 resource-operation-validate: a nominated profile that cannot be used SHALL be an error."""
    unknown = "https://example.org/StructureDefinition/nowhere"
    plain = {"resourceType": "Patient", "gender": "female"}
    for response in (
        fhir.request("POST", "/fhir/Patient/$validate", parameters(plain, profile=unknown)),
        fhir.request("POST", f"/fhir/Patient/$validate?profile={unknown}", plain),
    ):
        assert response.status_code == 200
        issues = response.get_json()["issue"]
        assert any(
            i["severity"] == "error" and i["code"] == "not-supported" and unknown in i["diagnostics"]
            for i in issues
        ), issues


def test_validate_with_an_unknown_claimed_profile_stays_a_warning(fhir: Fhir) -> None:
    unknown = "https://example.org/StructureDefinition/nowhere"
    claimed = {"resourceType": "Patient", "meta": {"profile": [unknown]}}
    issues = fhir.request("POST", "/fhir/Patient/$validate", claimed).get_json()["issue"]
    assert [(i["severity"], i["code"]) for i in issues] == [("warning", "not-supported")]
