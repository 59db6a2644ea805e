"""reference parameters, chaining and _has (R4 search.html#reference, #chaining, #has)."""

from __future__ import annotations

import pytest

from tests.conftest import Fhir
from tests.support.search import assert_400, encounter, observation, patient, put

INS = "https://hopital.example.org/fhir/sid/ipp"


@pytest.fixture
def world(fhir: Fhir) -> Fhir:
    """Two organizations, three patients, encounters and observations that point at them."""
    put(fhir, {"resourceType": "Organization", "id": "chu", "name": "CHU de Lyon"})
    put(fhir, {"resourceType": "Organization", "id": "clinique", "name": "Clinique du Parc"})
    put(
        fhir,
        patient(
            "p1",
            "Dupont",
            "Jean",
            identifier=[{"system": INS, "value": "111"}],
            managingOrganization={"reference": "Organization/chu"},
        ),
    )
    put(
        fhir,
        patient(
            "p2",
            "Martin",
            "Hélène",
            identifier=[{"system": INS, "value": "222"}],
            managingOrganization={"reference": "Organization/clinique"},
        ),
    )
    put(fhir, patient("p3", "Durand", "Paul"))
    put(
        fhir,
        {
            "resourceType": "Group",
            "id": "p1",
            "type": "person",
            "actual": True,
            "identifier": [{"system": "urn:groups", "value": "111"}],
        },
    )
    put(fhir, encounter("e1", "Patient/p1", serviceProvider={"reference": "Organization/chu"}))
    put(fhir, encounter("e2", "Patient/p2", status="in-progress"))
    put(fhir, encounter("e3", "Group/p1"))
    put(fhir, encounter("e4"))
    put(fhir, observation("o1", "8867-4", "Patient/p1", encounter={"reference": "Encounter/e1"}))
    put(fhir, observation("o2", "8480-6", "Patient/p2", encounter={"reference": "Encounter/e2"}))
    put(fhir, observation("o3", "8867-4", "Group/p1"))
    return fhir


# -- reference ------------------------------------------------------------------------------------


def test_reference_type_and_id(world: Fhir) -> None:
    assert world.ids("Encounter?subject=Patient/p1") == {"e1"}
    assert world.ids("Encounter?subject=Group/p1") == {"e3"}


def test_reference_plain_id_matches_every_target_type(world: Fhir) -> None:
    assert world.ids("Encounter?subject=p1") == {"e1", "e3"}


def test_reference_absolute_url_of_own_base(world: Fhir) -> None:
    assert world.ids("Encounter?subject=http://localhost/fhir/Patient/p1") == {"e1"}


def test_reference_stored_absolute_url_of_another_server(fhir: Fhir) -> None:
    put(fhir, encounter("far", "http://other.example.org/fhir/Patient/9"))
    put(fhir, encounter("near", "Patient/9"))
    assert fhir.ids("Encounter?subject=http://other.example.org/fhir/Patient/9") == {"far"}
    assert fhir.ids("Encounter?subject=Patient/9") == {"near"}


def test_reference_type_modifier(world: Fhir) -> None:
    assert world.ids("Encounter?subject:Patient=p1") == {"e1"}
    assert world.ids("Encounter?subject:Group=p1") == {"e3"}
    assert world.ids("Encounter?subject:Group=Patient/p1") == set()


def test_reference_type_modifier_must_be_a_target(world: Fhir) -> None:
    assert_400(world, "Encounter?subject:Practitioner=p1")


def test_reference_unknown_modifier_is_400(world: Fhir) -> None:
    assert_400(world, "Encounter?subject:exact=Patient/p1")
    assert_400(world, "Encounter?subject:below=Patient/p1")


def test_reference_parameter_restricted_by_resolve_is(world: Fhir) -> None:
    assert world.ids("Observation?patient=p1") == {"o1"}
    assert world.ids("Observation?patient=Patient/p1") == {"o1"}
    assert world.ids("Observation?subject=p1") == {"o1", "o3"}


def test_reference_comma_values_are_or(world: Fhir) -> None:
    assert world.ids("Encounter?subject=Patient/p1,Patient/p2") == {"e1", "e2"}


