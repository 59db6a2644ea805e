"""Composite search parameters from the official R4 bundle (R4 search.html#composite)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from coordination_api.app import create_app
from coordination_api.config import Settings
from coordination_api.storage.migrate import upgrade
from coordination_api.storage.schema import idx_token, resource
from tests.conftest import Fhir
from tests.support.search import LOINC, assert_400, observation, put

SYSTOLIC, DIASTOLIC, BP = "8480-6", "8462-4", "85354-9"
UCUM = "http://unitsofmeasure.org"


def _qty(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}


def _component(code: str, value: float) -> dict[str, Any]:
    return {"code": {"coding": [{"system": LOINC, "code": code}]}, "valueQuantity": _qty(value)}


@pytest.fixture
def vitals(fhir: Fhir) -> Fhir:
    put(fhir, observation("sys-high", SYSTOLIC, valueQuantity=_qty(150)))
    put(fhir, observation("sys-low", SYSTOLIC, valueQuantity=_qty(90)))
    put(fhir, observation("dia-high", DIASTOLIC, valueQuantity=_qty(120)))
    # Blood pressure panel: systolic 95 and diastolic 130 — a value above 100 exists, but not on
    # the systolic component.
    put(fhir, observation("bp-crossed", BP, component=[_component(SYSTOLIC, 95), _component(DIASTOLIC, 130)]))
    put(fhir, observation("bp-high", BP, component=[_component(SYSTOLIC, 160), _component(DIASTOLIC, 80)]))
    put(
        fhir,
        observation(
            "mood",
            "72166-2",
            valueCodeableConcept={"coding": [{"system": "http://snomed.info/sct", "code": "8517006"}]},
        ),
    )
    put(fhir, observation("note", "8867-4", valueString="Rythme régulier"))
    put(fhir, observation("onset", "11368-8", valueDateTime="2024-03-05T10:00:00Z"))
    return fhir


def test_code_value_quantity_matches_code_and_value_of_the_observation(vitals: Fhir) -> None:
    assert vitals.ids(f"Observation?code-value-quantity={LOINC}|{SYSTOLIC}$gt100") == {"sys-high"}
    assert vitals.ids(f"Observation?code-value-quantity={SYSTOLIC}$lt100") == {"sys-low"}
    assert vitals.ids(f"Observation?code-value-quantity={LOINC}|{SYSTOLIC}$100") == set()
    assert vitals.ids(f"Observation?code-value-quantity={SYSTOLIC}$150|{UCUM}|mm[Hg]") == {"sys-high"}
    assert vitals.ids(f"Observation?code-value-quantity={SYSTOLIC}$150|{UCUM}|kg") == set()


def test_composite_values_or_with_commas(vitals: Fhir) -> None:
    query = f"Observation?code-value-quantity={SYSTOLIC}$gt100,{DIASTOLIC}$gt100"
    assert vitals.ids(query) == {"sys-high", "dia-high"}


def test_component_composite_matches_within_the_same_component(vitals: Fhir) -> None:
    # bp-crossed: the code matches component 1 and the value matches component 2: not a match.
    assert vitals.ids(f"Observation?component-code-value-quantity={LOINC}|{SYSTOLIC}$gt100") == {"bp-high"}
    assert vitals.ids(f"Observation?component-code-value-quantity={DIASTOLIC}$gt100") == {"bp-crossed"}
    assert vitals.ids(f"Observation?component-code-value-quantity={SYSTOLIC}$lt100") == {"bp-crossed"}
    # Plain token and quantity parameters ANDed do match across components.
    crossed = vitals.ids(f"Observation?component-code={SYSTOLIC}&component-value-quantity=gt100")
    assert crossed == {"bp-crossed", "bp-high"}


def test_combo_composite_covers_observation_and_its_components(vitals: Fhir) -> None:
    query = f"Observation?combo-code-value-quantity={SYSTOLIC}$gt100"
    assert vitals.ids(query) == {"sys-high", "bp-high"}


def test_code_value_concept_string_and_date(vitals: Fhir) -> None:
    assert vitals.ids("Observation?code-value-concept=72166-2$http://snomed.info/sct|8517006") == {"mood"}
    assert vitals.ids("Observation?code-value-concept=72166-2$http://snomed.info/sct|0") == set()
    assert vitals.ids("Observation?code-value-string=8867-4$rythme") == {"note"}
    assert vitals.ids("Observation?code-value-string=8867-4$absent") == set()
    assert vitals.ids("Observation?code-value-date=11368-8$2024-03") == {"onset"}
    assert vitals.ids("Observation?code-value-date=11368-8$gt2024-04") == set()


def test_composite_with_other_criteria_and_missing(vitals: Fhir) -> None:
    assert vitals.ids(f"Observation?code-value-quantity={SYSTOLIC}$gt100&_id=sys-high,sys-low") == {
        "sys-high"
    }
    assert vitals.ids("Observation?component-code-value-quantity:missing=false") == {"bp-crossed", "bp-high"}
    assert "bp-high" not in vitals.ids("Observation?component-code-value-quantity:missing=true")


def test_escaped_dollar_is_part_of_a_component(fhir: Fhir) -> None:
    put(fhir, observation("odd", "a$b", valueQuantity=_qty(5)))
    assert fhir.ids("Observation?code-value-quantity=a\\$b$5") == {"odd"}


def test_update_replaces_composite_rows(vitals: Fhir) -> None:
    put(vitals, observation("sys-high", SYSTOLIC, valueQuantity=_qty(80)))
    assert vitals.ids(f"Observation?code-value-quantity={SYSTOLIC}$gt100") == set()
    assert vitals.ids(f"Observation?code-value-quantity={SYSTOLIC}$lt85") == {"sys-high"}


def test_use_context_composite(fhir: Fhir) -> None:
    usage = "http://terminology.hl7.org/CodeSystem/usage-context-type"
    put(
        fhir,
        {
            "resourceType": "PlanDefinition",
            "id": "pd",
            "status": "active",
            "useContext": [
                {
                    "code": {"system": usage, "code": "age"},
                    "valueRange": {"low": {"value": 18, "unit": "a"}, "high": {"value": 65, "unit": "a"}},
                },
                {
                    "code": {"system": usage, "code": "focus"},
                    "valueCodeableConcept": {
                        "coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]
                    },
                },
            ],
        },
    )
    assert fhir.ids(f"PlanDefinition?context-type-value={usage}|focus$38341003") == {"pd"}
    assert fhir.ids(f"PlanDefinition?context-type-value={usage}|age$38341003") == set()
    assert fhir.ids("PlanDefinition?context-type-quantity=age$ge18") == {"pd"}


@pytest.mark.parametrize(
    "query",
    [
        f"Observation?code-value-quantity={SYSTOLIC}",  # one component
        f"Observation?code-value-quantity={SYSTOLIC}$1$2",  # three
        f"Observation?code-value-quantity={SYSTOLIC}$",  # empty value component
        f"Observation?code-value-quantity={SYSTOLIC}$abc",  # not a quantity
        f"Observation?code-value-quantity:exact={SYSTOLIC}$1",  # no modifiers on composites
        "Observation?code-value-date=x$notadate",
        "Observation?_sort=code-value-quantity",
    ],
)
def test_malformed_composite_values_are_400(vitals: Fhir, query: str) -> None:
    assert_400(vitals, query)


def test_capability_statement_lists_composites(fhir: Fhir) -> None:
    body = fhir.request("GET", "/fhir/metadata").get_json()
    observation_rest = next(r for r in body["rest"][0]["resource"] if r["type"] == "Observation")
    params = {p["name"]: p for p in observation_rest["searchParam"]}
    assert params["code-value-quantity"]["type"] == "composite"
    assert params["code-value-quantity"]["definition"] == (
        "http://hl7.org/fhir/SearchParameter/Observation-code-value-quantity"
    )
    assert "component-code-value-quantity" in params


def test_0014_backfills_composite_rows_of_resources_stored_before(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'old.db'}", security_disabled=True))
    repo = app.extensions["coordination"].repo
    upgrade(repo.engine, "0013")
    body = observation("old", SYSTOLIC, valueQuantity=_qty(150), component=[_component(DIASTOLIC, 95)])
    with repo.engine.begin() as conn:  # as written before 0014: the resource, no composite rows
        conn.execute(
            insert(resource).values(
                res_type="Observation",
                res_id="old",
                version=1,
                last_updated=1,
                deleted=False,
                content=json.dumps(body),
            )
        )
    upgrade(repo.engine)
    with repo.engine.connect() as conn:
        rows = conn.execute(
            select(idx_token.c.param, idx_token.c.code, idx_token.c.elem).where(
                idx_token.c.param.in_(["code-value-quantity$0", "component-code-value-quantity$0"])
            )
        ).all()
    assert sorted(tuple(r) for r in rows) == [
        ("code-value-quantity$0", SYSTOLIC, 0),
        ("component-code-value-quantity$0", DIASTOLIC, 0),
    ]
    fhir = Fhir(app.test_client())
    assert fhir.ids(f"Observation?code-value-quantity={SYSTOLIC}$gt100") == {"old"}
    assert fhir.ids(f"Observation?component-code-value-quantity={DIASTOLIC}$95") == {"old"}
    repo.engine.dispose()
