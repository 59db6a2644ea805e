"""string and token search parameters (R4 search.html#string, #token)."""

from __future__ import annotations

import pytest

from tests.conftest import Fhir
from tests.support.search import LOINC, assert_400, observation, patient, put

SNOMED = "http://snomed.info/sct"
INS = "https://hopital.example.org/fhir/sid/ipp"


@pytest.fixture
def people(fhir: Fhir) -> Fhir:
    put(
        fhir,
        patient(
            "dupont",
            "Dupont",
            "Jean",
            gender="male",
            active=True,
            address=[{"line": ["12 rue de la Paix"], "city": "Lyon", "postalCode": "69003", "country": "FR"}],
        ),
    )
    put(
        fhir,
        {
            "resourceType": "Patient",
            "id": "helene",
            "name": [{"family": "Martin", "given": ["Hélène", "Marie"], "prefix": ["Mme"]}],
            "gender": "female",
            "active": False,
            "address": [{"city": "Saint-Étienne", "postalCode": "42000"}],
        },
    )
    put(fhir, {"resourceType": "Patient", "id": "nameless"})
    return fhir


# -- string -------------------------------------------------------------------------------------


def test_string_default_is_starts_with(people: Fhir) -> None:
    assert people.ids("Patient?family=Dup") == {"dupont"}
    assert people.ids("Patient?family=pont") == set()


def test_string_default_is_case_insensitive(people: Fhir) -> None:
    assert people.ids("Patient?family=dupont") == {"dupont"}
    assert people.ids("Patient?family=DUPONT") == {"dupont"}


def test_string_default_is_accent_insensitive_both_ways(people: Fhir) -> None:
    assert people.ids("Patient?given=helene") == {"helene"}
    assert people.ids("Patient?given=Hélène") == {"helene"}
    assert people.ids("Patient?address-city=saint-etienne") == {"helene"}


def test_string_exact_is_case_and_accent_sensitive_whole_value(people: Fhir) -> None:
    assert people.ids("Patient?family:exact=Dupont") == {"dupont"}
    assert people.ids("Patient?family:exact=dupont") == set()
    assert people.ids("Patient?family:exact=Dup") == set()
    assert people.ids("Patient?given:exact=Hélène") == {"helene"}
    assert people.ids("Patient?given:exact=Helene") == set()


def test_string_contains_matches_anywhere_case_insensitively(people: Fhir) -> None:
    assert people.ids("Patient?family:contains=PON") == {"dupont"}
    assert people.ids("Patient?given:contains=len") == {"helene"}
    assert people.ids("Patient?family:contains=xyz") == set()


def test_string_like_wildcards_are_literal(people: Fhir) -> None:
    assert people.ids("Patient?family=D%25") == set()
    assert people.ids("Patient?family=D_pont") == set()
    assert people.ids("Patient?family:contains=%25") == set()


def test_name_matches_any_part_of_human_name(people: Fhir) -> None:
    assert people.ids("Patient?name=jean") == {"dupont"}
    assert people.ids("Patient?name=dupont") == {"dupont"}
    assert people.ids("Patient?name=mme") == {"helene"}
    assert people.ids("Patient?name=marie") == {"helene"}


def test_family_and_given_search_their_own_part_only(people: Fhir) -> None:
    assert people.ids("Patient?family=Jean") == set()
    assert people.ids("Patient?given=Dupont") == set()
    assert people.ids("Patient?given=Marie") == {"helene"}


def test_address_matches_line_city_postal_code_and_country(people: Fhir) -> None:
    assert people.ids("Patient?address=lyon") == {"dupont"}
    assert people.ids("Patient?address=12 rue") == {"dupont"}
    assert people.ids("Patient?address=690") == {"dupont"}
    assert people.ids("Patient?address=fr") == {"dupont"}
    assert people.ids("Patient?address-postalcode=42") == {"helene"}
    assert people.ids("Patient?address-city=Lyon") == {"dupont"}
    assert people.ids("Patient?address-city=69") == set()


def test_string_comma_values_are_or(people: Fhir) -> None:
    assert people.ids("Patient?family=dupont,martin") == {"dupont", "helene"}


def test_string_repeated_parameter_is_and(people: Fhir) -> None:
    assert people.ids("Patient?family=dupont&given=jean") == {"dupont"}
    assert people.ids("Patient?family=dupont&given=marie") == set()
    assert people.ids("Patient?family=dup&family=dupont") == {"dupont"}


def test_string_escaped_comma_is_part_of_the_value(fhir: Fhir) -> None:
    put(fhir, patient("jr", "Smith, Jr"))
    put(fhir, patient("smith", "Smith"))
    assert fhir.ids("Patient?family=smith\\,%20jr") == {"jr"}
    assert fhir.ids("Patient?family:exact=Smith\\,%20Jr") == {"jr"}


