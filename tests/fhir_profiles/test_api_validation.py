"""Writes through the API refuse profile and French-identifier errors (422), on SQLite and PostgreSQL.

A refused write lists every error in its OperationOutcome, each with its FHIRPath, and stores
nothing. The API adds the French identifier rules (fhir_profiles.french_identifiers) to the errors
of the claimed profile, so the refused examples below also carry those: IDENTIFIER_ERRORS says
which, by expression.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from fhir_profiles.issues import ValidationIssue
from tests.conftest import Fhir
from tests.fhir_profiles.support import EXPECTED, INVALID, VALID, example, pair

# Errors of the French identifier layer, on top of the profile errors of expected-errors.json.
IDENTIFIER_ERRORS: dict[str, list[str]] = {
    "patient-ins-invalid-nir-key.json": ["Patient.identifier[0].value"],
    "patient-ins-invalid-status-prov.json": ["Patient.identifier[0]"],
    "patient-invalid-nss-system.json": ["Patient.identifier[1]"],  # NH-typed, but under the NIA OID
    "practitioner-invalid-idnatps.json": ["Practitioner.identifier[0].value"],
    "practitioner-invalid-rpps-10-digits.json": [
        "Practitioner.identifier[0].value",
        "Practitioner.identifier[1].value",
    ],
    "organization-invalid-finess-format.json": [
        "Organization.identifier[0].value",
        "Organization.identifier[1].value",
    ],
}
PATIENT_INS = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins"


# Examples whose only fault is a base R4 required binding (refused by the structure layer, 400).
BASE_R4_INVALID = {"patient-invalid-gender-code.json"}
EXPECTED_BASE_EXPRESSION = {"patient-invalid-gender-code.json": ["Patient.gender"]}


def fresh(name: str) -> dict[str, Any]:
    """The example without its id (POST assigns one)."""
    resource = example(name)
    resource.pop("id", None)
    return resource


def errors_of(response: Any) -> list[dict[str, Any]]:
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    return [i for i in outcome["issue"] if i["severity"] in {"error", "fatal"}]


def as_findings(issues: list[dict[str, Any]]) -> list[ValidationIssue]:
    return [
        ValidationIssue(i["severity"], i["code"], i.get("diagnostics", ""), i["expression"][0])
        for i in issues
    ]


def test_valid_patient_ins_example_is_created(fhir: Fhir) -> None:
    response = fhir.request("POST", "/fhir/Patient", fresh("patient-ins-valid.json"))
    assert response.status_code == 201, response.get_json()
    assert fhir.ids("Patient") == {response.get_json()["id"]}


@pytest.mark.parametrize("name", VALID)
def test_every_valid_example_is_accepted(fhir: Fhir, name: str) -> None:
    resource = fresh(name)
    response = fhir.request("POST", f"/fhir/{resource['resourceType']}", resource)
    assert response.status_code == 201, response.get_json()


@pytest.mark.parametrize("name", INVALID)
def test_invalid_example_is_refused_with_every_error(fhir: Fhir, name: str) -> None:
    resource = fresh(name)
    response = fhir.request("POST", f"/fhir/{resource['resourceType']}", resource)
    if name in BASE_R4_INVALID:
        # A base R4 required binding fails basic validation: 400 before any profile (R4 http.html#create).
        assert response.status_code == 400, response.get_json()
        assert response.get_json()["issue"][0]["expression"] == EXPECTED_BASE_EXPRESSION[name]
        return
    assert response.status_code == 422, response.get_json()
    errors = errors_of(response)
    assert all(len(i.get("expression", [])) == 1 for i in errors), errors
    expected = EXPECTED[name]["errors"]
    extra = IDENTIFIER_ERRORS.get(name, [])
    assert len(errors) == len(expected) + len(extra), errors
    findings = as_findings(errors)
    assert len(pair(expected, findings, resource)) == len(expected), errors
    reported = [i["expression"][0] for i in errors]
    assert all(reported.count(e) >= extra.count(e) for e in extra), reported


@pytest.mark.parametrize("name", INVALID)
def test_refused_invalid_example_is_not_stored(fhir: Fhir, name: str) -> None:
    resource = fresh(name)
    expected_status = 400 if name in BASE_R4_INVALID else 422
    assert fhir.request("POST", f"/fhir/{resource['resourceType']}", resource).status_code == expected_status
    assert fhir.ids(resource["resourceType"]) == set()


def test_invalid_example_refused_on_update_keeps_the_stored_version(fhir: Fhir) -> None:
    created = fhir.create(fresh("patient-ins-valid.json"))
    invalid = fresh("patient-ins-invalid-nir-key.json") | {"id": created["id"]}
    response = fhir.request("PUT", f"/fhir/Patient/{created['id']}", invalid)
    assert response.status_code == 422
    stored = fhir.request("GET", f"/fhir/Patient/{created['id']}").get_json()
    assert stored["meta"]["versionId"] == created["meta"]["versionId"]
    assert stored["identifier"][0]["value"] == created["identifier"][0]["value"]


def test_invalid_ins_without_any_profile_is_refused(fhir: Fhir) -> None:
    resource = fresh("patient-ins-invalid-nir-key.json")
    del resource["meta"]
    response = fhir.request("POST", "/fhir/Patient", resource)
    assert response.status_code == 422
    assert [i["expression"] for i in errors_of(response)] == [["Patient.identifier[0].value"]]
    assert fhir.ids("Patient") == set()


def test_ins_on_unvalidated_identity_without_any_profile_is_refused(fhir: Fhir) -> None:
    resource = fresh("patient-ins-invalid-status-prov.json")
    del resource["meta"]
    response = fhir.request("POST", "/fhir/Patient", resource)
    assert response.status_code == 422
    assert [i["expression"] for i in errors_of(response)] == [["Patient.identifier[0]"]]


def test_known_extension_is_checked_without_any_profile(fhir: Fhir) -> None:
    resource = fresh("patient-invalid-validation-mode.json")
    del resource["meta"]
    response = fhir.request("POST", "/fhir/Patient", resource)
    assert response.status_code == 422
    assert [i["expression"] for i in errors_of(response)] == [
        ["Patient.extension[0].extension[2].valueCoding"]
    ]


def test_unknown_meta_profile_is_accepted(fhir: Fhir) -> None:
    resource = fresh("patient-valid.json")
    resource["meta"]["profile"] = ["https://example.org/fhir/StructureDefinition/not-shipped"]
    response = fhir.request("POST", "/fhir/Patient", resource)
    assert response.status_code == 201, response.get_json()


def test_unknown_meta_profile_does_not_hide_the_known_one(fhir: Fhir) -> None:
    resource = fresh("patient-ins-invalid-gender-other.json")
    resource["meta"]["profile"].insert(0, "https://example.org/fhir/StructureDefinition/not-shipped")
    response = fhir.request("POST", "/fhir/Patient", resource)
    assert response.status_code == 422
    assert [i["expression"] for i in errors_of(response)] == [["Patient.gender"]]


def transaction(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
            for resource in resources
        ],
    }


def test_transaction_with_one_invalid_fr_core_resource_is_refused_and_writes_nothing(fhir: Fhir) -> None:
    bundle = transaction(
        fresh("practitioner-valid.json"),
        fresh("patient-ins-invalid-gender-other.json"),
        fresh("organization-valid.json"),
    )
    response = fhir.request("POST", "/fhir", bundle)
    assert 400 <= response.status_code < 500 and response.status_code in {400, 422}, response.get_json()
    expressions = [i["expression"][0] for i in errors_of(response)]
    assert expressions and all(e.startswith("Bundle.entry[1].resource.") for e in expressions), expressions
    assert "Bundle.entry[1].resource.gender" in expressions
    assert fhir.ids("Practitioner") == set()
    assert fhir.ids("Patient") == set()
    assert fhir.ids("Organization") == set()


def test_transaction_reports_identifier_errors_rooted_at_the_entry(fhir: Fhir) -> None:
    bundle = transaction(fresh("patient-ins-valid.json"), fresh("patient-ins-invalid-nir-key.json"))
    response = fhir.request("POST", "/fhir", bundle)
    assert response.status_code in {400, 422}
    expressions = [i["expression"][0] for i in errors_of(response)]
    assert "Bundle.entry[1].resource.identifier[0].value" in expressions
    assert all(e.startswith("Bundle.entry[1].resource") for e in expressions), expressions
    assert fhir.ids("Patient") == set()


def test_transaction_of_valid_fr_core_resources_is_committed(fhir: Fhir) -> None:
    bundle = transaction(fresh("practitioner-valid.json"), fresh("patient-ins-valid.json"))
    response = fhir.request("POST", "/fhir", bundle)
    assert response.status_code == 200, response.get_json()
    assert len(fhir.ids("Patient")) == 1 and len(fhir.ids("Practitioner")) == 1


def test_contained_resource_identifier_errors_are_refused(fhir: Fhir) -> None:
    contained = copy.deepcopy(fresh("practitioner-invalid-rpps-10-digits.json")) | {"id": "gp"}
    contained.pop("meta")
    resource = fresh("patient-valid.json") | {"contained": [contained]}
    resource["generalPractitioner"] = [{"reference": "#gp"}]
    response = fhir.request("POST", "/fhir/Patient", resource)
    assert response.status_code == 422
    expressions = [i["expression"][0] for i in errors_of(response)]
    assert expressions and all(e.startswith("Patient.contained[0].identifier[") for e in expressions)
