"""Base R4 rules of the core definitions on every write and in $validate (issue 18)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Fhir

ENCOUNTER: dict[str, Any] = {
    "resourceType": "Encounter",
    "status": "finished",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
}


def _errors(response: Any) -> list[tuple[str, str]]:
    return [
        (i["diagnostics"], i["expression"][0])
        for i in response.get_json()["issue"]
        if i["severity"] == "error"
    ]


@pytest.mark.parametrize(
    ("extra", "key", "where"),
    [
        (
            {"period": {"start": "2024-03-02T10:00:00Z", "end": "2024-03-01T10:00:00Z"}},
            "per-1",
            "Encounter.period",
        ),
        ({"type": [{"coding": []}]}, "ele-1", "Encounter.type[0].coding"),
        ({"serviceType": {}}, "ele-1", "Encounter.serviceType"),
        ({"extension": [{"url": "http://example.org/x"}]}, "ext-1", "Encounter.extension[0]"),
        ({"subject": {"reference": "#nope"}}, "ref-1", "Encounter.subject"),
        ({"length": {"value": 3, "code": "h"}}, "qty-3", "Encounter.length"),
    ],
)
def test_a_write_breaking_a_base_rule_is_refused_naming_it(
    fhir: Fhir, extra: dict[str, Any], key: str, where: str
) -> None:
    response = fhir.request("POST", "/fhir/Encounter", {**ENCOUNTER, **extra})
    # Empty elements are structure (400, as the model's findings); invariants are 422.
    assert response.status_code == (400 if key == "ele-1" else 422), response.get_json()
    assert any(d.startswith(f"{key}:") and w == where for d, w in _errors(response)), _errors(response)
    assert fhir.ids("Encounter") == set()


def test_contained_ids_and_dom_rules(fhir: Fhir) -> None:
    contained = {"resourceType": "Practitioner", "id": "p" * 65, "meta": {"versionId": "2"}}
    body = {
        **ENCOUNTER,
        "contained": [contained],
        "participant": [{"individual": {"reference": "#" + "p" * 65}}],
    }
    errors = _errors(fhir.request("POST", "/fhir/Encounter", body))
    assert any(w == "Encounter.contained[0].id" for _, w in errors), errors
    assert any(d.startswith("dom-4:") for d, _ in errors), errors


def test_a_valid_write_passes(fhir: Fhir) -> None:
    body = {**ENCOUNTER, "period": {"start": "2024-03-01", "end": "2024-03-02T10:00:00Z"}}
    created = fhir.create(body)
    assert created["period"]["start"] == "2024-03-01"


def test_validate_reports_base_rules_with_the_profile_findings(fhir: Fhir) -> None:
    questionnaire = {
        "resourceType": "Questionnaire",
        "status": "active",
        "item": [
            {"linkId": "a", "type": "boolean"},
            {
                "linkId": "b",
                "type": "string",
                "enableWhen": [
                    {"question": "a", "operator": "=", "answerBoolean": True},
                    {"question": "a", "operator": "exists", "answerBoolean": True},
                ],
            },
        ],
    }
    response = fhir.request("POST", "/fhir/Questionnaire/$validate", questionnaire)
    assert response.status_code == 200
    assert any(d.startswith("que-12:") and w == "Questionnaire.item[1]" for d, w in _errors(response))