def test_string_slash_is_literal(fhir: Fhir) -> None:
    put(fhir, patient("slash", address=[{"line": ["12/14 rue Victor Hugo"]}]))
    put(fhir, patient("other", address=[{"line": ["12 rue Victor Hugo"]}]))
    assert fhir.ids("Patient?address=12/14") == {"slash"}
    assert fhir.ids("Patient?address:contains=2/1") == {"slash"}


def test_string_whitespace_is_normalized(fhir: Fhir) -> None:
    put(fhir, patient("jp", "Le  Goff", "Jean Paul"))
    assert fhir.ids("Patient?family=le%20goff") == {"jp"}
    assert fhir.ids("Patient?given=jean%20%20paul") == {"jp"}


def test_string_searches_all_union_members(fhir: Fhir) -> None:
    put(fhir, {"resourceType": "Organization", "id": "chu", "name": "CHU de Lyon", "alias": ["HCL"]})
    assert fhir.ids("Organization?name=chu") == {"chu"}
    assert fhir.ids("Organization?name=hcl") == {"chu"}


def test_string_missing(people: Fhir) -> None:
    assert people.ids("Patient?family:missing=true") == {"nameless"}
    assert people.ids("Patient?family:missing=false") == {"dupont", "helene"}


def test_string_unknown_modifier_is_400(people: Fhir) -> None:
    assert_400(people, "Patient?family:below=Dup")
    assert_400(people, "Patient?family:foo=Dup")


# -- token --------------------------------------------------------------------------------------


def test_token_code_alone_matches_any_system(people: Fhir) -> None:
    assert people.ids("Patient?gender=male") == {"dupont"}
    assert people.ids("Patient?gender=female") == {"helene"}


def test_token_comma_values_are_or(people: Fhir) -> None:
    assert people.ids("Patient?gender=male,female") == {"dupont", "helene"}
    assert people.ids("Patient?gender=male,other") == {"dupont"}


def test_token_not_excludes_value_and_matches_resources_without_element(people: Fhir) -> None:
    assert people.ids("Patient?gender:not=male") == {"helene", "nameless"}


def test_token_not_with_several_values_excludes_all_of_them(people: Fhir) -> None:
    assert people.ids("Patient?gender:not=male,female") == {"nameless"}


def test_boolean_token(people: Fhir) -> None:
    assert people.ids("Patient?active=true") == {"dupont"}
    assert people.ids("Patient?active=false") == {"helene"}
    assert people.ids("Patient?active:not=true") == {"helene", "nameless"}
    assert people.ids("Patient?active:missing=true") == {"nameless"}


def test_token_missing(people: Fhir) -> None:
    assert people.ids("Patient?gender:missing=true") == {"nameless"}
    assert people.ids("Patient?gender:missing=false") == {"dupont", "helene"}


@pytest.fixture
def coded(fhir: Fhir) -> Fhir:
    put(
        fhir,
        observation(
            "hr",
            code="8867-4",
            identifier=[{"system": "urn:lab", "value": "A1"}],
            category=[{"text": "Signes vitaux"}],
        ),
    )
    put(
        fhir,
        {
            "resourceType": "Observation",
            "id": "both",
            "status": "final",
            "code": {
                "coding": [
                    {"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"},
                    {"system": SNOMED, "code": "271649006", "display": "Systolic BP"},
                ],
                "text": "Pression artérielle systolique",
            },
            "identifier": [{"value": "A1"}, {"system": "urn:other", "value": "B2"}],
        },
    )
    put(
        fhir,
        {
            "resourceType": "Observation",
            "id": "local",
            "status": "final",
            "code": {"coding": [{"code": "8867-4"}]},
        },
    )
    return fhir


def test_token_system_and_code(coded: Fhir) -> None:
    assert coded.ids(f"Observation?code={LOINC}|8480-6") == {"both"}
    assert coded.ids(f"Observation?code={SNOMED}|271649006") == {"both"}
    assert coded.ids(f"Observation?code={SNOMED}|8480-6") == set()


def test_token_code_only_matches_every_system(coded: Fhir) -> None:
    assert coded.ids("Observation?code=8867-4") == {"hr", "local"}


def test_token_system_only_matches_any_code_of_that_system(coded: Fhir) -> None:
    assert coded.ids(f"Observation?code={SNOMED}|") == {"both"}
    assert coded.ids(f"Observation?code={LOINC}|") == {"hr", "both"}
    assert coded.ids("Observation?code=|8867-4") == {"local"}


def test_token_empty_system_matches_only_values_without_system(coded: Fhir) -> None:
    assert coded.ids("Observation?identifier=|A1") == {"both"}
    assert coded.ids("Observation?identifier=A1") == {"hr", "both"}
    assert coded.ids("Observation?identifier=urn:lab|A1") == {"hr"}
    assert coded.ids("Observation?identifier=urn:lab|B2") == set()


def test_token_repeated_parameter_is_and(coded: Fhir) -> None:
    assert coded.ids(f"Observation?code={LOINC}|8480-6&code={SNOMED}|271649006") == {"both"}
    assert coded.ids("Observation?code=8480-6&code=8867-4") == set()