def test_reference_version_specific(fhir: Fhir) -> None:
    put(fhir, encounter("versioned", "Patient/p1/_history/2"))
    assert fhir.ids("Encounter?subject=Patient/p1") == {"versioned"}
    assert fhir.ids("Encounter?subject=Patient/p1/_history/2") == {"versioned"}


def test_reference_identifier_modifier(fhir: Fhir) -> None:
    put(fhir, encounter("logical", subject={"identifier": {"system": INS, "value": "111"}}))
    put(fhir, encounter("other", subject={"identifier": {"system": "urn:ipp", "value": "111"}}))
    assert fhir.ids(f"Encounter?subject:identifier={INS}|111") == {"logical"}
    assert fhir.ids("Encounter?subject:identifier=111") == {"logical", "other"}
    assert fhir.ids(f"Encounter?subject:identifier={INS}|222") == set()


def test_reference_missing_on_several_types(world: Fhir) -> None:
    assert world.ids("Encounter?subject:missing=true") == {"e4"}
    assert world.ids("Encounter?subject:missing=false") == {"e1", "e2", "e3"}
    assert world.ids("Observation?encounter:missing=true") == {"o3"}
    assert world.ids("Patient?organization:missing=true") == {"p3"}
    assert world.ids("Patient?organization:missing=false") == {"p1", "p2"}


def test_reference_contained_is_not_a_stored_target(fhir: Fhir) -> None:
    put(
        fhir,
        encounter(
            "contained",
            "#pat",
            contained=[{"resourceType": "Patient", "id": "pat"}],
        ),
    )
    assert fhir.ids("Encounter?subject=pat") == set()
    assert fhir.ids("Encounter?subject:missing=true") == {"contained"}


@pytest.mark.parametrize("value", ["Patient/", "/p1", "a/b/c", ""])
def test_reference_malformed_is_400(world: Fhir, value: str) -> None:
    assert_400(world, f"Encounter?subject={value}")


# -- chaining -------------------------------------------------------------------------------------


def test_chain_on_identifier(world: Fhir) -> None:
    assert world.ids(f"Encounter?patient.identifier={INS}|111") == {"e1"}
    assert world.ids("Encounter?patient.identifier=222") == {"e2"}


def test_chain_with_type_modifier(world: Fhir) -> None:
    assert world.ids("Encounter?subject:Patient.name=dupont") == {"e1"}
    assert world.ids("Encounter?subject:Group.type=person") == {"e3"}
    assert world.ids("Encounter?subject:Group.identifier=111") == {"e3"}


def test_chain_without_type_tries_every_target_type(world: Fhir) -> None:
    assert world.ids("Encounter?subject.identifier=111") == {"e1", "e3"}
    assert world.ids("Encounter?subject.name=dupont") == {"e1"}


def test_chain_ends_with_a_modifier(world: Fhir) -> None:
    assert world.ids("Encounter?subject:Patient.name:exact=Dupont") == {"e1"}
    assert world.ids("Encounter?subject:Patient.name:exact=dupont") == set()
    assert world.ids("Encounter?subject:Patient.gender:missing=true") == {"e1", "e2"}


def test_chain_to_id_and_last_updated(world: Fhir) -> None:
    assert world.ids("Encounter?subject:Patient._id=p1") == {"e1"}
    assert world.ids("Encounter?subject._id=p1") == {"e1", "e3"}
    assert world.ids("Encounter?subject:Patient._lastUpdated=gt2000") == {"e1", "e2"}


def test_chain_comma_values_are_or(world: Fhir) -> None:
    assert world.ids("Encounter?subject:Patient.family=dupont,martin") == {"e1", "e2"}


def test_chain_two_levels(world: Fhir) -> None:
    assert world.ids("Observation?encounter.patient.name=dupont") == {"o1"}
    assert world.ids("Encounter?subject:Patient.organization.name=clinique") == {"e2"}


def test_chain_ending_in_a_reference(world: Fhir) -> None:
    assert world.ids("Observation?encounter.subject=Patient/p2") == {"o2"}
    assert world.ids("Observation?encounter.patient=p1") == {"o1"}
    assert world.ids("Observation?encounter.service-provider=Organization/chu") == {"o1"}


