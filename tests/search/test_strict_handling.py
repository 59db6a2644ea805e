"""Prefer: handling=strict never lets a parameter be dropped silently; lenient lists what it ignored
in the Bundle's OperationOutcome (R4 search.html#errors, http.html#prefer)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Fhir
from tests.support.search import (
    assert_400,
    entries_by_mode,
    link,
    local,
    match_ids,
    observation,
    patient,
    put,
)


@pytest.fixture
def data(fhir: Fhir) -> Fhir:
    for pid in ("a", "b", "c"):
        put(fhir, patient(pid))
    put(fhir, {"resourceType": "Location", "id": "l1", "position": {"longitude": 4.8, "latitude": 45.7}})
    put(fhir, observation("o1", "8480-6", valueQuantity={"value": 150}))
    put(fhir, observation("o2", "8480-6", valueQuantity={"value": 90}))
    return fhir


def _outcome_text(bundle: dict[str, Any]) -> str:
    outcomes = entries_by_mode(bundle, "outcome")
    assert len(outcomes) == 1
    return " ".join(i.get("diagnostics", "") for i in outcomes[0]["resource"]["issue"])


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("Patient?colour=blue", "colour"),
        ("Patient?_text=dupont", "_text"),
        ("Patient?_content=dupont", "_content"),
        ("Patient?_filter=name eq x", "_filter"),
        ("Patient?_list=l1", "_list"),
        ("Location?near=45.7|4.8|10|km", "near"),
        ("Patient?_has:Observation:subject:colour=blue", "colour"),
    ],
)
def test_unsupported_parameters_strict_400_lenient_listed(data: Fhir, query: str, named: str) -> None:
    body = assert_400(data, query, Prefer="handling=strict")
    assert named in body["issue"][0]["diagnostics"]
    bundle = data.search(query)
    assert named in _outcome_text(bundle)
    response = data.request("GET", f"/fhir/{query}", Prefer="handling=lenient")
    assert response.status_code == 200
    assert named in _outcome_text(response.get_json())


def test_composite_is_applied_under_strict_handling(data: Fhir) -> None:
    response = data.request(
        "GET", "/fhir/Observation?code-value-quantity=8480-6$gt100", Prefer="handling=strict"
    )
    assert response.status_code == 200
    assert set(match_ids(response.get_json())) == {"o1"}
    assert not entries_by_mode(response.get_json(), "outcome")


@pytest.mark.parametrize(
    "query",
    [
        "Observation?code:in=http://example.org/ValueSet/unknown",
        "Observation?code:below=http://loinc.org|8480-6",
        "Patient?identifier:of-type=x",
        "Observation?code-value-quantity=8480-6",
        "Patient?_includex=Patient:organization",
    ],
)
def test_unsupported_modifiers_and_bad_values_are_400_in_both_modes(data: Fhir, query: str) -> None:
    assert_400(data, query)
    assert_400(data, query, Prefer="handling=strict")


def test_parameters_beside_a_page_token(data: Fhir) -> None:
    first = data.search("Patient?_count=1")
    nxt = local(link(first, "next") or "")
    assert_400(data, f"{nxt}&family=x".removeprefix("/fhir/"), Prefer="handling=strict")
    bundle = data.search(f"{nxt}&family=x".removeprefix("/fhir/"))
    assert len(match_ids(bundle)) == 1
    assert "family" in _outcome_text(bundle)
    plain = data.search(nxt.removeprefix("/fhir/"))
    assert not entries_by_mode(plain, "outcome")
