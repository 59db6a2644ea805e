"""Each rule kind of the profile validator on small hand-written StructureDefinitions (R4 profiling.html).

Every test builds its own ``Conformance([...])`` so that one rule is exercised at a time; a finding
is identified by (severity, FHIRPath expression) and, where useful, its OperationOutcome code.
"""

from __future__ import annotations

from typing import Any

import pytest

from fhir_profiles.conformance import Conformance
from fhir_profiles.issues import ValidationIssue
from fhir_profiles.validator import Validator, matches_pattern

BASE = "https://example.org/fhir/StructureDefinition/"
CS = "https://example.org/fhir/CodeSystem/colour"
VS = "https://example.org/fhir/ValueSet/colour"
PROFILE = BASE + "test-profile"


def structure(
    url: str,
    type_: str,
    *elements: dict[str, Any],
    base: str | None = None,
    kind: str = "resource",
    context: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "resourceType": "StructureDefinition",
        "url": url,
        "name": url.rsplit("/", 1)[-1],
        "status": "active",
        "kind": kind,
        "abstract": False,
        "type": type_,
        "baseDefinition": base or f"http://hl7.org/fhir/StructureDefinition/{type_}",
        "derivation": "constraint",
        "differential": {"element": list(elements)},
    }
    if context is not None:
        definition["context"] = context
    return definition


def profile(type_: str, *elements: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return structure(PROFILE, type_, *elements, **kwargs)


def extension(
    url: str, *elements: dict[str, Any], context: str | list[dict[str, str]] = "Element"
) -> dict[str, Any]:
    contexts = [{"type": "element", "expression": context}] if isinstance(context, str) else context
    return structure(
        url,
        "Extension",
        {"id": "Extension.url", "fixedUri": url},
        *elements,
        kind="complex-type",
        base="http://hl7.org/fhir/StructureDefinition/Extension",
        context=contexts,
    )


def code_system(url: str = CS, *codes: str) -> dict[str, Any]:
    return {
        "resourceType": "CodeSystem",
        "url": url,
        "status": "active",
        "content": "complete",
        "concept": [{"code": c} for c in codes or ("red", "green", "blue")],
    }


def value_set(url: str = VS, *includes: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "ValueSet",
        "url": url,
        "status": "active",
        "compose": {"include": list(includes) or [{"system": CS}]},
    }


def run(resource: dict[str, Any], *artefacts: dict[str, Any], profiles: list[str] | None = None) -> Any:
    validator = Validator(Conformance(list(artefacts)))
    return validator.validate(resource, [PROFILE] if profiles is None else profiles)


def found(issues: list[ValidationIssue], severity: str = "error") -> list[str]:
    """Expressions of the findings of one severity, in report order."""
    return [i.expression for i in issues if i.severity == severity]


def patient(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **elements}


# -- cardinality -----------------------------------------------------------------------------------


def test_missing_required_element_is_error_at_its_path() -> None:
    issues = run(patient(), profile("Patient", {"id": "Patient.birthDate", "min": 1}))
    assert found(issues) == ["Patient.birthDate"]
    assert issues[0].code == "required"


def test_present_required_element_passes() -> None:
    assert run(patient(birthDate="1980"), profile("Patient", {"id": "Patient.birthDate", "min": 1})) == []


def test_min_counts_the_items_of_a_list() -> None:
    definition = profile("Patient", {"id": "Patient.name.given", "min": 2})
    issues = run(patient(name=[{"given": ["A"]}]), definition)
    assert found(issues) == ["Patient.name[0].given"]
    assert run(patient(name=[{"given": ["A", "B"]}]), definition) == []


def test_more_items_than_max_is_error_at_the_list() -> None:
    issues = run(
        patient(name=[{"family": "A"}, {"family": "B"}]),
        profile("Patient", {"id": "Patient.name", "max": "1"}),
    )
    assert found(issues) == ["Patient.name"]
    assert issues[0].code == "structure"


def test_max_zero_forbids_the_element() -> None:
    definition = profile("Patient", {"id": "Patient.photo", "max": "0"})
    assert found(run(patient(photo=[{"url": "http://x"}]), definition)) == ["Patient.photo"]
    assert run(patient(), definition) == []


def test_max_zero_on_a_choice_forbids_every_type() -> None:
    definition = profile("Patient", {"id": "Patient.deceased[x]", "max": "0"})
    assert found(run(patient(deceasedBoolean=True), definition)) == ["Patient.deceased"]
    assert found(run(patient(deceasedDateTime="2020"), definition)) == ["Patient.deceased"]


def test_missing_required_choice_is_reported_with_fhirpath_name() -> None:
    definition = profile("Observation", {"id": "Observation.value[x]", "min": 1})
    issues = run({"resourceType": "Observation"}, definition)
    assert found(issues) == ["Observation.value"]


def test_nested_cardinality_is_checked_on_each_parent_item() -> None:
    definition = profile("Patient", {"id": "Patient.identifier.system", "min": 1})
    issues = run(patient(identifier=[{"system": "urn:a", "value": "1"}, {"value": "2"}]), definition)
    assert found(issues) == ["Patient.identifier[1].system"]


def test_nested_cardinality_is_not_checked_when_the_parent_is_absent() -> None:
    assert run(patient(), profile("Patient", {"id": "Patient.identifier.system", "min": 1})) == []


def test_primitive_given_only_by_its_extensions_is_present() -> None:
    # R4 json.html#primitive: "_birthDate" alone (e.g. data-absent-reason) is a present element.
    absent = {
        "extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}
        ]
    }
    definition = profile(
        "Patient", {"id": "Patient.birthDate", "min": 1}, {"id": "Patient.name.given", "min": 2}
    )
    resource = patient(_birthDate=absent, name=[{"given": ["A", None], "_given": [None, absent]}])
    assert run(resource, definition) == []


