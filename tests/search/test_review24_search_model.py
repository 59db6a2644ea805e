"""Review 24: searches against a brute-force model of the stored resources (property-based).

The search compiler rewrites a parameter's alternatives as a UNION of index SELECTs (up to
params/common.UNION_MAX), groups reference values per target type (params/reference._Wanted) and, on
SQLite, picks one driving semi-join (query._one_driver). None of that may change which rows match:
random Observations (versioned, deleted, with local, own-absolute, external and no subject) and
random combinations of parameters and modifiers (:not, :missing, :Type, chains, _has, date prefixes,
_include, paging with _count and _sort) are compared with the same criteria evaluated in Python."""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Fhir
from tests.support.search import link, local, match_ids, patient, put, typed_ids

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
OWN = "http://localhost/fhir"
EXTERNAL = "https://other.example/fhir/Patient/pa"
OBS_TARGETS = ("Group", "Device", "Patient", "Location")  # Observation.subject's target types

PATIENTS: dict[str, dict[str, Any]] = {
    "pa": {"family": "Martin", "gender": "female"},
    "pb": {"family": "martinez", "gender": "male"},
    "pc": {"family": "Élise", "gender": "female"},
    "pd": {"family": "Dupont", "gender": "male"},  # deleted below
    "pe": {"family": "Dupond"},
}
SUBJECTS = [None, "Patient/pa", "Patient/pb", "Patient/pc", "Patient/pd", "Patient/pe", "Group/ga",
            f"{OWN}/Patient/pb", EXTERNAL]  # fmt: skip
STATUSES = ["final", "amended", "preliminary", "cancelled"]
CODINGS = [(LOINC, "A"), (LOINC, "B"), (SNOMED, "A"), (None, "C")]
DATES = [None, "2020", "2020-03", "2020-03-05", "2021-07-14", "2019-12-31"]


def _norm(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _day_range(text: str) -> tuple[int, int]:
    """Inclusive ordinal days a date of year, month or day precision covers."""
    parts = [int(p) for p in text.split("-")]
    if len(parts) == 1:
        return date(parts[0], 1, 1).toordinal(), date(parts[0], 12, 31).toordinal()
    if len(parts) == 2:
        year, month = parts
        end = date(year + (month == 12), month % 12 + 1, 1).toordinal() - 1
        return date(year, month, 1).toordinal(), end
    day = date(*parts).toordinal()
    return day, day


def _date_matches(stored: str | None, prefix: str, value: str) -> bool:
    """R4 search.html#prefix, ranges against ranges (the searched day is one here)."""
    if stored is None:
        return False
    low, high = _day_range(stored)
    s_low, s_high = _day_range(value)
    contained = low >= s_low and high <= s_high
    return {
        "eq": contained,
        "ne": not contained,
        "gt": high > s_high,
        "lt": low < s_low,
        "ge": high > s_high or contained,
        "le": low < s_low or contained,
        "sa": low > s_high,
        "eb": high < s_low,
    }[prefix]


@dataclass
class World:
    observations: dict[str, dict[str, Any]]  # current, not deleted
    patients: dict[str, dict[str, Any]]  # current, not deleted


def _subject(obs: dict[str, Any]) -> str | None:
    """The subject as stored: a reference to our own base is kept relative (storage.localized)."""
    ref = (obs.get("subject") or {}).get("reference")
    if isinstance(ref, str) and ref.startswith(OWN + "/"):
        return ref[len(OWN) + 1 :]
    return ref


def _build(fhir: Fhir, seed: int) -> World:
    rng = random.Random(seed)
    patients: dict[str, dict[str, Any]] = {}
    for pid, spec in PATIENTS.items():
        body = patient(pid, spec["family"], "X")
        if "gender" in spec:
            body["gender"] = spec["gender"]
        patients[pid] = put(fhir, body)
    put(fhir, {"resourceType": "Group", "id": "ga", "type": "person", "actual": True})
    assert fhir.request("DELETE", "/fhir/Patient/pd").status_code in (200, 204)
    del patients["pd"]

    def random_observation(oid: str) -> dict[str, Any]:
        codings = rng.sample(CODINGS, rng.randint(1, 2))
        body: dict[str, Any] = {
            "resourceType": "Observation",
            "id": oid,
            "status": rng.choice(STATUSES),
            "code": {"coding": [{"code": c} if s is None else {"system": s, "code": c} for s, c in codings]},
        }
        subject = rng.choice(SUBJECTS)
        if subject is not None:
            body["subject"] = {"reference": subject}
        effective = rng.choice(DATES)
        if effective is not None:
            body["effectiveDateTime"] = effective
        return body

    observations: dict[str, dict[str, Any]] = {}
    for index in range(30):
        oid = f"o{index:02d}"
        observations[oid] = put(fhir, random_observation(oid))
    for oid in rng.sample(sorted(observations), 8):  # versioned: the search sees the current version
        observations[oid] = put(fhir, random_observation(oid))
    for oid in rng.sample(sorted(observations), 5):
        assert fhir.request("DELETE", f"/fhir/Observation/{oid}").status_code in (200, 204)
        del observations[oid]
    return World(observations, patients)


# -- criteria: (parameter, value, predicate on an Observation) --------------------------------------

Predicate = Callable[[World, dict[str, Any]], bool]
Criterion = tuple[str, str, Predicate]


def _codings(obs: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(c.get("system"), c["code"]) for c in obs["code"]["coding"]]


def _token_match(codings: list[tuple[str | None, str]], value: str) -> bool:
    if "|" not in value:
        return any(code == value for _s, code in codings)
    system, code = value.split("|")
    if system == "":
        return any(s is None and c == code for s, c in codings)
    return any(s == system and (code == "" or c == code) for s, c in codings)


def _ref_match(subject: str | None, value: str, only: str | None, targets: tuple[str, ...]) -> bool:
    """R4 search.html#reference: [Type/]id, our own absolute URL, another server's URL; ``only``: :Type."""
    if subject is None:
        return False
    if value.startswith(OWN + "/"):
        value = value[len(OWN) + 1 :]
    if "://" in value:
        return subject == value
    if "/" in value:
        return (only is None or value.split("/")[0] == only) and subject == value
    types = (only,) if only else targets
    return "/" in subject and "://" not in subject and subject.split("/") in ([t, value] for t in types)


def _chained_patient(world: World, obs: dict[str, Any]) -> dict[str, Any] | None:
    subject = _subject(obs)
    if subject is None or not subject.startswith("Patient/"):
        return None
    return world.patients.get(subject.split("/")[1])


TOKEN_VALUES = [f"{LOINC}|A", "A", f"{LOINC}|", "|C", f"{SNOMED}|A", "B", "C", f"{SNOMED}|B"]
REF_VALUES = ["Patient/pa", "pb", "Patient/pd", "Group/ga", f"{OWN}/Patient/pb", EXTERNAL, "pc", "ga",
              "Patient/pe", "Device/pa"]  # fmt: skip
DAYS = ["2020", "2020-03", "2020-03-05", "2020-06-01", "2021-07-14", "2019-12-31", "2021"]
PREFIXES = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]


