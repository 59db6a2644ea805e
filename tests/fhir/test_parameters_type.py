"""Parameters is a resource type where the spec uses it (R4 parameters.html): operation bodies and
``Parameters/$validate``; it is never stored, so the REST interactions on it are 405."""

from __future__ import annotations

import pytest

from tests.conftest import Fhir

PARAMETERS = {
    "resourceType": "Parameters",
    "parameter": [{"name": "start", "valueDate": "2024-01-01"}, {"name": "count", "valueInteger": 3}],
}


def test_validate_a_parameters_resource(fhir: Fhir) -> None:
    response = fhir.request("POST", "/fhir/Parameters/$validate", PARAMETERS)
    assert response.status_code == 200, response.get_json()
    assert [i["severity"] for i in response.get_json()["issue"]] == ["information"]


def test_validate_an_invalid_parameters_resource_reports_it(fhir: Fhir) -> None:
    invalid = {"resourceType": "Parameters", "parameter": [{"valueString": "no name"}]}
    response = fhir.request("POST", "/fhir/Parameters/$validate", invalid)
    assert response.status_code == 200
    issues = response.get_json()["issue"]
    assert any(i["severity"] == "error" and "Parameters.parameter[0]" in i["expression"][0] for i in issues)


def test_validate_a_parameters_resource_given_as_the_resource_input(fhir: Fhir) -> None:
    envelope = {
        "resourceType": "Parameters",
        "parameter": [{"name": "resource", "resource": PARAMETERS}, {"name": "mode", "valueCode": "create"}],
    }
    response = fhir.request("POST", "/fhir/Parameters/$validate", envelope)
    assert [i["severity"] for i in response.get_json()["issue"]] == ["information"]


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "/fhir/Parameters"),
        ("GET", "/fhir/Parameters"),
        ("GET", "/fhir/Parameters/x"),
        ("PUT", "/fhir/Parameters/x"),
        ("DELETE", "/fhir/Parameters/x"),
        ("GET", "/fhir/Parameters/_history"),
        ("POST", "/fhir/OperationOutcome"),
    ],
)
def test_parameters_are_never_stored_or_read(fhir: Fhir, method: str, url: str) -> None:
    body = PARAMETERS if method in {"POST", "PUT"} else None
    if url.endswith("/x") and body is not None:
        body = {**PARAMETERS, "id": "x"}
    if url.endswith("OperationOutcome"):
        body = {"resourceType": "OperationOutcome", "issue": []}
    response = fhir.request(method, url, body)
    assert response.status_code == 405, response.get_json()
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "never stored" in outcome["issue"][0]["diagnostics"]


def test_transaction_entry_writing_parameters_is_refused(fhir: Fhir) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": PARAMETERS, "request": {"method": "POST", "url": "Parameters"}}],
    }
    response = fhir.request("POST", "/fhir", bundle)
    assert response.status_code == 405
    assert "never stored" in response.get_json()["issue"][0]["diagnostics"]


def test_instance_validate_of_parameters_is_refused(fhir: Fhir) -> None:
    assert fhir.request("GET", "/fhir/Parameters/x/$validate").status_code == 405