def test_backbone_element_cardinality() -> None:
    definition = profile("Patient", {"id": "Patient.contact.name", "min": 1})
    issues = run(patient(contact=[{"name": {"family": "A"}}, {"gender": "male"}]), definition)
    assert found(issues) == ["Patient.contact[1].name"]


# -- types -------------------------------------------------------------------------------------------


def test_choice_restricted_to_coding_refuses_another_type() -> None:
    definition = profile("Observation", {"id": "Observation.value[x]", "type": [{"code": "Coding"}]})
    issues = run({"resourceType": "Observation", "valueString": "red"}, definition)
    assert found(issues) == ["Observation.valueString"]
    assert "Coding" in issues[0].diagnostics or "coding" in issues[0].diagnostics


def test_choice_restricted_to_coding_accepts_coding() -> None:
    definition = profile("Observation", {"id": "Observation.value[x]", "type": [{"code": "Coding"}]})
    assert run({"resourceType": "Observation", "valueCoding": {"code": "red"}}, definition) == []


def test_choice_restriction_matches_primitive_type_codes() -> None:
    definition = profile("Observation", {"id": "Observation.value[x]", "type": [{"code": "dateTime"}]})
    assert run({"resourceType": "Observation", "valueDateTime": "2024"}, definition) == []
    assert found(run({"resourceType": "Observation", "valueTime": "10:00:00"}, definition)) == [
        "Observation.valueTime"
    ]


def test_data_type_profile_of_an_element_is_applied() -> None:
    address = structure(
        BASE + "address-with-city",
        "Address",
        {"id": "Address.city", "min": 1},
        kind="complex-type",
        base="http://hl7.org/fhir/StructureDefinition/Address",
    )
    definition = profile(
        "Patient", {"id": "Patient.address", "type": [{"code": "Address", "profile": [address["url"]]}]}
    )
    issues = run(patient(address=[{"city": "Lyon"}, {"country": "FR"}]), definition, address)
    assert found(issues) == ["Patient.address[1].city"]


def test_data_type_profile_applies_only_to_the_matching_choice_type() -> None:
    quantity = structure(
        BASE + "quantity-with-unit",
        "Quantity",
        {"id": "Quantity.unit", "min": 1},
        kind="complex-type",
        base="http://hl7.org/fhir/StructureDefinition/Quantity",
    )
    definition = profile(
        "Observation",
        {
            "id": "Observation.value[x]",
            "type": [{"code": "Quantity", "profile": [quantity["url"]]}, {"code": "string"}],
        },
    )
    assert found(
        run({"resourceType": "Observation", "valueQuantity": {"value": 1}}, definition, quantity)
    ) == ["Observation.valueQuantity.unit"]
    assert run({"resourceType": "Observation", "valueString": "x"}, definition, quantity) == []


def test_value_conforming_to_one_of_several_data_type_profiles_passes() -> None:
    with_city, with_country = (
        structure(
            BASE + f"address-with-{name}",
            "Address",
            {"id": f"Address.{name}", "min": 1},
            kind="complex-type",
            base="http://hl7.org/fhir/StructureDefinition/Address",
        )
        for name in ("city", "country")
    )
    definition = profile(
        "Patient",
        {
            "id": "Patient.address",
            "type": [{"code": "Address", "profile": [with_city["url"], with_country["url"]]}],
        },
    )
    addresses = [{"city": "Lyon"}, {"country": "FR"}, {"text": "somewhere"}]
    assert found(run(patient(address=addresses), definition, with_city, with_country)) == [
        "Patient.address[2].city"
    ]


# -- fixed and pattern ----------------------------------------------------------------------------


def test_fixed_primitive_must_be_equal() -> None:
    definition = profile("Patient", {"id": "Patient.identifier.use", "fixedCode": "official"})
    issues = run(patient(identifier=[{"use": "official"}, {"use": "usual"}]), definition)
    assert found(issues) == ["Patient.identifier[1].use"]
    assert issues[0].code == "value"


def test_fixed_complex_value_refuses_extra_elements() -> None:
    fixed = {"coding": [{"system": CS, "code": "red"}]}
    definition = profile("Patient", {"id": "Patient.maritalStatus", "fixedCodeableConcept": fixed})
    assert run(patient(maritalStatus={"coding": [{"system": CS, "code": "red"}]}), definition) == []
    extra = {"coding": [{"system": CS, "code": "red"}], "text": "Red"}
    assert found(run(patient(maritalStatus=extra), definition)) == ["Patient.maritalStatus"]


def test_pattern_codeable_concept_accepts_extra_codings_and_elements() -> None:
    pattern = {"coding": [{"system": CS, "code": "red"}]}
    definition = profile("Patient", {"id": "Patient.maritalStatus", "patternCodeableConcept": pattern})
    value = {
        "coding": [{"system": "urn:other", "code": "x"}, {"system": CS, "code": "red", "display": "Red"}],
        "text": "Red",
    }
    assert run(patient(maritalStatus=value), definition) == []


def test_pattern_codeable_concept_needs_a_coding_with_every_pattern_element() -> None:
    pattern = {"coding": [{"system": CS, "code": "red"}]}
    definition = profile("Patient", {"id": "Patient.maritalStatus", "patternCodeableConcept": pattern})
    # system and code present, but on two different codings: no coding matches the pattern's coding.
    value = {"coding": [{"system": CS, "code": "blue"}, {"system": "urn:other", "code": "red"}]}
    assert found(run(patient(maritalStatus=value), definition)) == ["Patient.maritalStatus"]


