"""Property: for random worlds and practitioners, every read path returns exactly what the care-team rule
allows (tests/security/model.py, an independent model of the rule of auth/policy.py)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Fhir
from tests.security.conftest import PROFILE, as_bearer, mint_token, reset
from tests.security.model import Model, World, compartments, local_ref
from tests.security.worlds import CODES, PATIENTS, TYPES, build, read_back, worlds

JSON = {"Accept": "application/fhir+json"}


def _entries(body: dict[str, Any], mode: str | None = None) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in body.get("entry", [])
        if "resource" in e and (mode is None or e.get("search", {}).get("mode", "match") == mode)
    ]


def _leaks(model: Model, world: World, resources: list[dict[str, Any]]) -> list[str]:
    """Returned versions the model says this principal may not see (judged version by version)."""
    leaks = []
    for resource in resources:
        key = f"{resource['resourceType']}/{resource['id']}"
        versions = world.versions.get(key, [])
        version = resource.get("meta", {}).get("versionId")
        stored = next((v for v in versions if v["meta"]["versionId"] == version), world.current.get(key))
        if stored is not None and not model.visible(stored):
            leaks.append(f"{key}/_history/{version}")
    return leaks


def subject(observation: dict[str, Any]) -> str | None:
    found = local_ref(observation.get("subject"))
    return found.split("/", 1)[1] if found else None


class Checker:
    def __init__(self, user: Fhir, model: Model, world: World) -> None:
        self.user, self.model, self.world = user, model, world
        self.failures: list[str] = []

    def get(self, url: str) -> Any:
        return self.user.request("GET", f"/fhir/{url}", **JSON)

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def search(self, query: str, expected: set[str] | None, *, may_refuse: bool = False) -> None:
        """Matches must equal ``expected`` (ids); nothing returned may be hidden."""
        response = self.get(f"{query}{'&' if '?' in query else '?'}_count=500")
        if response.status_code == 403 and (may_refuse or expected == set()):
            return
        if response.status_code != 200:
            self.fail(f"{query}: HTTP {response.status_code} {response.get_json()}")
            return
        body = response.get_json()
        leaks = _leaks(self.model, self.world, _entries(body))
        if leaks:
            self.fail(f"{query}: returns hidden {leaks}")
        got = {r["id"] for r in _entries(body, "match")}
        if expected is not None and got != expected:
            self.fail(f"{query}: matches {sorted(got)}, model {sorted(expected)}")

    def reads(self) -> None:
        """read, vread of each version, instance and type history."""
        model, world = self.model, self.world
        for key, resource in world.current.items():
            status = self.get(key).status_code
            if (status == 200) != model.visible(resource):
                self.fail(f"read {key}: HTTP {status}, model visible={model.visible(resource)}")
            allowed = {v["meta"]["versionId"] for v in world.versions[key] if model.visible(v)}
            for version in world.versions[key]:
                vid = version["meta"]["versionId"]
                status = self.get(f"{key}/_history/{vid}").status_code
                if (status == 200) != (vid in allowed):
                    self.fail(f"vread {key}/_history/{vid}: HTTP {status}, model visible={vid in allowed}")
            response = self.get(f"{key}/_history")
            if response.status_code == 200:
                got = {r["meta"]["versionId"] for r in _entries(response.get_json())}
                if got != allowed:
                    self.fail(f"history {key}: versions {sorted(got)}, model {sorted(allowed)}")
            elif allowed and model.visible(resource):
                self.fail(
                    f"history {key}: HTTP {response.status_code}, model allows versions {sorted(allowed)}"
                )
        for kind in TYPES:
            response = self.get(f"{kind}/_history?_count=1000")
            if response.status_code == 200:
                leaks = _leaks(model, world, _entries(response.get_json()))
                if leaks:
                    self.fail(f"{kind}/_history returns hidden {leaks}")

    def _observations(self) -> list[dict[str, Any]]:
        return [o for o in self.world.of_type("Observation") if self.model.visible(o)]

    def searches(self) -> None:
        """Type searches and one search per parameter type (token, reference, string, date)."""
        model = self.model
        for kind in TYPES:
            self.search(kind, model.visible_ids(kind))
        observations = self._observations()

        for code in CODES:  # token
            self.search(
                f"Observation?code=http://loinc.org|{code}",
                {o["id"] for o in observations if o["code"]["coding"][0]["code"] == code},
            )
        for patient in PATIENTS:  # reference
            mine = {o["id"] for o in observations if subject(o) == patient}
            self.search(f"Observation?subject=Patient/{patient}", mine)
            self.search(f"Observation?patient={patient}", mine)
            self.search(f"Encounter?subject=Patient/{patient}", None)
        self.search("Observation?value-string=note", {o["id"] for o in observations})  # string
        for index, patient in enumerate(PATIENTS):
            visible = patient in model.visible_ids("Patient")
            self.search(f"Patient?name=Fam{index}", {patient} if visible else set())  # string
            self.search(
                f"Patient?birthdate=19{50 + index * 10}-01-01", {patient} if visible else set()
            )  # date
        self.search(
            "Observation?date=ge2021-01-01",
            {o["id"] for o in observations if o["effectiveDateTime"] >= "2021"},
        )

    def chains(self) -> None:
        """Chained search and _has (a 403 for user tokens is acceptable)."""
        model, world = self.model, self.world
        observations = self._observations()
        for index, patient in enumerate(PATIENTS):
            self.search(
                f"Observation?subject:Patient.name=Fam{index}",
                {o["id"] for o in observations if subject(o) == patient},
                may_refuse=True,
            )
        for code in CODES:  # _has
            having = {subject(o) for o in observations if o["code"]["coding"][0]["code"] == code}
            self.search(
                f"Patient?_has:Observation:subject:code={code}",
                {p for p in having if p} & model.visible_ids("Patient"),
                may_refuse=True,
            )
            performed = (
                {"bob"}
                if any(o.get("performer") and o["code"]["coding"][0]["code"] == code for o in observations)
                else set()
            )
            self.search(f"Practitioner?_has:Observation:performer:code={code}", performed, may_refuse=True)
        self.search(
            "Organization?_has:Encounter:service-provider:status=finished",
            {"o1"} if any(model.visible(e) for e in world.of_type("Encounter")) else set(),
            may_refuse=True,
        )

    def includes(self) -> None:
        model = self.model
        observations = self._observations()
        self.search("Observation?_include=Observation:subject", {o["id"] for o in observations})
        self.search("Patient?_revinclude=Observation:subject", model.visible_ids("Patient"))
        self.search(
            "CareTeam?_include=CareTeam:subject&_include=CareTeam:participant", model.visible_ids("CareTeam")
        )

    def everything(self) -> None:
        model, world = self.model, self.world
        for patient in PATIENTS:
            response = self.get(f"Patient/{patient}/$everything")
            if patient not in model.reach:
                if response.status_code == 200:
                    leaks = _leaks(model, world, _entries(response.get_json()))
                    if leaks:
                        self.fail(f"Patient/{patient}/$everything returns hidden {leaks}")
                continue
            if response.status_code != 200:
                self.fail(f"Patient/{patient}/$everything: HTTP {response.status_code}, patient reachable")
                continue
            resources = _entries(response.get_json())
            leaks = _leaks(model, world, resources)
            if leaks:
                self.fail(f"Patient/{patient}/$everything returns hidden {leaks}")
            expected = {k for k, r in world.current.items() if patient in compartments(r)}
            got = {f"{r['resourceType']}/{r['id']}" for r in resources}
            if not expected <= got:
                self.fail(f"Patient/{patient}/$everything misses {sorted(expected - got)}")


PATHS = ["reads", "searches", "chains", "includes", "everything"]


@pytest.mark.parametrize("paths", PATHS)
def test_read_paths_return_what_the_rule_allows(app: Flask, fhir: Fhir, paths: str) -> None:
    """One test per group of read paths, so that each failing group shows its own minimal world."""
    system = as_bearer(app, mint_token(app, "system/*.cruds"))
    users = {name: as_bearer(app, mint_token(app, "user/*.cruds", name)) for name in ("alice", "bob")}

    @settings(settings.get_profile(PROFILE))
    @given(recipe=worlds(), who=st.sampled_from(["alice", "bob"]))
    def check(recipe: dict[str, Any], who: str) -> None:
        reset(app)
        build(system, recipe)
        world = read_back(system)
        model = Model(world, who)
        checker = Checker(users[who], model, world)
        getattr(checker, paths)()
        assert not checker.failures, "\n".join(checker.failures)

    check()
