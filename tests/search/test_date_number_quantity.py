"""date, number, quantity and uri search parameters (R4 search.html#date, #number, #quantity, #uri)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import Fhir
from tests.support.search import assert_400, encounter, observation, patient, put

UCUM = "http://unitsofmeasure.org"


# -- date: precision ------------------------------------------------------------------------------


@pytest.fixture
def born(fhir: Fhir) -> Fhir:
    put(fhir, patient("p1950", birthDate="1950-02-03"))
    put(fhir, patient("p1950y", birthDate="1950"))
    put(fhir, patient("p1951", birthDate="1951-01-01"))
    put(fhir, patient("p1949", birthDate="1949-12-31"))
    put(fhir, patient("nobirth"))
    return fhir


def test_date_year_matches_day_inside_year(born: Fhir) -> None:
    assert born.ids("Patient?birthdate=1950") == {"p1950", "p1950y"}


def test_date_month_matches_day_inside_month(born: Fhir) -> None:
    assert born.ids("Patient?birthdate=1950-02") == {"p1950"}


def test_date_day_does_not_match_a_coarser_stored_value(born: Fhir) -> None:
    # The year 1950 is not fully contained in 1950-02-03 (eq = search range contains target range).
    assert born.ids("Patient?birthdate=1950-02-03") == {"p1950"}


def test_date_ne_is_the_complement_of_eq(born: Fhir) -> None:
    assert born.ids("Patient?birthdate=ne1950") == {"p1951", "p1949"}
    assert born.ids("Patient?birthdate=ne1950-02-03") == {"p1950y", "p1951", "p1949"}


def test_date_lt_gt(born: Fhir) -> None:
    assert born.ids("Patient?birthdate=lt1950") == {"p1949"}
    assert born.ids("Patient?birthdate=gt1950") == {"p1951"}
    assert born.ids("Patient?birthdate=gt1950-06") == {"p1951", "p1950y"}
    assert born.ids("Patient?birthdate=lt1950-06") == {"p1950", "p1950y", "p1949"}


def test_date_ge_le_include_equal(born: Fhir) -> None:
    assert born.ids("Patient?birthdate=ge1950") == {"p1950", "p1950y", "p1951"}
    assert born.ids("Patient?birthdate=le1950") == {"p1950", "p1950y", "p1949"}
    assert born.ids("Patient?birthdate=ge1950-02-03") == {"p1950", "p1950y", "p1951"}
    assert born.ids("Patient?birthdate=le1950-02-03") == {"p1950", "p1950y", "p1949"}


def test_date_sa_eb_exclude_overlap(born: Fhir) -> None:
    assert born.ids("Patient?birthdate=sa1950-01") == {"p1950", "p1951"}
    assert born.ids("Patient?birthdate=sa1950") == {"p1951"}
    assert born.ids("Patient?birthdate=eb1950-12") == {"p1949", "p1950"}
    assert born.ids("Patient?birthdate=eb1950") == {"p1949"}
    assert born.ids("Patient?birthdate=sa1949-12-31") == {"p1950", "p1950y", "p1951"}


def test_date_ap_matches_values_near_the_given_one(born: Fhir) -> None:
    # 10 % of the ~75 years from 1950 to now is ~7.5 years.
    assert born.ids("Patient?birthdate=ap1951-06") == {"p1950", "p1950y", "p1951", "p1949"}
    assert born.ids("Patient?birthdate=ap1975") == set()


def test_date_range_by_two_parameters(born: Fhir) -> None:
    assert born.ids("Patient?birthdate=ge1950-01-01&birthdate=le1950-12-31") == {"p1950", "p1950y"}


def test_date_comma_values_are_or(born: Fhir) -> None:
    assert born.ids("Patient?birthdate=1949,1951") == {"p1949", "p1951"}


def test_date_missing(born: Fhir) -> None:
    assert born.ids("Patient?birthdate:missing=true") == {"nobirth"}
    assert "nobirth" not in born.ids("Patient?birthdate:missing=false")


# -- date: dateTime with time zones ----------------------------------------------------------------


@pytest.fixture
def timed(fhir: Fhir) -> Fhir:
    # 23:30 in Paris (winter, +01:00) is 22:30 UTC the same day; 23:30 in New York is the next day UTC.
    put(fhir, observation("paris", effectiveDateTime="2026-01-15T23:30:00+01:00"))
    put(fhir, observation("newyork", effectiveDateTime="2026-01-15T23:30:00-05:00"))
    put(fhir, observation("utc", effectiveDateTime="2026-01-15T12:00:00Z"))
    put(fhir, observation("instant", effectiveInstant="2026-01-15T12:00:00.250Z"))
    return fhir


def test_datetime_day_search_compares_instants_in_utc(timed: Fhir) -> None:
    assert timed.ids("Observation?date=2026-01-15") == {"paris", "utc", "instant"}
    assert timed.ids("Observation?date=2026-01-16") == {"newyork"}


def test_datetime_search_with_time_zone(timed: Fhir) -> None:
    assert timed.ids("Observation?date=2026-01-16T04:30:00Z") == {"newyork"}
    assert timed.ids("Observation?date=2026-01-15T23:30:00-05:00") == {"newyork"}
    assert timed.ids("Observation?date=gt2026-01-15T23:00:00%2B01:00") == {"paris", "newyork"}


def test_datetime_seconds_precision_contains_fractional_instant(timed: Fhir) -> None:
    assert timed.ids("Observation?date=2026-01-15T12:00:00Z") == {"utc", "instant"}
    assert timed.ids("Observation?date=2026-01-15T12:00:00.250Z") == {"instant"}
    assert timed.ids("Observation?date=2026-01-15T12:00:00.2Z") == {"instant"}
    assert timed.ids("Observation?date=2026-01-15T12:00:00.3Z") == set()


def test_datetime_minute_precision_search(timed: Fhir) -> None:
    assert timed.ids("Observation?date=2026-01-15T12:00Z") == {"utc", "instant"}


def test_datetime_prefixes_against_instant(timed: Fhir) -> None:
    assert timed.ids("Observation?date=sa2026-01-15T12:00:00Z") == {"paris", "newyork"}
    assert timed.ids("Observation?date=eb2026-01-15T12:00:00Z") == set()
    assert timed.ids("Observation?date=lt2026-01-15T12:00:00.100Z") == {"utc"}
    assert timed.ids("Observation?date=le2026-01-15T12:00:00Z") == {"utc", "instant"}


# -- date: Periods --------------------------------------------------------------------------------


@pytest.fixture
def stays(fhir: Fhir) -> Fhir:
    put(fhir, encounter("jan", period={"start": "2026-01-05T08:00:00Z", "end": "2026-01-10T18:00:00Z"}))
    put(fhir, encounter("overlap", period={"start": "2025-12-28", "end": "2026-01-03"}))
    put(fhir, encounter("ongoing", period={"start": "2026-01-20"}))
    put(fhir, encounter("unknownstart", period={"end": "2025-11-30"}))
    put(fhir, encounter("feb", period={"start": "2026-02-02", "end": "2026-02-03"}))
    put(fhir, encounter("noperiod"))
    return fhir


def test_period_inside_month_matches_month(stays: Fhir) -> None:
    assert stays.ids("Encounter?date=2026-01") == {"jan"}


def test_period_eq_needs_full_containment(stays: Fhir) -> None:
    assert stays.ids("Encounter?date=2026-01-05") == set()
    assert stays.ids("Encounter?date=2026") == {"jan", "feb"}


def test_open_ended_period_extends_forever(stays: Fhir) -> None:
    assert stays.ids("Encounter?date=gt2030") == {"ongoing"}
    assert stays.ids("Encounter?date=lt2000") == {"unknownstart"}
    assert stays.ids("Encounter?date=sa2026-01-15") == {"ongoing", "feb"}
    assert stays.ids("Encounter?date=eb2026-01-01") == {"unknownstart"}


def test_period_gt_lt_mean_overlap_above_or_below(stays: Fhir) -> None:
    assert stays.ids("Encounter?date=gt2026-01-07") == {"jan", "ongoing", "feb"}
    assert stays.ids("Encounter?date=lt2026-01-01") == {"overlap", "unknownstart"}


def test_period_ge_le_are_gt_or_eq_and_lt_or_eq(stays: Fhir) -> None:
    # ge: the range above the search value overlaps the target, or the search range contains it.
    assert stays.ids("Encounter?date=ge2026-01") == {"jan", "ongoing", "feb"}
    assert stays.ids("Encounter?date=le2026-01") == {"jan", "overlap", "unknownstart"}
    # "overlap" (2025-12-28..2026-01-03) neither extends above 2026-01-03 nor lies inside that day.
    assert stays.ids("Encounter?date=ge2026-01-03") == {"jan", "ongoing", "feb"}
    assert stays.ids("Encounter?date=le2025-12-28") == {"unknownstart"}


def test_period_ne(stays: Fhir) -> None:
    assert stays.ids("Encounter?date=ne2026-01") == {"overlap", "ongoing", "unknownstart", "feb"}


def test_period_ap(stays: Fhir) -> None:
    assert "jan" in stays.ids("Encounter?date=ap2026-01-07")
    assert "noperiod" not in stays.ids("Encounter?date=ap2026-01-07")


def test_period_missing(stays: Fhir) -> None:
    assert stays.ids("Encounter?date:missing=true") == {"noperiod"}


# -- _lastUpdated ---------------------------------------------------------------------------------


def _instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def test_last_updated_prefixes(fhir: Fhir) -> None:
    first = put(fhir, patient("first"))
    time.sleep(0.01)
    second = put(fhir, patient("second"))
    at_first = first["meta"]["lastUpdated"]
    at_second = second["meta"]["lastUpdated"]
    assert fhir.ids(f"Patient?_lastUpdated={at_first}") == {"first"}
    assert fhir.ids(f"Patient?_lastUpdated=gt{at_first}") == {"second"}
    assert fhir.ids(f"Patient?_lastUpdated=ge{at_first}") == {"first", "second"}
    assert fhir.ids(f"Patient?_lastUpdated=lt{at_second}") == {"first"}
    assert fhir.ids(f"Patient?_lastUpdated=le{at_second}") == {"first", "second"}
    assert fhir.ids(f"Patient?_lastUpdated=ne{at_first}") == {"second"}


def test_last_updated_day_precision(fhir: Fhir) -> None:
    created = put(fhir, patient("today"))
    stamp = datetime.fromisoformat(created["meta"]["lastUpdated"].replace("Z", "+00:00"))
    yesterday = stamp - timedelta(days=1)
    assert stamp.tzinfo == UTC
    assert fhir.ids(f"Patient?_lastUpdated={stamp:%Y-%m-%d}") == {"today"}
    assert fhir.ids(f"Patient?_lastUpdated={stamp:%Y-%m}") == {"today"}
    assert fhir.ids(f"Patient?_lastUpdated=gt{yesterday:%Y-%m-%d}") == {"today"}
    assert fhir.ids(f"Patient?_lastUpdated=lt{_instant(yesterday)}") == set()
    assert fhir.ids(f"Patient?_lastUpdated=sa{_instant(yesterday)}") == {"today"}
    assert fhir.ids(f"Patient?_lastUpdated=ap{stamp:%Y-%m-%d}") == {"today"}


def test_last_updated_follows_updates(fhir: Fhir) -> None:
    created = put(fhir, patient("p"))
    time.sleep(0.01)
    put(fhir, {**created, "gender": "male"})
    assert fhir.ids(f"Patient?_lastUpdated=gt{created['meta']['lastUpdated']}") == {"p"}


@pytest.mark.parametrize(
    "value",
    ["2020-13-45", "2020-02-30", "20200101", "2020-1-1", "yesterday", "gt", "2020-01-01T25:00:00Z", "ab2020"],
)
def test_invalid_date_is_400(fhir: Fhir, value: str) -> None:
    assert_400(fhir, f"Patient?birthdate={value}")
    assert_400(fhir, f"Patient?_lastUpdated={value}")


def test_date_modifier_is_400(fhir: Fhir) -> None:
    assert_400(fhir, "Patient?birthdate:exact=1950")


# -- number ---------------------------------------------------------------------------------------


# RiskAssessment.probability is the R4 number parameter (RiskAssessment-probability).


@pytest.fixture
def risks(fhir: Fhir) -> Fhir:
    for rid, probability in {"r80": 0.8, "r85": 0.85, "r79": 0.79, "r100": 100, "rhalf": 99.5}.items():
        put(
            fhir,
            {
                "resourceType": "RiskAssessment",
                "id": rid,
                "status": "final",
                "subject": {"reference": "Patient/x"},
                "prediction": [{"probabilityDecimal": probability}],
            },
        )
    put(
        fhir,
        {
            "resourceType": "RiskAssessment",
            "id": "none",
            "status": "final",
            "subject": {"reference": "Patient/x"},
        },
    )
    return fhir


def test_number_eq_uses_implicit_precision(risks: Fhir) -> None:
    assert risks.ids("RiskAssessment?probability=0.8") == {"r80", "r79"}
    assert risks.ids("RiskAssessment?probability=0.80") == {"r80"}
    assert risks.ids("RiskAssessment?probability=100") == {"r100", "rhalf"}
    assert risks.ids("RiskAssessment?probability=100.0") == {"r100"}


def test_number_exponent_precision(risks: Fhir) -> None:
    assert risks.ids("RiskAssessment?probability=1e2") >= {"r100", "rhalf"}
    assert risks.ids("RiskAssessment?probability=8.5e-1") == {"r85"}


def test_number_comparisons_are_exact(risks: Fhir) -> None:
    assert risks.ids("RiskAssessment?probability=gt0.8") == {"r85", "r100", "rhalf"}
    assert risks.ids("RiskAssessment?probability=ge0.8") == {"r80", "r85", "r100", "rhalf"}
    assert risks.ids("RiskAssessment?probability=lt0.8") == {"r79"}
    assert risks.ids("RiskAssessment?probability=le0.8") == {"r80", "r79"}
    assert risks.ids("RiskAssessment?probability=gt99.9") == {"r100"}


def test_number_ne(risks: Fhir) -> None:
    assert risks.ids("RiskAssessment?probability=ne0.8") == {"r85", "r100", "rhalf"}


def test_number_missing(risks: Fhir) -> None:
    assert risks.ids("RiskAssessment?probability:missing=true") == {"none"}


def test_number_modifier_is_400(risks: Fhir) -> None:
    assert_400(risks, "RiskAssessment?probability:exact=0.8")


def test_number_ap_is_ten_percent(risks: Fhir) -> None:
    assert risks.ids("RiskAssessment?probability=ap0.8") == {"r80", "r85", "r79"}
    assert risks.ids("RiskAssessment?probability=ap92") == {"r100", "rhalf"}


@pytest.mark.parametrize("value", ["abc", "1,2x", "gt", "1.2.3", "NaN", "Infinity", "0x10", "ap"])
def test_invalid_number_is_400(risks: Fhir, value: str) -> None:
    assert_400(risks, f"RiskAssessment?probability={value}")


# -- quantity -------------------------------------------------------------------------------------


@pytest.fixture
def weights(fhir: Fhir) -> Fhir:
    def weight(oid: str, value: float, code: str = "kg", unit: str = "kg", system: str | None = UCUM) -> None:
        quantity: dict[str, object] = {"value": value, "unit": unit}
        if system:  # qty-3: a code only with its system
            quantity.update(system=system, code=code)
        put(fhir, observation(oid, code="29463-7", valueQuantity=quantity))

    weight("w100", 100)
    weight("w99-7", 99.7)
    weight("w101", 101)
    weight("w60", 60)
    weight("lb", 100, code="[lb_av]", unit="lbs")
    weight("local", 100, unit="kg", system=None)  # a unit only
    return fhir


def test_quantity_number_only_matches_any_unit(weights: Fhir) -> None:
    assert weights.ids("Observation?value-quantity=100") == {"w100", "w99-7", "lb", "local"}


def test_quantity_implicit_precision_range(weights: Fhir) -> None:
    assert weights.ids(f"Observation?value-quantity=100|{UCUM}|kg") == {"w100", "w99-7"}
    assert weights.ids(f"Observation?value-quantity=100.0|{UCUM}|kg") == {"w100"}


def test_quantity_system_and_code(weights: Fhir) -> None:
    assert weights.ids(f"Observation?value-quantity=100|{UCUM}|[lb_av]") == {"lb"}
    assert weights.ids("Observation?value-quantity=100|urn:other|kg") == set()


def test_quantity_code_without_system_matches_code_or_unit(weights: Fhir) -> None:
    assert weights.ids("Observation?value-quantity=100||kg") == {"w100", "w99-7", "local"}
    assert weights.ids("Observation?value-quantity=100||lbs") == {"lb"}


def test_quantity_prefixes(weights: Fhir) -> None:
    assert weights.ids(f"Observation?value-quantity=gt100|{UCUM}|kg") == {"w101"}
    assert weights.ids(f"Observation?value-quantity=ge100|{UCUM}|kg") == {"w100", "w101"}
    assert weights.ids(f"Observation?value-quantity=lt100|{UCUM}|kg") == {"w99-7", "w60"}
    assert weights.ids(f"Observation?value-quantity=le99.7|{UCUM}|kg") == {"w99-7", "w60"}
    assert weights.ids(f"Observation?value-quantity=ne100|{UCUM}|kg") == {"w101", "w60"}
    assert weights.ids(f"Observation?value-quantity=ap95|{UCUM}|kg") == {"w100", "w99-7", "w101"}


def test_quantity_comma_values_are_or(weights: Fhir) -> None:
    assert weights.ids(f"Observation?value-quantity=60|{UCUM}|kg,101|{UCUM}|kg") == {"w60", "w101"}


def test_quantity_range_of_a_duration(fhir: Fhir) -> None:
    put(fhir, {**_encounter_with_length("long", 10), "status": "finished"})
    put(fhir, {**_encounter_with_length("short", 2), "status": "finished"})
    assert fhir.ids(f"Encounter?length=gt5|{UCUM}|d") == {"long"}


def _encounter_with_length(eid: str, days: int) -> dict[str, object]:
    return encounter(eid, length={"value": days, "unit": "days", "system": UCUM, "code": "d"})


@pytest.mark.parametrize(
    "value",
    ["abc", "abc|http://unitsofmeasure.org|kg", "5|a|b|c", "gtkg", "|http://unitsofmeasure.org|kg", ""],
)
def test_invalid_quantity_is_400(weights: Fhir, value: str) -> None:
    assert_400(weights, f"Observation?value-quantity={value}")


# -- uri ------------------------------------------------------------------------------------------


@pytest.fixture
def questionnaires(fhir: Fhir) -> Fhir:
    for vid, url in {
        "root": "http://acme.org/fhir",
        "vs": "http://acme.org/fhir/ValueSet/123",
        "vs2": "http://acme.org/fhir/ValueSet/1234",
        "other": "http://other.org/fhir/ValueSet/123",
        "oid": "urn:oid:1.2.3.4.5",
    }.items():
        put(fhir, {"resourceType": "Questionnaire", "id": vid, "status": "active", "url": url})
    return fhir


def test_uri_exact_match(questionnaires: Fhir) -> None:
    assert questionnaires.ids("Questionnaire?url=http://acme.org/fhir/ValueSet/123") == {"vs"}
    assert questionnaires.ids("Questionnaire?url=urn:oid:1.2.3.4.5") == {"oid"}
    assert questionnaires.ids("Questionnaire?url=http://acme.org/fhir/ValueSet/12") == set()
    assert questionnaires.ids("Questionnaire?url=HTTP://ACME.ORG/fhir/ValueSet/123") == set()


def test_uri_below_matches_descendants(questionnaires: Fhir) -> None:
    assert questionnaires.ids("Questionnaire?url:below=http://acme.org/fhir/") == {"vs", "vs2"}
    assert questionnaires.ids("Questionnaire?url:below=http://acme.org/fhir") == {"root", "vs", "vs2"}


def test_uri_above_matches_ancestors(questionnaires: Fhir) -> None:
    assert questionnaires.ids("Questionnaire?url:above=http://acme.org/fhir/ValueSet/123/_history/5") == {
        "root",
        "vs",
    }
    assert questionnaires.ids("Questionnaire?url:above=http://acme.org/fhir/ValueSet/123") == {"root", "vs"}
    assert questionnaires.ids("Questionnaire?url:above=http://acme.org/fhir/ValueSet/12") == {"root"}


def test_uri_on_plan_definition_and_subscription(fhir: Fhir) -> None:
    put(
        fhir,
        {
            "resourceType": "PlanDefinition",
            "id": "fr-patient",
            "url": "http://interopsante.org/fhir/PlanDefinition/RetourDomicile",
            "name": "RetourDomicile",
            "status": "active",
        },
    )
    put(
        fhir,
        {
            "resourceType": "Subscription",
            "id": "sub",
            "status": "off",  # an active one would need a reachable public endpoint (SSRF guard)
            "reason": "sortie",
            "criteria": "Encounter?status=finished",
            "channel": {"type": "rest-hook", "endpoint": "https://cpts.example.org/hook/1"},
        },
    )
    assert fhir.ids("PlanDefinition?url:below=http://interopsante.org/fhir") == {"fr-patient"}
    assert fhir.ids("Subscription?url=https://cpts.example.org/hook/1") == {"sub"}
    assert fhir.ids("Subscription?url:below=https://cpts.example.org/hook") == {"sub"}
    assert fhir.ids("Subscription?url:below=https://other.example.org") == set()


def test_uri_longer_than_the_index_column_is_found(fhir: Fhir) -> None:
    url = "http://acme.org/fhir/ValueSet/" + "v" * 600
    put(fhir, {"resourceType": "Questionnaire", "id": "long", "status": "active", "url": url})
    assert fhir.ids(f"Questionnaire?url={url}") == {"long"}
    assert fhir.ids("Questionnaire?url:below=http://acme.org/fhir/ValueSet/vvv") == {"long"}
    assert fhir.ids(f"Questionnaire?url:above={url}") == {"long"}


def test_uri_missing(questionnaires: Fhir) -> None:
    put(questionnaires, {"resourceType": "Questionnaire", "id": "nourl", "status": "draft"})
    assert questionnaires.ids("Questionnaire?url:missing=true") == {"nourl"}


def test_uri_unknown_modifier_is_400(questionnaires: Fhir) -> None:
    assert_400(questionnaires, "Questionnaire?url:contains=acme")
