"""_include/_revinclude, _sort, _count and paging links (R4 search.html#include, #sort, #count)."""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson
import pytest

from tests.conftest import Fhir
from tests.support.search import (
    assert_400,
    encounter,
    entries_by_mode,
    link,
    local,
    match_ids,
    observation,
    patient,
    put,
    typed_ids,
)


@pytest.fixture
def care(fhir: Fhir) -> Fhir:
    put(fhir, {"resourceType": "Organization", "id": "chu", "name": "CHU"})
    put(fhir, patient("p1", "Dupont", managingOrganization={"reference": "Organization/chu"}))
    put(fhir, patient("p2", "Martin"))
    put(fhir, {"resourceType": "Group", "id": "g1", "type": "person", "actual": True})
    put(fhir, encounter("e1", "Patient/p1"))
    put(fhir, encounter("e2", "Patient/p1"))
    put(fhir, encounter("e3", "Group/g1"))
    put(fhir, encounter("e4", "Patient/p2", partOf={"reference": "Encounter/e1"}))
    put(fhir, observation("o1", subject="Patient/p1", encounter={"reference": "Encounter/e1"}))
    return fhir


# -- _include / _revinclude -----------------------------------------------------------------------


def test_include_adds_referenced_resources_in_include_mode(care: Fhir) -> None:
    bundle = care.search("Encounter?_id=e1,e3&_include=Encounter:subject")
    assert typed_ids(bundle, "match") == {"Encounter/e1", "Encounter/e3"}
    assert typed_ids(bundle, "include") == {"Patient/p1", "Group/g1"}
    assert bundle["total"] == 2
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["fullUrl"] == f"http://localhost/fhir/{resource['resourceType']}/{resource['id']}"


def test_include_lists_each_resource_once(care: Fhir) -> None:
    bundle = care.search("Encounter?_id=e1,e2&_include=Encounter:subject")
    assert [e["resource"]["id"] for e in entries_by_mode(bundle, "include")] == ["p1"]


def test_include_target_type_restriction(care: Fhir) -> None:
    bundle = care.search("Encounter?_include=Encounter:subject:Group")
    assert typed_ids(bundle, "include") == {"Group/g1"}


def test_include_target_type_must_be_a_target(care: Fhir) -> None:
    assert_400(care, "Encounter?_include=Encounter:subject:Practitioner")


def test_include_of_a_match_stays_a_match(care: Fhir) -> None:
    bundle = care.search("Encounter?_id=e1,e4&_include=Encounter:part-of")
    assert typed_ids(bundle, "match") == {"Encounter/e1", "Encounter/e4"}
    assert entries_by_mode(bundle, "include") == []


def test_include_skips_deleted_targets(care: Fhir) -> None:
    assert care.request("DELETE", "/fhir/Group/g1").status_code in (200, 204)
    bundle = care.search("Encounter?_id=e3&_include=Encounter:subject")
    assert entries_by_mode(bundle, "include") == []


def test_include_wildcard(care: Fhir) -> None:
    bundle = care.search("Observation?_include=*")
    assert typed_ids(bundle, "include") == {"Patient/p1", "Encounter/e1"}


def test_include_for_another_source_type_adds_nothing(care: Fhir) -> None:
    bundle = care.search("Encounter?_id=e1&_include=Observation:subject")
    assert entries_by_mode(bundle, "include") == []


def test_include_iterate_follows_included_resources(care: Fhir) -> None:
    bundle = care.search(
        "Observation?_include=Observation:encounter&_include:iterate=Encounter:subject"
        "&_include:iterate=Patient:organization"
    )
    assert typed_ids(bundle, "include") == {"Encounter/e1", "Patient/p1", "Organization/chu"}