def test_pattern_identifier_is_a_subset_match() -> None:
    pattern = {"system": "urn:oid:1.2.3", "type": {"coding": [{"system": CS, "code": "red"}]}}
    definition = profile("Patient", {"id": "Patient.identifier", "patternIdentifier": pattern})
    good = {"system": "urn:oid:1.2.3", "value": "42", "use": "official", "type": pattern["type"]}
    bad = {"system": "urn:oid:9.9.9", "value": "43", "type": pattern["type"]}
    assert found(run(patient(identifier=[good, bad]), definition)) == ["Patient.identifier[1]"]


def test_fixed_and_pattern_do_not_apply_to_absent_elements() -> None:
    definition = profile(
        "Patient",
        {"id": "Patient.identifier.use", "fixedCode": "official"},
        {"id": "Patient.maritalStatus", "patternCodeableConcept": {"coding": [{"code": "M"}]}},
    )
    assert run(patient(identifier=[{"value": "1"}]), definition) == []


def test_matches_pattern_semantics() -> None:
    assert matches_pattern({"a": 1, "b": 2}, {"a": 1})
    assert not matches_pattern({"a": 1}, {"a": 1, "b": 2})
    assert matches_pattern([{"x": 1}, {"x": 2, "y": 3}], [{"x": 2}])
    assert not matches_pattern("official", "usual")
    assert matches_pattern(False, False)


# -- slicing -----------------------------------------------------------------------------------------

RPPS = "https://rpps.esante.gouv.fr"
ADELI = "https://adeli.esante.gouv.fr"


def sliced_by_system(rules: str = "open", discriminator: str = "value") -> dict[str, Any]:
    return profile(
        "Practitioner",
        {
            "id": "Practitioner.identifier",
            "slicing": {"discriminator": [{"type": discriminator, "path": "system"}], "rules": rules},
        },
        {"id": "Practitioner.identifier:rpps", "sliceName": "rpps", "min": 1, "max": "1"},
        {"id": "Practitioner.identifier:rpps.system", "fixedUri": RPPS},
        {"id": "Practitioner.identifier:rpps.use", "fixedCode": "official"},
        {"id": "Practitioner.identifier:adeli", "sliceName": "adeli", "min": 0, "max": "*"},
        {"id": "Practitioner.identifier:adeli.system", "patternUri": ADELI},
    )


def practitioner(*identifiers: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "identifier": list(identifiers)}


def test_missing_required_slice_is_error_at_the_sliced_element() -> None:
    issues = run(practitioner({"system": ADELI, "value": "1"}), sliced_by_system())
    assert found(issues) == ["Practitioner.identifier"]
    assert "rpps" in issues[0].diagnostics


def test_required_slice_missing_when_the_element_is_absent() -> None:
    assert found(run({"resourceType": "Practitioner"}, sliced_by_system())) == ["Practitioner.identifier"]


def test_too_many_items_in_a_slice_is_error() -> None:
    identifiers = [
        {"system": RPPS, "value": "1", "use": "official"},
        {"system": RPPS, "value": "2", "use": "official"},
    ]
    issues = run(practitioner(*identifiers), sliced_by_system())
    assert found(issues) == ["Practitioner.identifier"]
    assert "rpps" in issues[0].diagnostics


def test_open_slicing_accepts_items_matching_no_slice() -> None:
    rpps = {"system": RPPS, "value": "1", "use": "official"}
    assert run(practitioner({"system": "urn:other", "value": "x"}, rpps), sliced_by_system("open")) == []


def test_closed_slicing_refuses_an_item_matching_no_slice_at_its_index() -> None:
    rpps = {"system": RPPS, "value": "1", "use": "official"}
    issues = run(practitioner(rpps, {"system": "urn:other", "value": "x"}), sliced_by_system("closed"))
    assert found(issues) == ["Practitioner.identifier[1]"]


def test_slice_constraints_apply_only_to_items_in_the_slice() -> None:
    rpps = {"system": RPPS, "value": "1", "use": "usual"}
    adeli = {"system": ADELI, "value": "2", "use": "usual"}
    assert found(run(practitioner(adeli, rpps), sliced_by_system())) == ["Practitioner.identifier[1].use"]


def test_pattern_discriminator_matches_like_value() -> None:
    rpps = {"system": RPPS, "value": "1", "use": "official"}
    assert (
        run(practitioner(rpps, {"system": ADELI, "value": "2"}), sliced_by_system("closed", "pattern")) == []
    )


def test_slicing_on_a_codeable_concept_pattern() -> None:
    nh = {"coding": [{"system": CS, "code": "NH"}]}
    definition = profile(
        "Patient",
        {
            "id": "Patient.identifier",
            "slicing": {"discriminator": [{"type": "value", "path": "type"}], "rules": "open"},
        },
        {"id": "Patient.identifier:NSS", "sliceName": "NSS", "min": 0, "max": "1"},
        {"id": "Patient.identifier:NSS.type", "patternCodeableConcept": nh},
        {"id": "Patient.identifier:NSS.system", "fixedUri": "urn:oid:1.2.250.1.213.1.4.8"},
    )
    typed = {"type": {"coding": [{"system": CS, "code": "NH", "display": "NSS"}]}, "system": "urn:wrong"}
    other = {"type": {"coding": [{"system": CS, "code": "PI"}]}, "system": "urn:wrong"}
    assert found(run(patient(identifier=[other, typed]), definition)) == ["Patient.identifier[1].system"]


