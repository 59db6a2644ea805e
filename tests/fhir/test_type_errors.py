"""Type errors in FHIR JSON (R4 json.html) are told in our words: the element's FHIRPath, the FHIR type
expected and what was found; no sentence of the validation library ever reaches a client."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Fhir

DATA = Path(__file__).parent.parent / "data" / "synthea_transaction.json"
PATIENT = {"resourceType": "Patient", "name": [{"family": "Moreau"}], "birthDate": "1961-05-06"}
# Phrases of pydantic and fhir.resources' own messages (pydantic_core's error templates).
LIBRARY = re.compile(
    r"Input should|validation error|type=|pydantic|datetimes with zero time|For further information"
    r"|Value error|does not match spec regex|Expect any of field|Value for the field|is expected from the"
    r"|String should|should be a valid|Field required|Extra inputs",
    re.IGNORECASE,
)


def diagnostics(response: Any) -> list[str]:
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome", body
    return [issue.get("diagnostics", "") for issue in body["issue"]]


def post(fhir: Fhir, resource: dict[str, Any]) -> Any:
    return fhir.request("POST", f"/fhir/{resource['resourceType']}", resource)


@pytest.mark.parametrize(
    ("change", "expected", "expression"),
    [
        (
            {"birthDate": 19800101},
            "Invalid value 19800101 for Patient.birthDate: expected a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)"
            " as a JSON string, found a number",
            "Patient.birthDate",
        ),
        (
            {"birthDate": "1980-02-30"},
            'Invalid value "1980-02-30" for Patient.birthDate: expected a FHIR date',
            "Patient.birthDate",
        ),
        (
            {"deceasedDateTime": "2020-01-01T10:00"},
            "expected a FHIR dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss with a time zone)",
            "Patient.deceasedDateTime",
        ),
        (
            {"meta": {"lastUpdated": "2020-01-01"}},
            "expected a FHIR instant (YYYY-MM-DDThh:mm:ss with a time zone)",
            "Patient.meta.lastUpdated",
        ),
        (
            {"active": "true"},
            "expected a FHIR boolean as JSON true or false, found a string",
            "Patient.active",
        ),
        (
            {"multipleBirthInteger": 1.5},
            "expected a FHIR integer (a whole number) as a JSON number, found a decimal number",
            "Patient.multipleBirthInteger",
        ),
        ({"gender": ["male"]}, "found an array (the element does not repeat)", "Patient.gender"),
        ({"id": "a b"}, "expected a FHIR id (1 to 64 letters, digits, '-' or '.')", "Patient.id"),
        (
            {"name": {"family": "Moreau"}},
            "expected a JSON array (the element repeats), each item a FHIR HumanName as a JSON object,"
            " found an object",
            "Patient.name",
        ),
        (
            {"name": ["Moreau"]},
            "expected a FHIR HumanName as a JSON object, found a string",
            "Patient.name[0]",
        ),
        ({"name": [{"given": "Jean"}]}, "found a string", "Patient.name[0].given"),
        (
            {"name": [{"given": [3]}]},
            "expected a FHIR string as a JSON string, found a number",
            "Patient.name[0].given[0]",
        ),
        ({"name": [None]}, "Patient.name[0] is null", "Patient.name[0]"),
        (
            {"telecom": [{"system": "phone", "value": "0102030405", "rank": 0}]},
            "Invalid value 0 for Patient.telecom[0].rank:"
            " expected a FHIR positiveInt (a whole number, 1 or more)",
            "Patient.telecom[0].rank",
        ),
        (
            {"extension": [{"url": 5, "valueString": "x"}]},
            "expected a FHIR uri as a JSON string, found a number",
            "Patient.extension[0].url",
        ),
        (
            {"extension": [{"url": "http://example.org/e", "valueCode": True}]},
            "expected a FHIR code (text without leading or trailing spaces) as a JSON string,"
            " found a boolean",
            "Patient.extension[0].valueCode",
        ),
        (
            {"extension": [{"url": "http://example.org/e", "valueTime": "25:00"}]},
            'Invalid value "25:00" for Patient.extension[0].valueTime: expected a FHIR time (hh:mm:ss)',
            "Patient.extension[0].valueTime",
        ),
        (
            {"extension": [{"url": "http://example.org/e", "valueString": "a", "valueBoolean": True}]},
            "Patient.extension[0].value[x] has one type only: found valueString and valueBoolean",
            "Patient.extension[0].valueBoolean",
        ),
        (
            {"contained": [{"resourceType": "Patient", "id": "c", "birthDate": 1980}]},
            "Invalid value 1980 for Patient.contained[0].birthDate",
            "Patient.contained[0].birthDate",
        ),
        ({"text": {"status": "generated", "div": 5}}, "expected FHIR narrative XHTML", "Patient.text.div"),
        ({"_birthDate": "x"}, "found a string", "Patient._birthDate"),
        ({"nickname": "Jo"}, "Unknown element 'nickname' (Patient.nickname)", "Patient.nickname"),
    ],
)
def test_type_errors_name_element_type_and_value(
    fhir: Fhir, change: dict[str, Any], expected: str, expression: str
) -> None:
    response = post(fhir, {**PATIENT, **change})
    assert response.status_code == 400, response.get_json()
    issue = response.get_json()["issue"][0]
    assert expected in issue["diagnostics"]
    assert issue["expression"] == [expression]
    assert not LIBRARY.search(issue["diagnostics"])


def test_missing_required_element_is_named(fhir: Fhir) -> None:
    response = post(fhir, {"resourceType": "Observation", "code": {"text": "x"}})
    assert response.status_code == 400
    assert diagnostics(response)[0] == "Missing required element 'status' (Observation.status)"


# -- property: any element given a value of the wrong JSON type (or "x" for a string) -------------


def _seeds() -> list[dict[str, Any]]:
    """The Synthea transaction's resources as stand-alone ones (references to each other by type/id)."""
    bundle = json.loads(DATA.read_text())
    kinds = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}
    text = json.dumps([e["resource"] for e in bundle["entry"]])
    for full_url, reference in kinds.items():
        text = text.replace(f'"{full_url}"', f'"{reference}"')
    resources: list[dict[str, Any]] = json.loads(text)
    for resource in resources:
        resource.pop("meta", None)  # US Core profiles are not ours (unknown profiles are refused)
    return resources


