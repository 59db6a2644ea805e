"""Every FR Core example of tests/data/fr-core against its profile, with the shipped artefacts.

Valid examples: no error (warnings allowed, e.g. QUAL under an extensible binding). Invalid
examples: exactly the errors expected-errors.json lists (its ``_about`` says the list is exhaustive
at error level), paired one to one with the reported errors (see tests/fhir_profiles/support.py).
"""

from __future__ import annotations

import copy
from typing import Any

import fhirpathpy
import pytest
from fhirpathpy.models import models

from fhir_profiles.conformance import Conformance
from fhir_profiles.issues import ValidationIssue
from fhir_profiles.native_invariants import native_check
from fhir_profiles.validator import Validator, syntax_error
from tests.fhir_profiles.support import (
    EXPECTED,
    FILES,
    INVALID,
    VALID,
    example,
    location_matches,
    pair,
    profile_of,
    valid_source,
)


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator(Conformance.from_directories())


def validate(validator: Validator, name: str) -> list[ValidationIssue]:
    return validator.validate(example(name), [profile_of(name)])


def test_every_example_has_an_expected_outcome() -> None:
    assert set(FILES) == set(EXPECTED)
    assert VALID and INVALID and len(VALID) + len(INVALID) == len(FILES)


@pytest.mark.parametrize("name", FILES)
def test_example_claims_the_profile_it_is_checked_against(name: str) -> None:
    assert profile_of(name) in example(name)["meta"]["profile"]


@pytest.mark.parametrize("name", FILES)
def test_example_profile_is_shipped(validator: Validator, name: str) -> None:
    assert validator.profile(profile_of(name)) is not None


@pytest.mark.parametrize("name", VALID)
def test_valid_example_has_no_error(validator: Validator, name: str) -> None:
    issues = validate(validator, name)
    assert [i for i in issues if i.is_error] == []


def test_qualified_status_outside_the_extensible_value_set_is_only_a_warning(validator: Validator) -> None:
    issues = validate(validator, "patient-ins-valid-qual-corse.json")
    assert [(i.severity, i.code) for i in issues] == [("warning", "code-invalid")]
    assert issues[0].expression.startswith("Patient.extension[0].extension[")


@pytest.mark.parametrize("name", INVALID)
def test_invalid_example_reports_every_expected_error_at_its_location(
    validator: Validator, name: str
) -> None:
    resource, expected = example(name), EXPECTED[name]["errors"]
    errors = [i for i in validate(validator, name) if i.is_error]
    paired = pair(expected, errors, resource)
    missing = [expected[e]["location"] for e in range(len(expected)) if e not in paired]
    assert missing == [], [(i.code, i.expression, i.diagnostics) for i in errors]


@pytest.mark.parametrize("name", INVALID)
def test_invalid_example_reports_no_unexpected_error(validator: Validator, name: str) -> None:
    resource, expected = example(name), EXPECTED[name]["errors"]
    errors = [i for i in validate(validator, name) if i.is_error]
    paired = set(pair(expected, errors, resource).values())
    extra = [(i.code, i.expression, i.diagnostics) for n, i in enumerate(errors) if n not in paired]
    assert extra == []


@pytest.mark.parametrize("name", FILES)
def test_every_reported_expression_is_fhirpath_rooted_at_the_resource(
    validator: Validator, name: str
) -> None:
    resource = example(name)
    for issue in validate(validator, name):
        assert issue.expression.split(".")[0].split("[")[0] == resource["resourceType"]
        assert syntax_error(issue.expression) is None, issue.expression


@pytest.mark.parametrize("name", FILES)
def test_reported_expressions_of_present_nodes_select_them(validator: Validator, name: str) -> None:
    # A finding on a node that is there (not a missing element) selects exactly one node.
    resource = example(name)
    for issue in validate(validator, name):
        if issue.code in {"value", "code-invalid"}:
            assert len(fhirpathpy.evaluate(resource, issue.expression, {}, models["r4"])) == 1, issue


@pytest.mark.parametrize("name", INVALID)
def test_expected_error_expression_is_false_on_the_invalid_example(name: str) -> None:
    # The data's own check: each expected 'expression' is false here and true on the valid source.
    for error in EXPECTED[name]["errors"]:
        assert fhirpathpy.evaluate(example(name), error["expression"], {}, models["r4"]) == [False]


@pytest.mark.parametrize("name", INVALID)
def test_expected_error_expression_is_true_on_the_valid_source(name: str) -> None:
    source = example(valid_source(name))
    for error in EXPECTED[name]["errors"]:
        assert fhirpathpy.evaluate(source, error["expression"], {}, models["r4"]) == [True]