def test_discriminator_path_inside_a_pattern() -> None:
    definition = profile(
        "Patient",
        {
            "id": "Patient.identifier",
            "slicing": {
                "discriminator": [{"type": "pattern", "path": "type.coding.code"}],
                "rules": "closed",
            },
        },
        {"id": "Patient.identifier:PI", "sliceName": "PI", "min": 1, "max": "1"},
        {
            "id": "Patient.identifier:PI.type",
            "patternCodeableConcept": {"coding": [{"system": CS, "code": "PI"}]},
        },
    )
    identifier = {"type": {"coding": [{"system": CS, "code": "PI"}]}, "value": "1"}
    assert run(patient(identifier=[identifier]), definition) == []


def test_exists_discriminator() -> None:
    definition = profile(
        "Patient",
        {
            "id": "Patient.identifier",
            "slicing": {"discriminator": [{"type": "exists", "path": "period"}], "rules": "closed"},
        },
        {"id": "Patient.identifier:dated", "sliceName": "dated", "min": 1, "max": "1"},
        {"id": "Patient.identifier:dated.period", "min": 1},
        {"id": "Patient.identifier:undated", "sliceName": "undated", "min": 0, "max": "*"},
        {"id": "Patient.identifier:undated.period", "max": "0"},
    )
    dated, undated = {"value": "1", "period": {"start": "2020"}}, {"value": "2"}
    assert run(patient(identifier=[undated, dated, undated]), definition) == []
    assert found(run(patient(identifier=[undated]), definition)) == ["Patient.identifier"]


# -- extensions --------------------------------------------------------------------------------------

COLOUR = BASE + "colour"
BIRTH = BASE + "birth-detail"
PATIENT_ONLY = BASE + "patient-only"


def colour_extension(
    context: str | list[dict[str, str]] = "Element", strength: str = "required"
) -> dict[str, Any]:
    return extension(
        COLOUR,
        {"id": "Extension.extension", "max": "0"},
        {
            "id": "Extension.value[x]",
            "min": 1,
            "type": [{"code": "Coding"}],
            "binding": {"strength": strength, "valueSet": VS},
        },
        context=context,
    )


def complex_extension() -> dict[str, Any]:
    return extension(
        BIRTH,
        {
            "id": "Extension.extension",
            "slicing": {"discriminator": [{"type": "value", "path": "url"}], "rules": "closed"},
        },
        {"id": "Extension.extension:rank", "sliceName": "rank", "min": 1, "max": "1"},
        {"id": "Extension.extension:rank.url", "fixedUri": "rank"},
        {"id": "Extension.extension:rank.value[x]", "min": 1, "type": [{"code": "integer"}]},
        {"id": "Extension.extension:colour", "sliceName": "colour", "min": 0, "max": "1"},
        {"id": "Extension.extension:colour.url", "fixedUri": "colour"},
        {
            "id": "Extension.extension:colour.value[x]",
            "type": [{"code": "Coding"}],
            "binding": {"strength": "required", "valueSet": VS},
        },
        {"id": "Extension.value[x]", "max": "0"},
        context="Patient",
    )


def with_extension_slices(*slices: tuple[str, str, int, str]) -> dict[str, Any]:
    elements: list[dict[str, Any]] = [
        {
            "id": "Patient.extension",
            "slicing": {"discriminator": [{"type": "value", "path": "url"}], "rules": "open"},
        }
    ]
    for name, url, low, high in slices:
        elements.append(
            {
                "id": f"Patient.extension:{name}",
                "sliceName": name,
                "min": low,
                "max": high,
                "type": [{"code": "Extension", "profile": [url]}],
            }
        )
    return profile("Patient", *elements)


def coding(code: str) -> dict[str, Any]:
    return {"system": CS, "code": code}


TERMINOLOGY = (code_system(), value_set())


def test_extension_slice_is_matched_by_url_and_counted() -> None:
    definition = with_extension_slices(("colour", COLOUR, 1, "1"))
    other = {"url": "urn:other", "valueString": "x"}
    assert found(run(patient(extension=[other]), definition, colour_extension(), *TERMINOLOGY)) == [
        "Patient.extension"
    ]
    twice = [{"url": COLOUR, "valueCoding": coding("red")}] * 2
    assert found(run(patient(extension=twice), definition, colour_extension(), *TERMINOLOGY)) == [
        "Patient.extension"
    ]


def test_extension_slice_without_explicit_slicing_is_matched_by_url() -> None:
    # Extension elements are always sliced by url (R4 extensibility.html), stated or not.
    definition = profile(
        "Patient",
        {
            "id": "Patient.extension:colour",
            "sliceName": "colour",
            "min": 1,
            "max": "1",
            "type": [{"code": "Extension", "profile": [COLOUR]}],
        },
    )
    resource = patient(extension=[{"url": COLOUR, "valueCoding": coding("red")}])
    assert run(resource, definition, colour_extension(), *TERMINOLOGY) == []


def test_extension_is_validated_against_its_own_definition() -> None:
    definition = with_extension_slices(("colour", COLOUR, 0, "1"))
    resource = patient(extension=[{"url": COLOUR, "valueString": "red"}])
    issues = run(resource, definition, colour_extension(), *TERMINOLOGY)
    assert found(issues) == ["Patient.extension[0].valueString"]


def test_extension_value_binding_is_checked() -> None:
    resource = patient(extension=[{"url": COLOUR, "valueCoding": coding("purple")}])
    issues = run(
        resource, with_extension_slices(("colour", COLOUR, 0, "1")), colour_extension(), *TERMINOLOGY
    )
    assert found(issues) == ["Patient.extension[0].valueCoding"]
    assert issues[0].code == "code-invalid"


def test_known_extension_is_validated_without_any_profile() -> None:
    resource = patient(extension=[{"url": COLOUR, "valueCoding": coding("purple")}])
    assert found(run(resource, colour_extension(), *TERMINOLOGY, profiles=[])) == [
        "Patient.extension[0].valueCoding"
    ]