def test_include_iterate_goes_as_deep_as_the_references_go(fhir: Fhir) -> None:
    put(fhir, encounter("level0"))
    for level in range(1, 7):
        put(fhir, encounter(f"level{level}", partOf={"reference": f"Encounter/level{level - 1}"}))
    bundle = fhir.search("Encounter?_id=level6&_include:iterate=Encounter:part-of")
    assert typed_ids(bundle, "include") == {f"Encounter/level{level}" for level in range(6)}
    assert entries_by_mode(bundle, "outcome") == []


def test_include_iterate_stops_on_cycles(fhir: Fhir) -> None:
    put(fhir, encounter("ping", partOf={"reference": "Encounter/pong"}))
    put(fhir, encounter("pong", partOf={"reference": "Encounter/ping"}))
    bundle = fhir.search("Encounter?_id=ping&_include:iterate=Encounter:part-of")
    assert typed_ids(bundle, "include") == {"Encounter/pong"}


def test_include_without_iterate_does_not_follow_included_resources(care: Fhir) -> None:
    bundle = care.search("Observation?_include=Observation:encounter&_include=Encounter:subject")
    assert typed_ids(bundle, "include") == {"Encounter/e1"}


def test_revinclude_adds_referencing_resources(care: Fhir) -> None:
    bundle = care.search("Patient?_revinclude=Encounter:subject")
    assert typed_ids(bundle, "match") == {"Patient/p1", "Patient/p2"}
    assert typed_ids(bundle, "include") == {"Encounter/e1", "Encounter/e2", "Encounter/e4"}
    assert bundle["total"] == 2


def test_revinclude_iterate(care: Fhir) -> None:
    bundle = care.search(
        "Patient?_id=p1&_revinclude=Encounter:subject&_revinclude:iterate=Observation:encounter"
    )
    assert typed_ids(bundle, "include") == {"Encounter/e1", "Encounter/e2", "Observation/o1"}


def test_include_and_revinclude_together(care: Fhir) -> None:
    bundle = care.search("Encounter?_id=e1&_include=Encounter:subject&_revinclude=Observation:encounter")
    assert typed_ids(bundle, "include") == {"Patient/p1", "Observation/o1"}


def test_include_only_for_the_current_page(care: Fhir) -> None:
    bundle = care.search("Encounter?_sort=_id&_count=1&_include=Encounter:subject")
    assert match_ids(bundle) == ["e1"]
    assert typed_ids(bundle, "include") == {"Patient/p1"}


@pytest.mark.parametrize(
    "query",
    [
        "Encounter?_include=Encounter",
        "Encounter?_include=Encounter:status",
        "Encounter?_include=Encounter:nope",
        "Encounter?_include=Encounter:subject:Patient:extra",
        "Encounter?_include:deep=Encounter:subject",
        "Patient?_revinclude=Encounter",
    ],
)
def test_include_malformed_is_400(care: Fhir, query: str) -> None:
    assert_400(care, query)


# -- _sort ----------------------------------------------------------------------------------------


@pytest.fixture
def family(fhir: Fhir) -> Fhir:
    put(fhir, patient("a", "Dupont", "Jean", birthDate="1950-02-03"))
    put(fhir, patient("b", "Dupont", "Anne", birthDate="1980-07-14"))
    put(fhir, patient("c", "Martin", "Paul", birthDate="1965"))
    put(fhir, patient("d", "Élie", "Zoé", birthDate="2001-01-01"))
    put(fhir, patient("e", "Bernard", "Luc"))
    return fhir


def test_sort_by_string_ascending_ignores_case_and_accents(family: Fhir) -> None:
    ids = match_ids(family.search("Patient?_sort=family,given"))
    assert ids == ["e", "b", "a", "d", "c"]


def test_sort_by_string_is_by_code_point_on_every_backend(fhir: Fhir) -> None:
    # A locale collation would ignore the space ("legoff" > "leblanc"); code point order does not.
    for pid, name in {"goff": "Le Goff", "blanc": "Leblanc", "roux": "Le Roux", "b": "Le-Bon"}.items():
        put(fhir, patient(pid, name))
    assert match_ids(fhir.search("Patient?_sort=family")) == ["goff", "roux", "b", "blanc"]
    assert match_ids(fhir.search("Patient?_sort=-_id")) == ["roux", "goff", "blanc", "b"]


