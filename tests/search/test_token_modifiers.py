"""Token modifiers :in, :not-in, :above, :below, :of-type, :text (R4 search.html#token)."""

from __future__ import annotations

import pytest

from tests.conftest import Fhir
from tests.support.search import assert_400, observation, patient, put

CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
OTHER = "https://other.example.org/ids"
IPP = "https://hopital.example.org/fhir/sid/ipp"


def _condition(cid: str, status: str) -> dict[str, object]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": status}]},
        "subject": {"reference": "Patient/p1"},
    }


@pytest.fixture
def conditions(fhir: Fhir) -> Fhir:
    put(fhir, patient("p1"))
    for cid, status in [("c-active", "active"), ("c-relapse", "relapse"), ("c-resolved", "resolved")]:
        put(fhir, _condition(cid, status))
    return fhir


def test_in_and_not_in_a_shipped_value_set(conditions: Fhir) -> None:
    put(conditions, observation("o-final", status="final"))
    put(conditions, observation("o-prelim", status="preliminary"))
    put(conditions, observation("o-other", status="final", code="x"))
    vs = "http://hl7.org/fhir/ValueSet/observation-status"
    # status is a code (its system implicit, none in the data): matched on the code alone.
    assert conditions.ids(f"Observation?status:in={vs}") == {"o-final", "o-prelim", "o-other"}
    assert conditions.ids(f"Observation?status:not-in={vs}") == set()
    assert conditions.ids("Condition?clinical-status:in=http://hl7.org/fhir/ValueSet/condition-clinical") == {
        "c-active",
        "c-relapse",
        "c-resolved",
    }
    assert (
        conditions.ids("Condition?clinical-status:not-in=http://hl7.org/fhir/ValueSet/condition-clinical")
        == set()
    )
    assert conditions.ids(
        "Condition?clinical-status:not-in=http://hl7.org/fhir/ValueSet/observation-status"
    ) == {
        "c-active",
        "c-relapse",
        "c-resolved",
    }


def test_in_an_unknown_or_unexpandable_value_set_is_400_naming_it(conditions: Fhir) -> None:
    body = assert_400(conditions, "Condition?code:in=http://example.org/ValueSet/nope")
    assert "http://example.org/ValueSet/nope" in body["issue"][0]["diagnostics"]
    # Known but not computable here: it includes all of SNOMED CT.
    body = assert_400(conditions, "Condition?code:in=http://hl7.org/fhir/ValueSet/condition-code")
    assert "condition-code" in body["issue"][0]["diagnostics"]
    assert "cannot be expanded" in body["issue"][0]["diagnostics"]


def test_below_and_above_in_a_shipped_hierarchy(conditions: Fhir) -> None:
    assert conditions.ids(f"Condition?clinical-status:below={CLINICAL}|active") == {"c-active", "c-relapse"}
    assert conditions.ids(f"Condition?clinical-status:below={CLINICAL}|relapse") == {"c-relapse"}
    assert conditions.ids(f"Condition?clinical-status:above={CLINICAL}|relapse") == {"c-active", "c-relapse"}
    assert conditions.ids(f"Condition?clinical-status:below={CLINICAL}|inactive") == {"c-resolved"}


def test_below_without_a_shipped_hierarchy_is_400_naming_the_modifier(conditions: Fhir) -> None:
    body = assert_400(conditions, "Observation?code:below=http://loinc.org|8867-4")
    text = body["issue"][0]["diagnostics"]
    assert ":below" in text and "http://loinc.org" in text and "not supported" in text
    assert_400(conditions, "Observation?code:above=8867-4")  # no system: nothing to walk
    assert_400(conditions, f"Condition?clinical-status:below={CLINICAL}|no-such-code")


@pytest.fixture
def identified(fhir: Fhir) -> Fhir:
    mr = {"coding": [{"system": V2_0203, "code": "MR"}]}
    ns = {"coding": [{"system": V2_0203, "code": "NI"}]}
    put(fhir, patient("typed", identifier=[{"type": mr, "system": IPP, "value": "123"}]))
    put(
        fhir,
        patient(
            "crossed",  # MR type on one identifier, the value 123 on another
            identifier=[
                {"type": mr, "system": IPP, "value": "999"},
                {"type": ns, "system": OTHER, "value": "123"},
            ],
        ),
    )
    put(fhir, patient("untyped", identifier=[{"system": IPP, "value": "123"}]))
    return fhir


def test_of_type_matches_type_and_value_of_the_same_identifier(identified: Fhir) -> None:
    assert identified.ids(f"Patient?identifier:of-type={V2_0203}|MR|123") == {"typed"}
    assert identified.ids(f"Patient?identifier:of-type={V2_0203}|NI|123") == {"crossed"}
    assert identified.ids(f"Patient?identifier:of-type={V2_0203}|MR|999,{V2_0203}|MR|123") == {
        "typed",
        "crossed",
    }
    assert identified.ids(f"Patient?identifier:of-type={V2_0203}|MR|555") == set()
    # The plain identifier search is unchanged.
    assert identified.ids("Patient?identifier=123") == {"typed", "crossed", "untyped"}


def test_of_type_rows_follow_updates(identified: Fhir) -> None:
    put(identified, patient("typed", identifier=[{"system": IPP, "value": "123"}]))
    assert identified.ids(f"Patient?identifier:of-type={V2_0203}|MR|123") == set()


@pytest.mark.parametrize("value", ["MR|123", f"{V2_0203}||123", f"{V2_0203}|MR|", "123"])
def test_of_type_needs_system_code_and_value(identified: Fhir, value: str) -> None:
    assert_400(identified, f"Patient?identifier:of-type={value}")


def test_text_modifier(identified: Fhir) -> None:
    put(identified, observation("o1", code="x", valueString="v") | {"code": {"text": "Tension artérielle"}})
    assert identified.ids("Observation?code:text=tension") == {"o1"}


def test_unknown_token_modifier_is_400(identified: Fhir) -> None:
    body = assert_400(identified, "Patient?gender:sideways=male")
    assert ":sideways" in body["issue"][0]["diagnostics"]