def test_complex_extension_sub_extension_slices() -> None:
    good = {
        "url": BIRTH,
        "extension": [{"url": "rank", "valueInteger": 2}, {"url": "colour", "valueCoding": coding("red")}],
    }
    assert run(patient(extension=[good]), complex_extension(), *TERMINOLOGY, profiles=[]) == []
    missing_rank = {"url": BIRTH, "extension": [{"url": "colour", "valueCoding": coding("red")}]}
    assert found(run(patient(extension=[missing_rank]), complex_extension(), *TERMINOLOGY, profiles=[])) == [
        "Patient.extension[0].extension"
    ]


def test_complex_extension_closed_sub_extensions_refuse_unknown_ones() -> None:
    resource = patient(
        extension=[
            {
                "url": BIRTH,
                "extension": [{"url": "rank", "valueInteger": 1}, {"url": "size", "valueInteger": 3}],
            }
        ]
    )
    assert found(run(resource, complex_extension(), *TERMINOLOGY, profiles=[])) == [
        "Patient.extension[0].extension[1]"
    ]


def test_complex_extension_sub_extension_value_binding() -> None:
    resource = patient(
        extension=[
            {
                "url": BIRTH,
                "extension": [
                    {"url": "rank", "valueInteger": 1},
                    {"url": "colour", "valueCoding": coding("mauve")},
                ],
            }
        ]
    )
    assert found(run(resource, complex_extension(), *TERMINOLOGY, profiles=[])) == [
        "Patient.extension[0].extension[1].valueCoding"
    ]


def test_complex_extension_sub_extension_value_type() -> None:
    resource = patient(extension=[{"url": BIRTH, "extension": [{"url": "rank", "valueString": "1"}]}])
    assert "Patient.extension[0].extension[0].valueString" in found(
        run(resource, complex_extension(), *TERMINOLOGY, profiles=[])
    )


def test_complex_extension_refuses_a_value() -> None:
    resource = patient(
        extension=[{"url": BIRTH, "extension": [{"url": "rank", "valueInteger": 1}], "valueString": "x"}]
    )
    assert found(run(resource, complex_extension(), *TERMINOLOGY, profiles=[])) == [
        "Patient.extension[0].value"
    ]


def test_extension_inside_an_extension_value_is_validated() -> None:
    place = extension(
        BASE + "place",
        {"id": "Extension.value[x]", "min": 1, "type": [{"code": "Address"}]},
        context="Patient",
    )
    nested = {"url": COLOUR, "valueCoding": coding("purple")}
    resource = patient(
        extension=[{"url": place["url"], "valueAddress": {"city": "Ajaccio", "extension": [nested]}}]
    )
    issues = run(resource, place, colour_extension(context="Address"), *TERMINOLOGY, profiles=[])
    assert found(issues) == ["Patient.extension[0].valueAddress.extension[0].valueCoding"]


def test_extension_with_patient_context_on_practitioner_is_error() -> None:
    resource = {"resourceType": "Practitioner", "extension": [{"url": COLOUR, "valueCoding": coding("red")}]}
    issues = run(resource, colour_extension(context="Patient"), *TERMINOLOGY, profiles=[])
    assert found(issues) == ["Practitioner.extension[0]"]
    assert "Patient" in issues[0].diagnostics


def test_extension_with_patient_context_inside_patient_name_is_error() -> None:
    resource = patient(
        name=[{"family": "A"}, {"family": "B", "extension": [{"url": COLOUR, "valueCoding": coding("red")}]}]
    )
    assert found(run(resource, colour_extension(context="Patient"), *TERMINOLOGY, profiles=[])) == [
        "Patient.name[1].extension[0]"
    ]


def test_extension_with_patient_context_on_patient_passes() -> None:
    resource = patient(extension=[{"url": COLOUR, "valueCoding": coding("red")}])
    assert run(resource, colour_extension(context="Patient"), *TERMINOLOGY, profiles=[]) == []


def test_extension_with_element_path_context() -> None:
    ext = colour_extension(context="Patient.name")
    on_name = patient(name=[{"family": "A", "extension": [{"url": COLOUR, "valueCoding": coding("red")}]}])
    assert run(on_name, ext, *TERMINOLOGY, profiles=[]) == []
    on_address = patient(
        address=[{"city": "A", "extension": [{"url": COLOUR, "valueCoding": coding("red")}]}]
    )
    assert found(run(on_address, ext, *TERMINOLOGY, profiles=[])) == ["Patient.address[0].extension[0]"]


def test_extension_with_data_type_context() -> None:
    ext = colour_extension(context="Address")
    value = {"url": COLOUR, "valueCoding": coding("red")}
    on_address = patient(
        address=[{"city": "A", "extension": [value]}], contact=[{"address": {"extension": [value]}}]
    )
    assert run(on_address, ext, *TERMINOLOGY, profiles=[]) == []
    on_name = patient(name=[{"family": "A", "extension": [value]}])
    assert found(run(on_name, ext, *TERMINOLOGY, profiles=[])) == ["Patient.name[0].extension[0]"]


def test_extension_context_on_a_primitive_element() -> None:
    ext = colour_extension(context="Patient.birthDate")
    value = {"url": COLOUR, "valueCoding": coding("red")}
    assert (
        run(patient(birthDate="1980", _birthDate={"extension": [value]}), ext, *TERMINOLOGY, profiles=[])
        == []
    )
    assert found(
        run(patient(gender="male", _gender={"extension": [value]}), ext, *TERMINOLOGY, profiles=[])
    ) == ["Patient._gender.extension[0]"]