def test_token_not_with_system_and_code(coded: Fhir) -> None:
    assert coded.ids(f"Observation?code:not={LOINC}|8480-6") == {"hr", "local"}


def test_token_text_matches_coding_display(coded: Fhir) -> None:
    assert coded.ids("Observation?code:text=systolic") == {"both"}
    assert coded.ids("Observation?code:text=SYSTOLIC%20BP") == {"both"}


def test_token_text_matches_codeable_concept_text_too(coded: Fhir) -> None:
    assert coded.ids("Observation?code:text=pression%20arterielle") == {"both"}


def test_token_text_matches_concept_with_text_only(coded: Fhir) -> None:
    assert coded.ids("Observation?category:text=signes") == {"hr"}


def test_token_text_does_not_match_codes(coded: Fhir) -> None:
    assert coded.ids("Observation?code:text=8480") == set()


def test_identifier_on_patient(fhir: Fhir) -> None:
    put(fhir, patient("p1", identifier=[{"system": INS, "value": "1850275123456"}]))
    put(fhir, patient("p2", identifier=[{"system": "urn:ipp", "value": "1850275123456"}]))
    assert fhir.ids(f"Patient?identifier={INS}|1850275123456") == {"p1"}
    assert fhir.ids("Patient?identifier=1850275123456") == {"p1", "p2"}
    assert fhir.ids("Patient?identifier=185027512345") == set()


def test_token_escaped_pipe_and_comma_are_part_of_the_code(fhir: Fhir) -> None:
    put(fhir, patient("pipe", identifier=[{"system": "urn:x", "value": "A|B"}]))
    put(fhir, patient("comma", identifier=[{"system": "urn:x", "value": "1,2"}]))
    put(fhir, patient("b", identifier=[{"system": "A", "value": "B"}]))
    assert fhir.ids("Patient?identifier=A\\|B") == {"pipe"}
    assert fhir.ids("Patient?identifier=urn:x|A\\|B") == {"pipe"}
    assert fhir.ids("Patient?identifier=A|B") == {"b"}
    assert fhir.ids("Patient?identifier=1\\,2") == {"comma"}
    assert fhir.ids("Patient?identifier=urn:x|1\\,2,A|B") == {"comma", "b"}


def test_token_longer_than_the_index_column_is_found(fhir: Fhir) -> None:
    long_value = "x" * 300
    put(fhir, patient("long", identifier=[{"system": "urn:" + "s" * 300, "value": long_value}]))
    assert fhir.ids(f"Patient?identifier={long_value}") == {"long"}
    assert fhir.ids(f"Patient?identifier=urn:{'s' * 300}|{long_value}") == {"long"}


def test_identifier_text_matches_identifier_type_text(fhir: Fhir) -> None:
    put(fhir, patient("p1", identifier=[{"type": {"text": "Numéro INS"}, "value": "42"}]))
    assert fhir.ids("Patient?identifier:text=numero") == {"p1"}


def test_contact_point_tokens(fhir: Fhir) -> None:
    put(
        fhir,
        patient(
            "p1",
            telecom=[
                {"system": "email", "value": "jean@example.org"},
                {"system": "phone", "value": "0601020304"},
            ],
        ),
    )
    assert fhir.ids("Patient?email=jean@example.org") == {"p1"}
    assert fhir.ids("Patient?phone=0601020304") == {"p1"}
    assert fhir.ids("Patient?email=0601020304") == set()
    assert fhir.ids("Patient?telecom=0601020304") == {"p1"}


def test_meta_tag_token(fhir: Fhir) -> None:
    put(fhir, patient("p1", meta={"tag": [{"system": "urn:cpts", "code": "parcours"}]}))
    put(fhir, patient("p2"))
    assert fhir.ids("Patient?_tag=urn:cpts|parcours") == {"p1"}
    assert fhir.ids("Patient?_tag:not=parcours") == {"p2"}


def test_id_parameter(people: Fhir) -> None:
    assert people.ids("Patient?_id=dupont") == {"dupont"}
    assert people.ids("Patient?_id=dupont,helene") == {"dupont", "helene"}
    assert people.ids("Patient?_id=unknown") == set()
    assert people.ids("Patient?_id:not=dupont") == {"helene", "nameless"}


def test_deceased_boolean_expression_token(fhir: Fhir) -> None:
    put(fhir, patient("alive", deceasedBoolean=False))
    put(fhir, patient("dead", deceasedDateTime="2020-01-01"))
    assert fhir.ids("Patient?deceased=true") == {"dead"}
    assert fhir.ids("Patient?deceased=false") == {"alive"}


@pytest.mark.parametrize("modifier", ["below", "above", "in", "not-in", "of-type", "exact", "nope"])
def test_token_unsupported_modifiers_are_400(people: Fhir, modifier: str) -> None:
    assert_400(people, f"Patient?gender:{modifier}=male")


def test_token_without_value_is_400(people: Fhir) -> None:
    assert_400(people, "Patient?gender=|")
