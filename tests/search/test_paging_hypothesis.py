"""_sort and paging against a reference ordering, for random sort specifications and page sizes."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Fhir
from tests.support.search import link, local, match_ids, patient, put

FAMILIES = ["Dupont", "dupont", "Élie", "Martin", "Le Goff", None]
BIRTH_DATES = ["1950", "1950-02-03", "1980-07-14", "2001-01-01", None]
GENDERS = ["female", "male", "other", None]
KEYS = ["family", "birthdate", "gender", "_id"]


def _people(fhir: Fhir) -> list[dict[str, Any]]:
    rng = random.Random(20260101)
    people = []
    for index in range(14):
        resource: dict[str, Any] = {"resourceType": "Patient", "id": f"p{index:02d}"}
        family, birth, gender = rng.choice(FAMILIES), rng.choice(BIRTH_DATES), rng.choice(GENDERS)
        if family:
            resource = patient(f"p{index:02d}", family, "X")
        if birth:
            resource["birthDate"] = birth
        if gender:
            resource["gender"] = gender
        people.append(put(fhir, resource))
    return people


def _reference_order(people: list[dict[str, Any]], spec: list[str]) -> list[str]:
    """Missing values last in both directions, then the order the resources were created in."""

    def value(person: dict[str, Any], code: str, descending: bool) -> Any:
        if code == "family":
            names = person.get("name")
            return names[0]["family"].casefold().replace("é", "e") if names else None
        if code == "birthdate":
            birth = person.get("birthDate")
            if birth is None:
                return None
            # ascending compares the start of the range, descending its end (years or full dates here)
            if len(birth) == 4:
                return f"{birth}-12-31" if descending else f"{birth}-01-01"
            return birth
        if code == "gender":
            return person.get("gender")
        return person["id"]

    ordered = list(people)  # creation order is the final tie-breaker
    for key in reversed(spec):  # stable sorts, least significant key first
        descending = key.startswith("-")
        code = key.lstrip("-")
        keyed = [(value(p, code, descending), p) for p in ordered]
        present = [item for item in keyed if item[0] is not None]
        present.sort(key=lambda item: item[0], reverse=descending)
        ordered = [p for _, p in present] + [p for v, p in keyed if v is None]
    return [p["id"] for p in ordered]


def _pages(fhir: Fhir, query: str, relation: str, bundle: dict[str, Any]) -> list[list[str]]:
    pages = [match_ids(bundle)]
    while (url := link(bundle, relation)) is not None:
        bundle = fhir.search(local(url).removeprefix("/fhir/"))
        pages.append(match_ids(bundle))
    return pages


def test_paging_walks_the_sorted_results_both_ways(fhir: Fhir) -> None:
    people = _people(fhir)

    @settings(max_examples=30, deadline=None, database=None)
    @given(
        keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True),
        directions=st.lists(st.booleans(), min_size=3, max_size=3),
        count=st.integers(min_value=1, max_value=5),
    )
    def check(keys: list[str], directions: list[bool], count: int) -> None:
        spec = [("-" if down else "") + key for key, down in zip(keys, directions, strict=False)]
        expected = _reference_order(people, spec)
        query = f"Patient?_sort={','.join(spec)}&_count={count}"
        forward = _pages(fhir, query, "next", fhir.search(query))
        assert [pid for page in forward for pid in page] == expected, spec
        assert all(len(page) == count for page in forward[:-1])
        last = fhir.search(query)
        while (url := link(last, "next")) is not None:
            last = fhir.search(local(url).removeprefix("/fhir/"))
        backward = _pages(fhir, query, "previous", last)
        assert [pid for page in reversed(backward) for pid in page] == expected, spec

    check()