def test_extension_context_restarts_at_a_contained_resource() -> None:
    value = {"url": COLOUR, "valueCoding": coding("red")}
    resource = {
        "resourceType": "Observation",
        "contained": [{"resourceType": "Patient", "id": "p", "extension": [value]}],
        "extension": [value],
    }
    assert found(run(resource, colour_extension(context="Patient"), *TERMINOLOGY, profiles=[])) == [
        "Observation.extension[0]"
    ]


def test_extension_context_restarts_at_a_bundle_entry_resource() -> None:
    value = {"url": COLOUR, "valueCoding": coding("red")}
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": {"resourceType": "Practitioner", "extension": [value]}},
            {"resource": patient(extension=[value])},
        ],
    }
    assert found(run(bundle, colour_extension(context="Patient"), *TERMINOLOGY, profiles=[])) == [
        "Bundle.entry[0].resource.extension[0]"
    ]


def test_extension_context_of_fhirpath_type_is_not_refused() -> None:
    ext = colour_extension(
        context=[{"type": "fhirpath", "expression": "Patient.name.where(use = 'official')"}]
    )
    resource = patient(
        name=[{"use": "official", "extension": [{"url": COLOUR, "valueCoding": coding("red")}]}]
    )
    assert run(resource, ext, *TERMINOLOGY, profiles=[]) == []


def test_extension_context_of_extension_type() -> None:
    ext = colour_extension(context=[{"type": "extension", "expression": BIRTH}])
    value = {"url": COLOUR, "valueCoding": coding("red")}
    inside = patient(extension=[{"url": BIRTH, "extension": [{"url": "rank", "valueInteger": 1}, value]}])
    birth = complex_extension()
    birth["differential"]["element"][1]["slicing"]["rules"] = "open"
    assert run(inside, ext, birth, *TERMINOLOGY, profiles=[]) == []
    assert found(run(patient(extension=[value]), ext, birth, *TERMINOLOGY, profiles=[])) == [
        "Patient.extension[0]"
    ]


# -- bindings ----------------------------------------------------------------------------------------


def bound(strength: str, element: str = "Patient.maritalStatus") -> dict[str, Any]:
    return profile("Patient", {"id": element, "binding": {"strength": strength, "valueSet": VS}})


def test_required_binding_code_outside_the_value_set_is_error() -> None:
    issues = run(patient(maritalStatus={"coding": [coding("purple")]}), bound("required"), *TERMINOLOGY)
    assert [(i.severity, i.code, i.expression) for i in issues] == [
        ("error", "code-invalid", "Patient.maritalStatus")
    ]


def test_required_binding_code_in_the_value_set_passes() -> None:
    assert run(patient(maritalStatus={"coding": [coding("red")]}), bound("required"), *TERMINOLOGY) == []


@pytest.mark.parametrize("strength", ["extensible", "preferred"])
def test_non_required_binding_code_outside_the_value_set_is_warning(strength: str) -> None:
    issues = run(patient(maritalStatus={"coding": [coding("purple")]}), bound(strength), *TERMINOLOGY)
    assert found(issues) == []
    assert found(issues, "warning") == ["Patient.maritalStatus"]


def test_example_binding_is_not_checked() -> None:
    assert run(patient(maritalStatus={"coding": [coding("purple")]}), bound("example"), *TERMINOLOGY) == []


def test_codeable_concept_passes_when_any_coding_is_in_the_value_set() -> None:
    value = {"coding": [{"system": "urn:other", "code": "x"}, coding("green")]}
    assert run(patient(maritalStatus=value), bound("required"), *TERMINOLOGY) == []


def test_binding_compares_the_coding_system() -> None:
    value = {"coding": [{"system": "urn:other", "code": "red"}]}
    assert found(run(patient(maritalStatus=value), bound("required"), *TERMINOLOGY)) == [
        "Patient.maritalStatus"
    ]


def test_text_only_codeable_concept_is_not_a_binding_violation() -> None:
    assert run(patient(maritalStatus={"text": "married"}), bound("required"), *TERMINOLOGY) == []


def test_bare_code_is_checked_against_the_value_set_codes() -> None:
    definition = bound("required", "Patient.gender")
    assert run(patient(gender="red"), definition, *TERMINOLOGY) == []
    issues = run(patient(gender="male"), definition, *TERMINOLOGY)
    assert [(i.severity, i.expression) for i in issues] == [("error", "Patient.gender")]


def test_bare_code_list_reports_each_item() -> None:
    definition = profile(
        "Patient",
        {"id": "Patient.name.prefix", "binding": {"strength": "required", "valueSet": VS}},
    )
    issues = run(patient(name=[{"prefix": ["red", "mauve", "pink"]}]), definition, *TERMINOLOGY)
    assert found(issues) == ["Patient.name[0].prefix[1]", "Patient.name[0].prefix[2]"]


def test_binding_to_a_value_set_we_do_not_have_is_not_checked() -> None:
    assert run(patient(maritalStatus={"coding": [coding("purple")]}), bound("required")) == []


def test_value_set_included_twice_through_two_value_sets_still_expands() -> None:
    base_vs = value_set(VS + "-base")
    left = value_set(VS + "-left", {"valueSet": [base_vs["url"]]})
    right = value_set(VS + "-right", {"valueSet": [base_vs["url"]]})
    top = value_set(VS, {"valueSet": [left["url"]]}, {"valueSet": [right["url"]]})
    conformance = Conformance([code_system(), base_vs, left, right, top])
    assert conformance.codes(VS) == {(CS, "red"), (CS, "green"), (CS, "blue")}
    issues = Validator(conformance).validate(patient(maritalStatus={"coding": [coding("purple")]}), [])
    assert issues == []
    full = Validator(Conformance([code_system(), base_vs, left, right, top, bound("required")]))
    assert found(full.validate(patient(maritalStatus={"coding": [coding("purple")]}), [PROFILE])) == [
        "Patient.maritalStatus"
    ]