def test_sort_descending(family: Fhir) -> None:
    ids = match_ids(family.search("Patient?_sort=-family,-given"))
    assert ids == ["c", "d", "a", "b", "e"]


def test_sort_multiple_keys_mixed_directions(family: Fhir) -> None:
    ids = match_ids(family.search("Patient?_sort=family,-birthdate"))
    assert ids == ["e", "b", "a", "d", "c"]
    ids = match_ids(family.search("Patient?_sort=family,birthdate"))
    assert ids == ["e", "a", "b", "d", "c"]


def test_sort_by_date_puts_missing_values_last(family: Fhir) -> None:
    assert match_ids(family.search("Patient?_sort=birthdate")) == ["a", "c", "b", "d", "e"]
    assert match_ids(family.search("Patient?_sort=-birthdate")) == ["d", "b", "c", "a", "e"]


def test_sort_by_last_updated_descending(fhir: Fhir) -> None:
    for pid in ("x", "y", "z"):
        put(fhir, patient(pid))
        time.sleep(0.002)
    put(fhir, {**patient("x"), "gender": "male"})
    assert match_ids(fhir.search("Patient?_sort=-_lastUpdated")) == ["x", "z", "y"]
    assert match_ids(fhir.search("Patient?_sort=_lastUpdated")) == ["y", "z", "x"]


def test_sort_by_id(family: Fhir) -> None:
    assert match_ids(family.search("Patient?_sort=-_id")) == ["e", "d", "c", "b", "a"]


def test_sort_by_token(family: Fhir) -> None:
    put(family, patient("f", "Zed", gender="female"))
    put(family, patient("m", "Alpha", gender="male"))
    ids = match_ids(family.search("Patient?gender:missing=false&_sort=gender"))
    assert ids == ["f", "m"]


def test_sort_by_period_uses_start_ascending_and_end_descending(fhir: Fhir) -> None:
    put(fhir, encounter("long", period={"start": "2026-01-01", "end": "2026-03-01"}))
    put(fhir, encounter("short", period={"start": "2026-01-10", "end": "2026-01-11"}))
    assert match_ids(fhir.search("Encounter?_sort=date")) == ["long", "short"]
    assert match_ids(fhir.search("Encounter?_sort=-date")) == ["long", "short"]


def test_sort_combines_with_criteria(family: Fhir) -> None:
    assert match_ids(family.search("Patient?family=dupont&_sort=-given")) == ["a", "b"]


@pytest.mark.parametrize("spec", ["nope", "-nope", "family,nope", "_content"])
def test_sort_unknown_parameter_is_400(family: Fhir, spec: str) -> None:
    assert_400(family, f"Patient?_sort={spec}")


# -- _count and paging ----------------------------------------------------------------------------


@pytest.fixture
def many(fhir: Fhir) -> Fhir:
    for index in range(7):
        put(fhir, patient(f"p{index}", f"Family{index}"))
    return fhir


def _walk(fhir: Fhir, query: str) -> list[list[str]]:
    """Follow next links from the first page; the ids of each page."""
    pages = []
    bundle = fhir.search(query)
    while True:
        pages.append(match_ids(bundle))
        nxt = link(bundle, "next")
        if nxt is None:
            return pages
        bundle = fhir.search(local(nxt).removeprefix("/fhir/"))


def test_count_limits_the_page_and_total_counts_all(many: Fhir) -> None:
    bundle = many.search("Patient?_count=3&_sort=family")
    assert match_ids(bundle) == ["p0", "p1", "p2"]
    assert bundle["total"] == 7
    assert link(bundle, "next") is not None
    assert link(bundle, "previous") is None