def _alternatives(values: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), min_size=1, max_size=4)


@st.composite
def criteria(draw: st.DrawFn) -> Criterion:
    kind = draw(st.sampled_from(["status", "code", "subject", "patient", "missing", "date", "chain", "_id"]))
    if kind == "status":
        values = draw(_alternatives(STATUSES))
        negate = draw(st.booleans())
        wanted = set(values)
        return (
            "status:not" if negate else "status",
            ",".join(values),
            lambda w, o: (o["status"] not in wanted) if negate else (o["status"] in wanted),
        )
    if kind == "code":
        values = draw(_alternatives(TOKEN_VALUES))
        negate = draw(st.booleans())

        def code(w: World, o: dict[str, Any]) -> bool:
            hit = any(_token_match(_codings(o), v) for v in values)
            return not hit if negate else hit

        return ("code:not" if negate else "code", ",".join(quote(v, safe="") for v in values), code)
    if kind == "subject":
        values = draw(_alternatives(REF_VALUES))
        only = draw(st.sampled_from([None, "Patient", "Group"]))
        name = "subject" if only is None else f"subject:{only}"
        return (
            name,
            ",".join(quote(v, safe="") for v in values),
            lambda w, o: any(_ref_match(_subject(o), v, only, OBS_TARGETS) for v in values),
        )
    if kind == "patient":
        values = draw(_alternatives(["pa", "pb", "Patient/pc", "pd", f"{OWN}/Patient/pe", "Patient/pb"]))
        return (
            "patient",
            ",".join(quote(v, safe="") for v in values),
            lambda w, o: any(_ref_match(_subject(o), v, "Patient", OBS_TARGETS) for v in values),
        )
    if kind == "missing":
        which = draw(st.sampled_from(["subject", "date"]))
        missing = draw(st.booleans())
        element = "subject" if which == "subject" else "effectiveDateTime"
        return (f"{which}:missing", str(missing).lower(), lambda w, o: (element not in o) == missing)
    if kind == "date":
        one = st.tuples(st.sampled_from(PREFIXES), st.sampled_from(DAYS))
        pairs = draw(st.lists(one, min_size=1, max_size=3))
        return (
            "date",
            ",".join(p + d for p, d in pairs),
            lambda w, o: any(_date_matches(o.get("effectiveDateTime"), p or "eq", d) for p, d in pairs),
        )
    if kind == "chain":
        if draw(st.booleans()):
            values = draw(_alternatives(["female", "male", "other"]))
            name = draw(st.sampled_from(["patient.gender", "subject:Patient.gender"]))

            def gender(w: World, o: dict[str, Any]) -> bool:
                target = _chained_patient(w, o)
                return target is not None and target.get("gender") in values

            return name, ",".join(values), gender
        values = draw(_alternatives(["mar", "Martin", "elise", "DUPON", "z"]))
        exact = draw(st.booleans())

        def family(w: World, o: dict[str, Any]) -> bool:
            target = _chained_patient(w, o)
            if target is None:
                return False
            name = target["name"][0]["family"]
            if exact:
                return name in values
            return any(_norm(name).startswith(_norm(v)) for v in values)

        return ("patient.family:exact" if exact else "patient.family", ",".join(values), family)
    ids = draw(_alternatives([f"o{i:02d}" for i in range(0, 30, 3)]))
    return "_id", ",".join(ids), lambda w, o: o["id"] in ids