def test_value_set_include_system_and_value_set_is_their_intersection() -> None:
    warm = value_set(VS + "-warm", {"system": CS, "concept": [{"code": "red"}, {"code": "orange"}]})
    vs = value_set(VS, {"system": CS, "valueSet": [warm["url"]]})
    assert Conformance([code_system(), warm, vs]).codes(VS) == {(CS, "red")}


def test_value_set_exclude_removes_codes() -> None:
    vs = value_set(VS)
    vs["compose"]["exclude"] = [{"system": CS, "concept": [{"code": "blue"}]}]
    assert Conformance([code_system(), vs]).codes(VS) == {(CS, "red"), (CS, "green")}


def test_value_set_with_only_an_expansion_uses_it() -> None:
    vs = {
        "resourceType": "ValueSet",
        "url": VS,
        "status": "active",
        "expansion": {
            "timestamp": "2024-01-01",
            "contains": [
                {"system": CS, "code": "red"},
                {"system": CS, "code": "x", "contains": [{"system": CS, "code": "y"}]},
            ],
        },
    }
    assert Conformance([vs]).codes(VS) == {(CS, "red"), (CS, "x"), (CS, "y")}


def test_value_set_over_an_incomplete_code_system_cannot_be_expanded() -> None:
    fragment = code_system() | {"content": "fragment"}
    assert Conformance([fragment, value_set()]).codes(VS) is None


def test_value_set_with_a_filter_cannot_be_expanded() -> None:
    vs = value_set(VS, {"system": CS, "filter": [{"property": "concept", "op": "is-a", "value": "red"}]})
    assert Conformance([code_system(), vs]).codes(VS) is None


# -- references ------------------------------------------------------------------------------------


FR_PRACTITIONER = BASE + "fr-practitioner"


def referencing(*targets: str) -> list[dict[str, Any]]:
    practitioner_profile = structure(FR_PRACTITIONER, "Practitioner")
    definition = profile(
        "Patient",
        {
            "id": "Patient.generalPractitioner",
            "type": [{"code": "Reference", "targetProfile": list(targets)}],
        },
    )
    return [definition, practitioner_profile]


def test_reference_to_a_type_outside_target_profiles_is_error_at_reference() -> None:
    issues = run(patient(generalPractitioner=[{"reference": "Patient/1"}]), *referencing(FR_PRACTITIONER))
    assert found(issues) == ["Patient.generalPractitioner[0].reference"]
    assert "Patient" in issues[0].diagnostics


def test_reference_to_the_type_of_a_target_profile_passes() -> None:
    resource = patient(generalPractitioner=[{"reference": "Practitioner/1"}])
    assert (
        run(resource, *referencing(FR_PRACTITIONER, "http://hl7.org/fhir/StructureDefinition/Organization"))
        == []
    )


def test_reference_type_read_from_absolute_and_versioned_urls() -> None:
    definitions = referencing(FR_PRACTITIONER)
    assert (
        run(
            patient(generalPractitioner=[{"reference": "https://x.org/fhir/Practitioner/1/_history/2"}]),
            *definitions,
        )
        == []
    )
    assert found(
        run(patient(generalPractitioner=[{"reference": "https://x.org/fhir/Group/1"}]), *definitions)
    ) == ["Patient.generalPractitioner[0].reference"]


def test_reference_type_element_is_checked() -> None:
    resource = patient(
        generalPractitioner=[{"type": "Device", "identifier": {"system": "urn:a", "value": "1"}}]
    )
    assert found(run(resource, *referencing(FR_PRACTITIONER))) == ["Patient.generalPractitioner[0].type"]


def test_conditional_reference_type_is_checked() -> None:
    definitions = referencing(FR_PRACTITIONER)
    good = patient(
        generalPractitioner=[{"reference": "Practitioner?identifier=https://rpps.esante.gouv.fr|1"}]
    )
    assert run(good, *definitions) == []
    bad = patient(generalPractitioner=[{"reference": "Device?identifier=https://x.org/id|1"}])
    assert found(run(bad, *definitions)) == ["Patient.generalPractitioner[0].reference"]


def test_reference_to_a_target_profile_we_do_not_hold_is_not_judged() -> None:
    resource = patient(generalPractitioner=[{"reference": "Practitioner/1"}])
    assert run(resource, *referencing("https://example.org/fhir/StructureDefinition/not-shipped")) == []


def test_local_and_urn_references_are_not_refused() -> None:
    resource = patient(
        generalPractitioner=[
            {"reference": "#p1"},
            {"reference": "urn:uuid:4b7f1e0a-6d3e-4c53-9a3c-1f6f4d8e9b10"},
        ]
    )
    assert run(resource, *referencing(FR_PRACTITIONER)) == []


# -- invariants ------------------------------------------------------------------------------------


def invariant(expression: str, severity: str = "error", element: str = "Patient") -> dict[str, Any]:
    return profile(
        "Patient",
        {
            "id": element,
            "constraint": [
                {"key": "tst-1", "severity": severity, "human": "Test rule", "expression": expression}
            ],
        },
    )


def test_true_invariant_passes() -> None:
    assert run(patient(gender="male"), invariant("gender = 'male'")) == []


def test_false_invariant_is_error_with_its_key_at_its_element() -> None:
    issues = run(patient(gender="female"), invariant("gender = 'male'"))
    assert [(i.severity, i.code, i.expression) for i in issues] == [("error", "invariant", "Patient")]
    assert "tst-1" in issues[0].diagnostics


def test_empty_invariant_result_passes() -> None:
    assert run(patient(), invariant("gender = 'male'")) == []


