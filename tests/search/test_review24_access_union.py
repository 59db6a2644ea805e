"""Review 24: a parameter's alternatives compiled as a UNION of index SELECTs (params/common.indexed)
and grouped reference values (params/reference._Wanted) keep the care-team rule: whatever the
alternatives name, a practitioner's search returns only what she may see."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient

from coordination_api.search.params.common import UNION_MAX
from tests.support.access import ReachWorld

LOINC = "http://loinc.org"


@pytest.fixture
def world(app: Flask, client: FlaskClient) -> ReachWorld:
    return ReachWorld(app, client)


def test_alternatives_naming_an_out_of_reach_patient_find_only_the_reachable(world: ReachWorld) -> None:
    p, q = world.p, world.q
    own = quote(f"http://localhost/fhir/Patient/{q}", safe="")
    assert world.ids(f"/fhir/Observation?patient={p},{q}") == {world.p_obs}
    assert world.ids(f"/fhir/Observation?subject=Patient/{q},Patient/{p},{own}") == {world.p_obs}
    assert world.ids(f"/fhir/Observation?subject={q},{own}") == set()
    assert world.ids(f"/fhir/Observation?patient={q},{own}&code={LOINC}|8867-4,{LOINC}|x") == set()
    assert world.ids("/fhir/Observation?patient.name=Secret,Martin&status=final,amended") == {world.p_obs}
    assert world.ids("/fhir/Patient?_has:Observation:patient:status=final,amended") == {p}
    # beside the driving criterion chosen on SQLite (query._one_driver), and beyond UNION_MAX
    for n in (2, UNION_MAX, UNION_MAX + 1):
        codes = ",".join([f"{LOINC}|8867-4", *(f"{LOINC}|c{i}" for i in range(n - 1))])
        assert world.ids(f"/fhir/Observation?code={codes}&patient={q},{p}") == {world.p_obs}
        assert world.ids(f"/fhir/Observation?code={codes}") == {world.p_obs}