def _all_pages(fhir: Fhir, query: str) -> tuple[list[str], set[str], int | None]:
    """Every match id in page order, every included Type/id and the first page's total."""
    bundle = fhir.search(query)
    total = bundle.get("total")
    matches, included = match_ids(bundle), typed_ids(bundle, "include")
    seen = 1
    while (url := link(bundle, "next")) is not None:
        bundle = fhir.search(local(url).removeprefix("/fhir/"))
        matches += match_ids(bundle)
        included |= typed_ids(bundle, "include")
        seen += 1
        assert seen < 60, query
    return matches, included, total


def test_observation_searches_match_the_model(fhir: Fhir) -> None:
    world = _build(fhir, 2024)

    @settings(max_examples=60, deadline=None, database=None)
    @given(
        chosen=st.lists(criteria(), min_size=1, max_size=3),
        count=st.integers(min_value=2, max_value=9),
        sort=st.sampled_from([None, "_id", "-_id", "date", "-status"]),
        include=st.booleans(),
    )
    def check(chosen: list[Criterion], count: int, sort: str | None, include: bool) -> None:
        query = "&".join(f"{name}={value}" for name, value, _ in chosen)
        query = f"Observation?{query}&_count={count}&_total=accurate"
        if sort:
            query += f"&_sort={sort}"
        if include:
            query += "&_include=Observation:subject"
        expected = [o for o in world.observations.values() if all(p(world, o) for _, _, p in chosen)]
        matches, included, total = _all_pages(fhir, query)
        assert len(matches) == len(set(matches)), query  # no row on two pages
        assert sorted(matches) == sorted(o["id"] for o in expected), query
        assert total == len(expected), query
        if sort in ("_id", "-_id"):
            assert matches == sorted(matches, reverse=sort == "-_id"), query
        if include:
            wanted = {_subject(o) for o in expected}
            reachable = {f"Patient/{p}" for p in world.patients} | {"Group/ga"}
            assert included == {s for s in wanted if s in reachable}, query

    check()


@st.composite
def has_criteria(draw: st.DrawFn) -> tuple[str, Predicate]:
    """``Patient?_has:Observation:<ref>:<criterion>`` (R4 search.html#has)."""
    ref = draw(st.sampled_from(["patient", "subject"]))
    name, value, predicate = draw(criteria().filter(lambda c: not c[0].startswith(("patient.", "subject:"))))

    def patient_has(w: World, p: dict[str, Any]) -> bool:
        return any(_subject(o) == f"Patient/{p['id']}" and predicate(w, o) for o in w.observations.values())

    return f"_has:Observation:{ref}:{name}={value}", patient_has


FAMILY_VALUES = ["mar", "Martin", "élise", "DUPON", "tin", "ond", "z"]


def _family_matches(name: str, modifier: str, values: list[str]) -> bool:
    """R4 search.html#string: starts with (case and accents aside), :exact, :contains."""
    if modifier == "exact":
        return name in values
    if modifier == "contains":
        return any(_norm(v) in _norm(name) for v in values)
    return any(_norm(name).startswith(_norm(v)) for v in values)


def test_has_matches_the_model(fhir: Fhir) -> None:
    world = _build(fhir, 77)

    @settings(max_examples=30, deadline=None, database=None)
    @given(
        chosen=st.lists(has_criteria(), min_size=1, max_size=2),
        gender=st.one_of(st.none(), _alternatives(["female", "male"])),
        family=st.one_of(
            st.none(),
            st.tuples(st.sampled_from(["", "exact", "contains"]), _alternatives(FAMILY_VALUES)),
        ),
    )
    def check(
        chosen: list[tuple[str, Predicate]], gender: list[str] | None, family: tuple[str, list[str]] | None
    ) -> None:
        query = "Patient?" + "&".join(q for q, _ in chosen) + "&_count=2"
        if gender:
            query += "&gender=" + ",".join(gender)
        if family:
            modifier, values = family
            query += f"&family{':' + modifier if modifier else ''}=" + ",".join(quote(v) for v in values)
        expected = {
            p["id"]
            for p in world.patients.values()
            if all(pred(world, p) for _, pred in chosen)
            and (not gender or p.get("gender") in gender)
            and (not family or _family_matches(p["name"][0]["family"], *family))
        }
        matches, _included, _total = _all_pages(fhir, query)
        assert sorted(matches) == sorted(expected), query

    check()