@pytest.mark.parametrize(
    ("expected", "reported", "matches"),
    [
        ("Patient.gender", "Patient.gender", True),
        ("Patient", "Patient.identifier[0]", True),
        ("Patient.identifier[0].use", "Patient.identifier[1].use", False),
        ("Patient.identifier.system", "Patient.identifier[1].system", True),
        ("Patient.extension[0].extension[2].value", "Patient.extension[0].extension[2].valueCoding", True),
        ("Patient.extension.where(url = 'urn:b')", "Patient.extension[1].valueAddress", True),
        ("Patient.extension.where(url = 'urn:a')", "Patient.extension[1].valueAddress", False),
        ("Patient.extension.where(url = 'urn:a')", "Patient.extension", True),
        ("Patient.gender", "Patient", False),
        ("Patient.name", "Patient.names", False),
    ],
)
def test_location_comparison(expected: str, reported: str, matches: bool) -> None:
    resource = {
        "resourceType": "Patient",
        "extension": [{"url": "urn:a"}, {"url": "urn:b", "valueAddress": {}}],
    }
    assert location_matches(expected, reported, resource) is matches


def test_shipped_invariants_parse() -> None:
    conformance = Conformance.from_directories()
    expressions = [
        constraint["expression"]
        for definition in conformance.structure_definitions.values()
        for element in definition["differential"]["element"]
        for constraint in element.get("constraint", [])
    ]
    assert expressions and [e for e in expressions if syntax_error(e)] == []


def test_shipped_required_bindings_all_expand() -> None:
    conformance = Conformance.from_directories()
    required = {
        element["binding"]["valueSet"]
        for definition in conformance.structure_definitions.values()
        for element in definition["differential"]["element"]
        if element.get("binding", {}).get("strength") == "required"
    }
    assert required and {url for url in required if not conformance.codes(url)} == set()


def _shipped_invariants() -> list[tuple[str, str, str]]:
    """(key, resource type, FHIRPath) of every invariant of the shipped profiles."""
    conformance = Conformance.from_directories()
    return sorted(
        (constraint["key"], definition["type"], constraint["expression"])
        for definition in conformance.structure_definitions.values()
        for element in definition["differential"]["element"]
        for constraint in element.get("constraint", [])
    )


def _variants(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """The example and edge cases of it for the identifier invariants."""
    out = [resource]
    for index, identifier in enumerate(resource.get("identifier") or []):
        value = identifier.get("value")
        # No trailing-newline variant: fhirpathpy's matches('^…$') accepts "…\n" (Python's $ matches
        # before a final newline), the native checks (fullmatch) do not; the identifier layer
        # (french_identifiers) refuses such values anyway.
        for changed in [None, value[:-1], " " + value, "8" + value, value.replace("0", "A", 1)]:
            variant = copy.deepcopy(resource)
            if changed is None:
                del variant["identifier"][index]["value"]
            else:
                variant["identifier"][index]["value"] = changed
            out.append(variant)
        retyped = copy.deepcopy(resource)
        retyped["identifier"][index]["type"] = {
            "coding": [
                {"system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203", "code": "INS-NIR"}
            ]
        }
        out.append(retyped)
    for extension in resource.get("extension") or []:
        for sub in extension.get("extension") or []:
            if sub.get("url") == "identityStatus":
                for code, system in [("VALI", "urn:other"), ("QUAL", None), ("PROV", None)]:
                    variant = copy.deepcopy(resource)
                    for ext in variant["extension"]:
                        for s in ext.get("extension") or []:
                            if s.get("url") == "identityStatus":
                                s["valueCoding"] = {"code": code} | ({"system": system} if system else {})
                                if system is None:
                                    s["valueCoding"]["system"] = sub["valueCoding"]["system"]
                    out.append(variant)
    return out


def _invariant_cases() -> list[Any]:
    return [
        pytest.param(key, resource_type, expression, id=key)
        for key, resource_type, expression in _shipped_invariants()
        if native_check(key) is not None
    ]


@pytest.mark.parametrize(("key", "resource_type", "expression"), _invariant_cases())
def test_native_invariant_agrees_with_its_fhirpath_expression(
    key: str, resource_type: str, expression: str
) -> None:
    native = native_check(key)
    assert native is not None
    compiled = fhirpathpy.compile(expression, model=models["r4"])
    checked = 0
    for name in FILES:
        for resource in _variants(example(name)):
            if resource["resourceType"] != resource_type:
                continue
            checked += 1
            by_fhirpath = compiled(resource, {}) in ([], [True])
            assert (native(resource) in ([], [True])) == by_fhirpath, (name, resource.get("identifier"))
    assert checked