def test_chain_three_levels(world: Fhir) -> None:
    assert world.ids("Observation?encounter.patient.organization.name=chu") == {"o1"}


def test_chain_and_other_criteria_combine(world: Fhir) -> None:
    assert world.ids("Observation?patient.name=dupont&code=8480-6") == set()
    assert world.ids("Observation?patient.name=dupont&code=8867-4") == {"o1"}


def test_chain_ignores_deleted_targets(world: Fhir) -> None:
    assert world.request("DELETE", "/fhir/Patient/p1").status_code in (200, 204)
    assert world.ids("Encounter?subject:Patient.name=dupont") == set()


def test_chain_on_non_reference_is_400(world: Fhir) -> None:
    assert_400(world, "Encounter?status.name=x")


def test_chain_to_parameter_no_target_has_is_400(world: Fhir) -> None:
    assert_400(world, "Encounter?subject:Patient.code=x")


def test_chain_with_bad_value_is_400(world: Fhir) -> None:
    assert_400(world, "Encounter?subject:Patient.birthdate=1950-13")


# -- _has -----------------------------------------------------------------------------------------


def test_has_finds_resources_referenced_by_matching_ones(world: Fhir) -> None:
    assert world.ids("Patient?_has:Observation:patient:code=8867-4") == {"p1"}
    assert world.ids("Patient?_has:Observation:patient:code=8480-6") == {"p2"}
    assert world.ids("Patient?_has:Observation:patient:code=0000-0") == set()


def test_has_respects_the_reference_target_type(world: Fhir) -> None:
    assert world.ids("Group?_has:Observation:subject:code=8867-4") == {"p1"}
    assert world.ids("Patient?_has:Observation:subject:code=8867-4") == {"p1"}


def test_has_comma_values_are_or(world: Fhir) -> None:
    assert world.ids("Patient?_has:Observation:patient:code=8867-4,8480-6") == {"p1", "p2"}


def test_has_combines_with_other_criteria(world: Fhir) -> None:
    assert world.ids("Patient?_has:Observation:patient:code=8867-4,8480-6&family=martin") == {"p2"}
    assert world.ids(
        "Patient?_has:Encounter:subject:status=finished&_has:Observation:patient:code=8867-4"
    ) == {"p1"}


def test_nested_has(world: Fhir) -> None:
    assert world.ids("Patient?_has:Encounter:subject:_has:Observation:encounter:code=8480-6") == {"p2"}
    assert world.ids("Organization?_has:Patient:organization:_has:Observation:patient:code=8867-4") == {"chu"}


def test_has_with_chained_criterion(world: Fhir) -> None:
    assert world.ids("Patient?_has:Observation:patient:encounter.status=in-progress") == {"p2"}


def test_has_ignores_deleted_sources(world: Fhir) -> None:
    assert world.request("DELETE", "/fhir/Observation/o1").status_code in (200, 204)
    assert world.ids("Patient?_has:Observation:patient:code=8867-4") == set()


@pytest.mark.parametrize(
    "query",
    [
        "Patient?_has:Observation:patient=8867-4",
        "Patient?_has:Nope:patient:code=1",
        "Patient?_has:Observation:code:code=1",
        "Patient?_has:Observation:patient:code=|",
        "Patient?_has::patient:code=1",
    ],
)
def test_has_malformed_is_400(world: Fhir, query: str) -> None:
    assert_400(world, query)


def test_reference_stored_as_absolute_url_of_own_base_matches_relative_search(fhir: Fhir) -> None:
    put(fhir, encounter("absolute", "http://localhost/fhir/Patient/p1"))
    assert fhir.ids("Encounter?subject=Patient/p1") == {"absolute"}
    assert fhir.ids("Encounter?subject=p1") == {"absolute"}
    assert fhir.ids("Encounter?subject:Patient=p1") == {"absolute"}
    assert fhir.ids("Encounter?subject=http://localhost/fhir/Patient/p1") == {"absolute"}
    assert fhir.ids("Encounter?subject=Patient/p2") == set()