def test_false_warning_invariant_is_warning() -> None:
    issues = run(patient(gender="female"), invariant("gender = 'male'", "warning"))
    assert found(issues) == [] and found(issues, "warning") == ["Patient"]


def test_unevaluable_invariant_is_warning() -> None:
    issues = run(patient(gender="female"), invariant("gender.noSuchFunction()"))
    assert found(issues) == [] and found(issues, "warning") == ["Patient"]


def test_invariant_that_does_not_compile_is_warning() -> None:
    issues = run(patient(gender="female"), invariant("gender = = 'male'"))
    assert found(issues) == [] and found(issues, "warning") == ["Patient"]


def test_invariant_may_use_resource_variable() -> None:
    definition = invariant("%resource.gender = 'male'", element="Patient.name")
    assert run(patient(gender="male", name=[{"family": "A"}]), definition) == []
    assert found(run(patient(gender="female", name=[{"family": "A"}]), definition)) == ["Patient.name[0]"]


def test_invariant_on_a_nested_element_is_evaluated_on_each_item() -> None:
    issues = run(
        patient(identifier=[{"system": "urn:a"}, {"value": "x"}, {"system": "urn:b"}]),
        invariant("system.exists()", element="Patient.identifier"),
    )
    assert found(issues) == ["Patient.identifier[1]"]


def test_invariant_on_an_extension_reads_its_choice_value() -> None:
    ext = extension(
        COLOUR,
        {
            "id": "Extension",
            "constraint": [
                {
                    "key": "col-1",
                    "severity": "error",
                    "human": "red only",
                    "expression": "value.ofType(Coding).code = 'red'",
                }
            ],
        },
    )
    assert run(patient(extension=[{"url": COLOUR, "valueCoding": coding("red")}]), ext, profiles=[]) == []
    assert found(
        run(patient(extension=[{"url": COLOUR, "valueCoding": coding("blue")}]), ext, profiles=[])
    ) == ["Patient.extension[0]"]


# -- derived profiles ------------------------------------------------------------------------------

DERIVED = BASE + "derived"


def test_derived_profile_applies_its_base_constraints() -> None:
    base = profile("Patient", {"id": "Patient.birthDate", "min": 1})
    derived = structure(DERIVED, "Patient", {"id": "Patient.gender", "min": 1}, base=PROFILE)
    assert found(run(patient(), base, derived, profiles=[DERIVED])) == ["Patient.birthDate", "Patient.gender"]


def test_derived_profile_tightens_its_base() -> None:
    base = profile("Patient", {"id": "Patient.name", "min": 1, "max": "*"})
    derived = structure(DERIVED, "Patient", {"id": "Patient.name", "max": "1"}, base=PROFILE)
    two = patient(name=[{"family": "A"}, {"family": "B"}])
    assert found(run(two, base, derived, profiles=[DERIVED])) == ["Patient.name"]
    assert found(run(patient(), base, derived, profiles=[DERIVED])) == ["Patient.name"]


def test_base_constraints_apply_through_two_levels() -> None:
    base = profile("Patient", {"id": "Patient.birthDate", "min": 1})
    middle = structure(BASE + "middle", "Patient", {"id": "Patient.gender", "min": 1}, base=PROFILE)
    derived = structure(DERIVED, "Patient", {"id": "Patient.name", "min": 1}, base=BASE + "middle")
    assert found(run(patient(), base, middle, derived, profiles=[DERIVED])) == [
        "Patient.birthDate",
        "Patient.gender",
        "Patient.name",
    ]


def test_base_profile_published_under_hl7_org_is_applied() -> None:
    # e.g. a profile on the R4 vital signs profile: its base is an HL7 canonical, but a profile.
    vitals_url = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
    vitals = structure(vitals_url, "Observation", {"id": "Observation.subject", "min": 1})
    derived = structure(DERIVED, "Observation", {"id": "Observation.effective[x]", "min": 1}, base=vitals_url)
    assert found(run({"resourceType": "Observation"}, vitals, derived, profiles=[DERIVED])) == [
        "Observation.subject",
        "Observation.effective",
    ]


def test_profile_for_another_resource_type_is_error() -> None:
    issues = run({"resourceType": "Practitioner"}, profile("Patient", {"id": "Patient.birthDate", "min": 1}))
    assert found(issues) == ["Practitioner"]


def test_unknown_profile_is_ignored_by_the_validator() -> None:
    assert run(patient(), profiles=[BASE + "unknown"]) == []


# -- every finding ----------------------------------------------------------------------------------


def test_every_finding_is_reported_each_with_its_expression() -> None:
    definition = profile(
        "Patient",
        {
            "id": "Patient",
            "constraint": [
                {"key": "tst-1", "severity": "error", "human": "x", "expression": "active.exists()"}
            ],
        },
        {"id": "Patient.birthDate", "min": 1},
        {"id": "Patient.gender", "binding": {"strength": "required", "valueSet": VS}},
        {"id": "Patient.identifier.system", "min": 1},
        {"id": "Patient.identifier.use", "fixedCode": "official"},
        {"id": "Patient.name", "max": "1"},
    )
    resource = patient(
        gender="purple",
        identifier=[
            {"value": "1", "use": "official"},
            {"system": "urn:a", "value": "2", "use": "usual"},
            {"value": "3"},
        ],
        name=[{"family": "A"}, {"family": "B"}],
    )
    issues = run(resource, definition, *TERMINOLOGY)
    assert sorted(found(issues)) == sorted(
        [
            "Patient",
            "Patient.birthDate",
            "Patient.gender",
            "Patient.identifier[0].system",
            "Patient.identifier[1].use",
            "Patient.identifier[2].system",
            "Patient.name",
        ]
    )
    assert all(i.diagnostics for i in issues)