def test_next_links_walk_every_result_once_in_order(many: Fhir) -> None:
    pages = _walk(many, "Patient?_count=3&_sort=-family")
    assert pages == [["p6", "p5", "p4"], ["p3", "p2", "p1"], ["p0"]]


def test_page_bundles_keep_total(many: Fhir) -> None:
    first = many.search("Patient?_count=3&_sort=family")
    second = many.search(local(link(first, "next") or "").removeprefix("/fhir/"))
    assert second["total"] == 7


def test_previous_link_goes_back(many: Fhir) -> None:
    first = many.search("Patient?_count=3&_sort=family")
    second = many.search(local(link(first, "next") or "").removeprefix("/fhir/"))
    assert match_ids(second) == ["p3", "p4", "p5"]
    previous = link(second, "previous")
    assert previous is not None
    assert match_ids(many.search(local(previous).removeprefix("/fhir/"))) == ["p0", "p1", "p2"]


def test_paging_is_stable_while_resources_are_inserted(many: Fhir) -> None:
    bundle = many.search("Patient?_count=2&_sort=family")
    seen = match_ids(bundle)
    for index in range(10):
        # New resources that sort first, in the middle and last.
        put(many, patient(f"new-a{index}", f"Aaaa{index}"))
        put(many, patient(f"new-f{index}", f"Family3{index}"))
        put(many, patient(f"new-z{index}", f"Zzzz{index}"))
        nxt = link(bundle, "next")
        if nxt is None:
            break
        bundle = many.search(local(nxt).removeprefix("/fhir/"))
        seen += match_ids(bundle)
    assert seen == [f"p{i}" for i in range(7)]


def test_paging_with_unsorted_search_is_stable_while_resources_are_inserted(many: Fhir) -> None:
    bundle = many.search("Patient?_count=3")
    seen = match_ids(bundle)
    put(many, patient("late", "Late"))
    while (nxt := link(bundle, "next")) is not None:
        bundle = many.search(local(nxt).removeprefix("/fhir/"))
        seen += match_ids(bundle)
        put(many, patient(f"late{len(seen)}", "Late"))
    assert sorted(seen) == [f"p{i}" for i in range(7)]


def test_paging_does_not_skip_when_seen_resources_are_deleted(many: Fhir) -> None:
    first = many.search("Patient?_count=3&_sort=family")
    assert match_ids(first) == ["p0", "p1", "p2"]
    for pid in ("p0", "p1"):
        assert many.request("DELETE", f"/fhir/Patient/{pid}").status_code in (200, 204)
    second = many.search(local(link(first, "next") or "").removeprefix("/fhir/"))
    assert match_ids(second) == ["p3", "p4", "p5"]


def test_paging_does_not_repeat_when_seen_resources_move_to_the_front(many: Fhir) -> None:
    first = many.search("Patient?_count=3&_sort=-_lastUpdated")
    assert match_ids(first) == ["p6", "p5", "p4"]
    time.sleep(0.002)
    put(many, patient("p5", "Family5", gender="male"))  # now the most recently updated
    second = many.search(local(link(first, "next") or "").removeprefix("/fhir/"))
    assert match_ids(second) == ["p3", "p2", "p1"]


def test_paging_with_missing_sort_values_and_ties(fhir: Fhir) -> None:
    for index in range(7):
        extra = {"birthDate": f"19{50 + index % 3}"} if index % 2 else {}
        put(fhir, patient(f"p{index}", "Same", **extra))
    expected = match_ids(fhir.search("Patient?_sort=family,-birthdate&_count=100"))
    pages = _walk(fhir, "Patient?_sort=family,-birthdate&_count=2")
    assert [pid for page in pages for pid in page] == expected
    assert sorted(expected) == [f"p{index}" for index in range(7)]


