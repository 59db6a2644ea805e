"""_total, _summary, _elements, POST _search, unknown parameters and error handling (R4 search.html)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Fhir
from tests.support.search import (
    assert_400,
    encounter,
    entries_by_mode,
    link,
    local,
    match_ids,
    patient,
    put,
)

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


@pytest.fixture
def people(fhir: Fhir) -> Fhir:
    put(
        fhir,
        patient(
            "a",
            "Dupont",
            "Jean",
            gender="male",
            birthDate="1950-02-03",
            text={
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml">Jean Dupont</div>',
            },
            maritalStatus={"text": "Marié"},
        ),
    )
    put(fhir, patient("b", "Dupont", "Anne", gender="female"))
    put(fhir, patient("c", "Martin", "Paul", gender="male"))
    return fhir


def _post_search(fhir: Fhir, resource_type: str, form: str, query: str = "", **headers: str) -> Any:
    url = f"/fhir/{resource_type}/_search" + (f"?{query}" if query else "")
    return fhir.client.post(
        url, data=form, headers={"Content-Type": "application/x-www-form-urlencoded", **headers}
    )


# -- _total ---------------------------------------------------------------------------------------


def test_total_accurate_is_the_default(people: Fhir) -> None:
    assert people.search("Patient?family=dupont&_count=1")["total"] == 2
    assert people.search("Patient?family=dupont&_total=accurate&_count=1")["total"] == 2


def test_total_none_omits_total(people: Fhir) -> None:
    bundle = people.search("Patient?family=dupont&_total=none")
    assert "total" not in bundle
    assert set(match_ids(bundle)) == {"a", "b"}


def test_total_estimate_is_accepted(people: Fhir) -> None:
    bundle = people.search("Patient?family=dupont&_total=estimate")
    assert bundle.get("total", 2) == 2


def test_total_of_an_empty_search_is_zero_without_entries(people: Fhir) -> None:
    bundle = people.search("Patient?family=nobody")
    assert bundle["total"] == 0
    assert "entry" not in bundle
    assert bundle["type"] == "searchset"


def test_invalid_total_is_400(people: Fhir) -> None:
    assert_400(people, "Patient?_total=maybe")


# -- _summary and _elements -----------------------------------------------------------------------


def test_summary_count_returns_only_the_total(people: Fhir) -> None:
    bundle = people.search("Patient?gender=male&_summary=count")
    assert bundle["total"] == 2
    assert "entry" not in bundle


def test_summary_true_keeps_summary_elements_and_tags_subsetted(people: Fhir) -> None:
    bundle = people.search("Patient?_id=a&_summary=true")
    resource = bundle["entry"][0]["resource"]
    assert resource["name"] == [{"family": "Dupont", "given": ["Jean"]}]
    assert resource["birthDate"] == "1950-02-03"
    assert "text" not in resource
    assert "maritalStatus" not in resource
    assert SUBSETTED in resource["meta"]["tag"]


def test_summary_data_drops_text(people: Fhir) -> None:
    resource = people.search("Patient?_id=a&_summary=data")["entry"][0]["resource"]
    assert "text" not in resource
    assert resource["maritalStatus"] == {"text": "Marié"}


def test_summary_false_returns_whole_resources(people: Fhir) -> None:
    resource = people.search("Patient?_id=a&_summary=false")["entry"][0]["resource"]
    assert "text" in resource
    assert "tag" not in resource["meta"]


def test_invalid_summary_is_400(people: Fhir) -> None:
    assert_400(people, "Patient?_summary=short")


def test_elements_keeps_only_listed_elements(people: Fhir) -> None:
    resource = people.search("Patient?_id=a&_elements=name,gender")["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "name", "gender"}
    assert SUBSETTED in resource["meta"]["tag"]


def test_elements_applies_to_every_match(people: Fhir) -> None:
    bundle = people.search("Patient?family=dupont&_elements=birthDate")
    assert {e["resource"]["id"] for e in bundle["entry"]} == {"a", "b"}
    assert all("name" not in e["resource"] for e in bundle["entry"])


def test_elements_does_not_apply_to_included_resources(people: Fhir) -> None:
    put(people, encounter("e1", "Patient/a"))
    bundle = people.search("Encounter?_include=Encounter:subject&_elements=status")
    match = entries_by_mode(bundle, "match")[0]["resource"]
    assert "subject" not in match
    included = entries_by_mode(bundle, "include")[0]["resource"]
    assert included["name"] == [{"family": "Dupont", "given": ["Jean"]}]
    assert "tag" not in included["meta"]


def test_summary_text_keeps_narrative(people: Fhir) -> None:
    resource = people.search("Patient?_id=a&_summary=text")["entry"][0]["resource"]
    assert resource["text"]["status"] == "generated"
    assert "name" not in resource
    assert SUBSETTED in resource["meta"]["tag"]


# -- POST _search ---------------------------------------------------------------------------------


def test_post_search_with_form_body_matches_get(people: Fhir) -> None:
    response = _post_search(people, "Patient", "family=dupont&gender=male")
    assert response.status_code == 200
    body = response.get_json()
    assert body["resourceType"] == "Bundle"
    assert match_ids(body) == match_ids(people.search("Patient?family=dupont&gender=male")) == ["a"]


def test_post_search_combines_url_and_body_parameters(people: Fhir) -> None:
    response = _post_search(people, "Patient", "gender=male", query="family=dupont")
    assert match_ids(response.get_json()) == ["a"]


def test_post_search_paging_links_are_gettable(people: Fhir) -> None:
    body = _post_search(people, "Patient", "family=dupont&_count=1&_sort=given").get_json()
    assert match_ids(body) == ["b"]
    nxt = link(body, "next")
    assert nxt is not None
    assert match_ids(people.search(local(nxt).removeprefix("/fhir/"))) == ["a"]


def test_post_search_with_json_body_is_415(people: Fhir) -> None:
    response = people.request("POST", "/fhir/Patient/_search", {"family": "dupont"})
    assert response.status_code == 415
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_post_search_errors_are_400(people: Fhir) -> None:
    response = _post_search(people, "Patient", "birthdate=2020-13-45")
    assert response.status_code == 400
    assert response.get_json()["resourceType"] == "OperationOutcome"


# -- unknown parameters and handling --------------------------------------------------------------


def test_unknown_parameter_is_ignored_and_reported(people: Fhir) -> None:
    bundle = people.search("Patient?family=dupont&colour=blue")
    assert set(match_ids(bundle)) == {"a", "b"}
    outcomes = entries_by_mode(bundle, "outcome")
    assert len(outcomes) == 1
    outcome = outcomes[0]["resource"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] in {"warning", "information"}
    assert "colour" in outcome["issue"][0]["diagnostics"]


def test_unknown_parameter_is_left_out_of_the_self_link(people: Fhir) -> None:
    bundle = people.search("Patient?family=dupont&colour=blue")
    self_link = link(bundle, "self") or ""
    assert "colour" not in self_link
    assert "family=dupont" in self_link


def test_unknown_parameter_is_400_under_strict_handling(people: Fhir) -> None:
    body = assert_400(people, "Patient?family=dupont&colour=blue", Prefer="handling=strict")
    assert "colour" in body["issue"][0]["diagnostics"]


def test_known_parameters_pass_under_strict_handling(people: Fhir) -> None:
    response = people.request("GET", "/fhir/Patient?family=dupont", Prefer="handling=strict")
    assert response.status_code == 200


def test_lenient_handling_is_the_default_behaviour(people: Fhir) -> None:
    response = people.request("GET", "/fhir/Patient?colour=blue", Prefer="handling=lenient")
    assert response.status_code == 200
    assert set(match_ids(response.get_json())) == {"a", "b", "c"}


def test_strict_handling_applies_to_post_search(people: Fhir) -> None:
    response = _post_search(people, "Patient", "colour=blue", Prefer="handling=strict")
    assert response.status_code == 400


def test_unknown_modifier_on_known_parameter_is_400(people: Fhir) -> None:
    assert_400(people, "Patient?family:sounds-like=dupont")


@pytest.mark.parametrize(
    "query",
    [
        "Patient?birthdate=2020-13-45",
        "Patient?birthdate=gt2020-02-30T10:00:00Z",
        "Patient?_lastUpdated=ge2020-13",
        "Observation?value-quantity=abc",
        "Observation?value-quantity=5|a|b|c",
        "Observation?value-quantity:exact=5",
        "Patient?gender:missing=maybe",
        "Patient?_id:contains=a",
        "Patient?_lastUpdated:missing=perhaps",
        "Patient?_sort=colour",
        "Patient?_include=Patient:colour",
        "Patient?_has:Observation:patient",
        "Patient?general-practitioner:Patient=x",
        "Patient?organization.nope=x",
        "Patient?_contained=true",
        "Patient?_summary=sometimes",
    ],
)
def test_bad_values_are_400_operation_outcome(people: Fhir, query: str) -> None:
    assert_400(people, query)


def test_unknown_resource_type_is_404(people: Fhir) -> None:
    response = people.request("GET", "/fhir/Colour?name=blue")
    assert response.status_code == 404
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_format_parameter_is_not_a_search_criterion(people: Fhir) -> None:
    bundle = people.search("Patient?family=martin&_format=json&_pretty=true")
    assert match_ids(bundle) == ["c"]
    assert entries_by_mode(bundle, "outcome") == []


def test_deleted_resources_are_not_found(people: Fhir) -> None:
    assert people.request("DELETE", "/fhir/Patient/a").status_code in (200, 204)
    assert set(match_ids(people.search("Patient?family=dupont"))) == {"b"}
    assert people.search("Patient?family=dupont")["total"] == 1


def test_updated_resources_are_found_by_new_values_only(people: Fhir) -> None:
    put(people, patient("c", "Moreau", "Paul", gender="male"))
    assert match_ids(people.search("Patient?family=martin")) == []
    assert match_ids(people.search("Patient?family=moreau")) == ["c"]


PARAMETERS = [
    "family",
    "family:exact",
    "family:contains",
    "gender",
    "gender:not",
    "gender:text",
    "identifier",
    "birthdate",
    "_lastUpdated",
    "_id",
    "organization",
    "organization:Organization",
    "organization:identifier",
    "organization.name",
    "general-practitioner:Practitioner.name",
    "_has:Observation:patient:code",
    "_has:Observation:patient:value-quantity",
    "_has:Observation:patient:date",
    "_sort",
    "_count",
    "_include",
    "_revinclude",
    "_total",
    "_summary",
    "_elements",
    "_page",
    "family:missing",
]


def test_arbitrary_values_never_cause_a_server_error(people: Fhir) -> None:

    alphabet = st.sampled_from(list("abcZ019-+.:|,\\$/_ %éT\x00")) | st.characters(exclude_categories=["Cs"])

    @settings(max_examples=80, deadline=None, database=None)
    @given(name=st.sampled_from(PARAMETERS), value=st.text(alphabet, max_size=24))
    def check(name: str, value: str) -> None:
        response = people.request("GET", f"/fhir/Patient?{quote(name, safe=':')}={quote(value, safe='')}")
        assert response.status_code in (200, 400), (name, value, response.get_json())
        assert response.get_json()["resourceType"] in {"Bundle", "OperationOutcome"}

    check()
