"""Base R4 rules of the core definitions on every write and in $validate (issue 18)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_profiles import base_rules
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


# -- required bindings and cardinalities (R4 terminologies.html#required, conformance-rules.html) ---

CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
TASK: dict[str, Any] = {"resourceType": "Task", "status": "draft", "intent": "order"}
CONDITION: dict[str, Any] = {"resourceType": "Condition", "subject": {"reference": "Patient/1"}}


def _issues(response: Any) -> list[dict[str, Any]]:
    return [i for i in response.get_json()["issue"] if i["severity"] == "error"]


@pytest.mark.parametrize(
    ("body", "where", "value", "value_set"),
    [
        ({"resourceType": "Patient", "gender": "x"}, "Patient.gender", '"x"', "administrative-gender"),
        ({**ENCOUNTER, "status": "done"}, "Encounter.status", '"done"', "encounter-status"),
        (
            {"resourceType": "Observation", "status": "ok", "code": {"text": "weight"}},
            "Observation.status",
            '"ok"',
            "observation-status",
        ),
        (  # a code of a datatype (ContactPoint.system), in a list
            {"resourceType": "Patient", "telecom": [{"system": "phone"}, {"system": "fax2", "value": "1"}]},
            "Patient.telecom[1].system",
            '"fax2"',
            "contact-point-system",
        ),
        (  # CodeableConcept: a coding of the value set's code system, not in it
            {**CONDITION, "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "done"}]}},
            "Condition.clinicalStatus",
            f"{CLINICAL}|done",
            "condition-clinical",
        ),
    ],
)
def test_a_code_outside_a_required_binding_is_refused(
    fhir: Fhir, body: dict[str, Any], where: str, value: str, value_set: str
) -> None:
    response = fhir.request("POST", f"/fhir/{body['resourceType']}", body)
    assert response.status_code == 400, response.get_json()
    found = [i for i in _issues(response) if i["code"] == "code-invalid"]
    assert [i["expression"] for i in found] == [[where]], _issues(response)
    diagnostics = found[0]["diagnostics"]
    assert value in diagnostics and f"http://hl7.org/fhir/ValueSet/{value_set}" in diagnostics, diagnostics
    assert fhir.ids(body["resourceType"]) == set()


@pytest.mark.parametrize(
    "codings",
    [
        [{"system": CLINICAL, "code": "active"}],
        # one coding of the value set is enough; the others may be translations
        [{"system": CLINICAL, "code": "done"}, {"system": CLINICAL, "code": "resolved"}],
        [{"system": "http://example.org/local", "code": "x"}, {"system": CLINICAL, "code": "relapse"}],
        # no coding of the value set's code system: not judged (terminologies.html#4.1.5)
        [{"system": "http://example.org/local", "code": "x"}],
    ],
)
def test_a_codeable_concept_with_a_required_binding(fhir: Fhir, codings: list[dict[str, str]]) -> None:
    fhir.create({**CONDITION, "clinicalStatus": {"coding": codings}})


def test_a_primitive_present_only_through_its_extensions_counts_for_the_cardinality(fhir: Fhir) -> None:
    absent = {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}
    body = {"resourceType": "Observation", "_status": {"extension": [absent]}, "code": {"text": "weight"}}
    fhir.create(body)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"resourceType": "Encounter", "status": "finished"}, "Encounter.class"),  # 1..1 missing
        ({**ENCOUNTER, "class": [ENCOUNTER["class"]]}, "Encounter.class"),  # 0..1 as an array
        ({"resourceType": "Patient", "name": {"family": "Martin"}}, "Patient.name"),  # 0..* not an array
        (
            {**TASK, "input": [{"type": {"text": "a"}}]},
            "Task.input[0]",  # Task.input.value[x] 1..1
        ),
    ],
)
def test_a_cardinality_error_is_refused(fhir: Fhir, body: dict[str, Any], where: str) -> None:
    response = fhir.request("POST", f"/fhir/{body['resourceType']}", body)
    assert response.status_code == 400, response.get_json()
    assert any(i["expression"][0].startswith(where) for i in _issues(response)), _issues(response)
    assert fhir.ids(body["resourceType"]) == set()


def test_validate_lists_every_binding_error_once(fhir: Fhir) -> None:
    profile = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient"
    body = {
        "resourceType": "Patient",
        "meta": {"profile": [profile]},  # its snapshot holds the gender binding too
        "gender": "x",
        "telecom": [{"system": "fax2", "value": "1", "use": "home"}],
        "name": [{"use": "nickname2", "family": "Martin"}],
    }
    response = fhir.request("POST", "/fhir/Patient/$validate", body)
    assert response.status_code == 200
    found = sorted(i["expression"][0] for i in _issues(response) if i["code"] == "code-invalid")
    assert found == ["Patient.gender", "Patient.name[0].use", "Patient.telecom[0].system"], _issues(response)


def test_the_r4_cardinalities_and_bindings_from_the_definitions() -> None:
    """The R4 table itself (on the write path the model's structure check reports these first)."""

    def found(resource: dict[str, Any]) -> list[tuple[str, str]]:
        return [(i.code, i.expression) for i in base_rules.check(resource)]

    assert found({"resourceType": "Encounter", "status": "finished"}) == [("required", "Encounter.class")]
    assert found({**ENCOUNTER, "class": [ENCOUNTER["class"]]}) == [("structure", "Encounter.class")]
    assert found({"resourceType": "Patient", "name": {"family": "M"}}) == [("structure", "Patient.name")]
    task = {**TASK, "input": [{"type": {"text": "a"}}]}
    assert found(task) == [("required", "Task.input[0].value")]
    # R4 code lists, not R4B's: Encounter.status "unknown" is R4 (4.0.1) too; "completed" is R5 only.
    assert found({**ENCOUNTER, "status": "unknown"}) == []
    assert found({**ENCOUNTER, "status": "completed"}) == [("code-invalid", "Encounter.status")]
    # Value sets the shipped data cannot expand (mimetypes: BCP 13) are not checked.
    assert found({"resourceType": "Binary", "contentType": "application/x-anything"}) == []