def test_previous_links_walk_back_to_the_first_page(many: Fhir) -> None:
    bundle = many.search("Patient?_count=2&_sort=-family")
    while (nxt := link(bundle, "next")) is not None:
        bundle = many.search(local(nxt).removeprefix("/fhir/"))
    assert match_ids(bundle) == ["p0"]
    pages = [match_ids(bundle)]
    while (previous := link(bundle, "previous")) is not None:
        bundle = many.search(local(previous).removeprefix("/fhir/"))
        pages.insert(0, match_ids(bundle))
    assert pages == [["p6", "p5"], ["p4", "p3"], ["p2", "p1"], ["p0"]]
    assert link(bundle, "next") is not None


def test_count_zero_gives_total_without_entries(many: Fhir) -> None:
    bundle = many.search("Patient?_count=0")
    assert bundle["total"] == 7
    assert "entry" not in bundle
    assert link(bundle, "next") is None


def test_count_is_capped_by_the_maximum_page_size(many: Fhir) -> None:
    assert len(match_ids(many.search("Patient?_count=100000"))) == 7


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", ""])
def test_invalid_count_is_400(many: Fhir, value: str) -> None:
    assert_400(many, f"Patient?_count={value}")


def test_self_link_reproduces_the_search(many: Fhir) -> None:
    bundle = many.search("Patient?family=family1&_count=5")
    self_link = link(bundle, "self")
    assert self_link is not None
    assert self_link.startswith("http://localhost/fhir/Patient?")
    assert match_ids(many.search(local(self_link).removeprefix("/fhir/"))) == ["p1"]


def test_self_link_of_a_later_page_is_that_page(many: Fhir) -> None:
    first = many.search("Patient?_count=3&_sort=family")
    nxt = link(first, "next")
    assert nxt is not None
    second = many.search(local(nxt).removeprefix("/fhir/"))
    self_link = link(second, "self")
    assert self_link is not None
    assert match_ids(many.search(local(self_link).removeprefix("/fhir/"))) == ["p3", "p4", "p5"]


def test_first_link_goes_to_the_first_page(many: Fhir) -> None:
    first = many.search("Patient?_count=3&_sort=family")
    second = many.search(local(link(first, "next") or "").removeprefix("/fhir/"))
    first_link = link(second, "first")
    assert first_link is not None
    assert match_ids(many.search(local(first_link).removeprefix("/fhir/"))) == ["p0", "p1", "p2"]


def _token(data: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        "!!!",
        _token({"p": [], "o": -3, "c": 2, "b": 10}),
        _token({"p": [], "o": 0, "c": -2, "b": 10}),
        _token({"p": [], "o": 2**63 - 1, "c": 2, "b": 10}),
        _token({"p": [], "o": 0, "c": 2, "b": 2**63 - 1}),
        _token({"p": [], "o": 1.5, "c": 2, "b": 10}),
        _token({"p": [], "o": "0", "c": 2, "b": 10}),
        _token({"p": [["_count", "x"]], "o": 0, "c": 2, "b": 10}),
        _token({"p": "x", "o": 0, "c": 2, "b": 10}),
        _token([1, 2, 3]),
        _token({"p": [], "o": 2, "c": 2, "b": 10, "k": [1, 2]}),
        _token({"p": [["_sort", "family"]], "o": 2, "c": 2, "b": 10, "k": ["a"]}),
        _token({"p": [["_sort", "family"]], "o": 2, "c": 2, "b": 10, "k": ["a", "1"]}),
        _token({"p": [], "o": 2, "c": 2, "b": 10, "k": [{"x": 1}]}),
        _token({"p": [], "o": 2, "c": 2, "b": 10, "k": "abc"}),
        _token({"p": [], "o": 2, "c": 2, "b": 10, "k": [1], "r": "yes"}),
    ],
)
def test_invalid_page_token_is_400(many: Fhir, token: str) -> None:
    assert_400(many, f"Patient?_page={token}")