SEEDS = _seeds()


def _paths(node: Any, expression: str) -> list[tuple[str, tuple[str | int, ...]]]:
    """Every element (and array item) of a resource: its FHIRPath and its JSON location."""
    out: list[tuple[str, tuple[str | int, ...]]] = []

    def walk(value: Any, at: str, loc: tuple[str | int, ...]) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "resourceType":
                    continue
                out.append((f"{at}.{key}", (*loc, key)))
                walk(item, f"{at}.{key}", (*loc, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                out.append((f"{at}[{index}]", (*loc, index)))
                walk(item, f"{at}[{index}]", (*loc, index))

    walk(node, expression, ())
    return out


def _kind(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


WRONG = st.sampled_from([19800101, 1.5, True, "x", {}, {"z": 1}, [], [1], ["x"], [{"z": 1}], None])


def test_wrong_json_types_anywhere_are_named_in_our_words(fhir: Fhir) -> None:
    for seed in SEEDS:
        written = fhir.request("PUT", f"/fhir/{seed['resourceType']}/{seed['id']}", seed)
        assert written.status_code in (200, 201), written.get_json()

    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(data=st.data(), wrong=WRONG)
    def check(data: st.DataObject, wrong: Any) -> None:
        seed = data.draw(st.sampled_from(SEEDS))
        expression, loc = data.draw(st.sampled_from(_paths(seed, seed["resourceType"])))
        resource = copy.deepcopy(seed)
        parent: Any = resource
        for part in loc[:-1]:
            parent = parent[part]
        retyped = _kind(parent[loc[-1]]) != _kind(wrong)
        if not (retyped or wrong == "x") or expression.endswith(".div"):
            return  # no change to check (the narrative's XHTML has its own: test_narrative)
        parent[loc[-1]] = wrong
        response = post(fhir, resource)
        assert response.status_code < 500, response.get_data(as_text=True)
        if response.status_code < 400:
            return  # e.g. an extension's value[x] given another type
        texts = diagnostics(response)
        assert not [t for t in texts if LIBRARY.search(t)], texts
        if retyped:
            assert expression in texts[0], (expression, texts)
        else:  # "x" for a string: a date, a code of a required binding (on the element or its
            # CodeableConcept)…: the issue's expression is the element or one that holds it
            held = response.get_json()["issue"][0].get("expression", [])
            assert expression in texts[0] or any(expression.startswith(e) for e in held), (expression, texts)

    check()
