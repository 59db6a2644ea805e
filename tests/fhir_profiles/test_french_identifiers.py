"""French national identifiers (fhir_profiles.french_identifiers): INS NIR/NIA, RPPS, FINESS.

The NIR key is 97 - (13-character number mod 97), Corsica 2A/2B read as 19/18; 97 is prime and
coprime with 10, so changing any single digit changes the key: hypothesis checks both directions.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_profiles import french_identifiers as fi
from fhir_profiles.issues import ValidationIssue

VALID_NIR = "284057505612387"  # tests/data/fr-core/patient-ins-valid.json (key 87)
CORSICA_2A = "169032A00401543"  # tests/data/fr-core/patient-ins-valid-qual-corse.json (key 43)
RPPS_VALUE = "10003543211"
FINESS_VALUE = "330000019"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
FR_V2_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
HYPOTHESIS = settings(max_examples=200, deadline=None, database=None)


def with_key(number13: str) -> str:
    return f"{number13}{fi.nir_key(number13):02d}"


def errors(issues: list[ValidationIssue]) -> list[ValidationIssue]:
    return [i for i in issues if i.is_error]


def reliability(status: str, system: str = fi.RELIABILITY_SYSTEM) -> dict[str, Any]:
    return {
        "url": fi.RELIABILITY_URL,
        "extension": [{"url": "identityStatus", "valueCoding": {"system": system, "code": status}}],
    }


def patient(*identifiers: dict[str, Any], status: str | None = "VALI", **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "identifier": list(identifiers), **extra}
    if status is not None:
        resource["extension"] = [reliability(status)]
    return resource


def ins(value: str = VALID_NIR, system: str = fi.INS_NIR_TEST, **extra: Any) -> dict[str, Any]:
    return {"use": "official", "system": system, "value": value, **extra}


def practitioner(*identifiers: tuple[str, str]) -> dict[str, Any]:
    return {
        "resourceType": "Practitioner",
        "identifier": [{"system": system, "value": value} for system, value in identifiers],
    }


def organization(*identifiers: tuple[str, str]) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "identifier": [{"system": system, "value": value} for system, value in identifiers],
    }


# -- NIR / NIA key ------------------------------------------------------------------------------


def test_nir_key_is_97_minus_number_mod_97() -> None:
    assert fi.nir_key(VALID_NIR[:13]) == 97 - int(VALID_NIR[:13]) % 97 == 87


def test_nir_key_reads_corsica_2a_as_19() -> None:
    assert fi.nir_key("169032A004015") == fi.nir_key("1690319004015") == 43


def test_nir_key_reads_corsica_2b_as_18() -> None:
    assert fi.nir_key("169032B004015") == fi.nir_key("1690318004015")
    assert fi.nir_key("169032B004015") != fi.nir_key("169032A004015")


def test_valid_nir_passes() -> None:
    assert fi.check_nir(VALID_NIR) is None


def test_valid_corsican_2a_nir_passes() -> None:
    assert fi.check_nir(CORSICA_2A) is None


def test_valid_corsican_2b_nir_passes() -> None:
    assert fi.check_nir(with_key("169032B004015")) is None


def test_corsican_nir_with_key_computed_without_substitution_fails() -> None:
    # 2A read as 20 instead of 19 would give another key: the substitution is part of the rule.
    naive = 97 - int("1690320004015") % 97
    assert naive != 43
    assert fi.check_nir(f"169032A004015{naive:02d}") is not None


def test_nir_with_wrong_key_fails_and_says_the_expected_key() -> None:
    reason = fi.check_nir(VALID_NIR[:13] + "88")
    assert reason is not None and "87" in reason


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(VALID_NIR[:-1], id="14-characters"),
        pytest.param(VALID_NIR + "0", id="16-characters"),
        pytest.param("", id="empty"),
        pytest.param(with_key("5840575056123"), id="sex-5"),
        pytest.param(with_key("2841375056123"), id="month-13"),
        pytest.param(with_key("2840075056123"), id="month-00"),
        pytest.param("28405A505612300", id="letter-outside-corsica"),
        pytest.param("284052C05612300", id="department-2C"),
        pytest.param(VALID_NIR[:13] + "8A", id="letter-in-key"),
        pytest.param(" " + VALID_NIR[1:], id="space"),
    ],
)
def test_malformed_nir_fails(value: str) -> None:
    assert fi.check_nir(value) is not None


@pytest.mark.parametrize(
    "digit", ["\uff18", "\u0668", "\u09ee"], ids=["fullwidth", "arabic-indic", "bengali"]
)
def test_nir_with_a_non_ascii_digit_fails(digit: str) -> None:
    # "8" replaced by the same digit in another script: int() would read the same number.
    assert fi.check_nir(VALID_NIR[:1] + digit + VALID_NIR[2:]) is not None
    assert fi.check_nir(VALID_NIR[:14] + "\uff17") is not None


_SEX = st.sampled_from("123478")
_MONTH = st.one_of(st.integers(1, 12), st.integers(20, 42), st.integers(50, 99)).map("{:02d}".format)
_DEPARTMENT = st.one_of(
    st.integers(1, 99).map("{:02d}".format), st.sampled_from(["2A", "2B", "97", "98", "99"])
)


@st.composite
def valid_nirs(draw: st.DrawFn) -> str:
    number = (
        draw(_SEX)
        + f"{draw(st.integers(0, 99)):02d}"
        + draw(_MONTH)
        + draw(_DEPARTMENT)
        + f"{draw(st.integers(1, 999)):03d}"
        + f"{draw(st.integers(1, 999)):03d}"
    )
    return with_key(number)


@HYPOTHESIS
@given(valid_nirs())
def test_generated_valid_nir_passes(nir: str) -> None:
    assert fi.check_nir(nir) is None


@HYPOTHESIS
@given(valid_nirs(), st.data())
def test_any_single_digit_substitution_of_a_valid_nir_fails(nir: str, data: st.DataObject) -> None:
    position = data.draw(st.sampled_from([i for i, c in enumerate(nir) if c.isascii() and c.isdigit()]))
    digit = data.draw(st.sampled_from([d for d in "0123456789" if d != nir[position]]))
    changed = nir[:position] + digit + nir[position + 1 :]
    assert fi.check_nir(changed) is not None, changed


@HYPOTHESIS
@given(valid_nirs().filter(lambda nir: nir[5:7] in {"2A", "2B"}))
def test_swapping_corsica_2a_and_2b_fails(nir: str) -> None:
    swapped = nir[:6] + ("B" if nir[6] == "A" else "A") + nir[7:]
    assert fi.check_nir(swapped) is not None


# -- INS on a Patient: check_resource ------------------------------------------------------------


def test_valid_ins_on_validated_patient_has_no_finding() -> None:
    assert fi.check_resource(patient(ins(), status="VALI")) == []


def test_valid_ins_on_qualified_patient_has_no_finding() -> None:
    assert fi.check_resource(patient(ins(), status="QUAL")) == []


def test_ins_with_wrong_key_is_error_at_identifier_value() -> None:
    resource = patient({"system": "urn:example", "value": "x"}, ins(VALID_NIR[:13] + "88"))
    assert [(i.severity, i.expression) for i in fi.check_resource(resource)] == [
        ("error", "Patient.identifier[1].value")
    ]


@pytest.mark.parametrize("status", ["PROV", "VIDE", "DOUT", "FICT", "RECUP"])
def test_ins_on_patient_with_untrusted_status_is_error_at_identifier(status: str) -> None:
    resource = patient({"system": "urn:example", "value": "x"}, ins(), status=status)
    found = errors(fi.check_resource(resource))
    assert [(i.code, i.expression) for i in found] == [("business-rule", "Patient.identifier[1]")]
    assert status in found[0].diagnostics


def test_ins_on_patient_without_identity_status_is_error_at_identifier() -> None:
    found = errors(fi.check_resource(patient(ins(), status=None)))
    assert [i.expression for i in found] == ["Patient.identifier[0]"]


def test_identity_status_from_another_code_system_is_not_trusted() -> None:
    resource = patient(ins(), status=None, extension=[reliability("VALI", system="urn:example:status")])
    assert [i.expression for i in errors(fi.check_resource(resource))] == ["Patient.identifier[0]"]


def test_identity_statuses_reads_the_reliability_extension() -> None:
    resource = patient(status=None, extension=[reliability("VALI"), reliability("PROV")])
    assert fi.identity_statuses(resource) == {"VALI", "PROV"}


@pytest.mark.parametrize(
    "system",
    [fi.INS_NIR, fi.INS_NIA, fi.INS_NIR_TEST, fi.INS_NIA_TEST],
    ids=["NIR-4.8", "NIA-4.9", "NIR-TEST-4.10", "NIR-DEMO-4.11"],
)
def test_every_ins_system_needs_a_trusted_identity_status(system: str) -> None:
    found = errors(fi.check_resource(patient(ins(system=system), status="PROV")))
    assert [i.expression for i in found] == ["Patient.identifier[0]"]


@pytest.mark.parametrize(
    "system",
    [fi.INS_NIR, fi.INS_NIA, fi.INS_NIR_TEST, fi.INS_NIA_TEST],
    ids=["NIR-4.8", "NIA-4.9", "NIR-TEST-4.10", "NIR-DEMO-4.11"],
)
def test_every_ins_system_has_its_key_checked(system: str) -> None:
    found = errors(fi.check_resource(patient(ins(VALID_NIR[:13] + "11", system=system))))
    assert [i.expression for i in found] == ["Patient.identifier[0].value"]


def test_nss_sharing_the_nir_oid_is_not_an_ins() -> None:
    # FR Core Patient NSS slice: type v2-0203#NH, system urn:oid:1.2.250.1.213.1.4.8 (billing NIR),
    # carried by provisional identities too (tests/data/fr-core/patient-valid.json).
    nss = {
        "use": "official",
        "type": {"coding": [{"system": V2_0203, "code": "NH"}]},
        "system": fi.INS_NIR,
        "value": "179019912345643",
    }
    assert fi.check_resource(patient(nss, status="PROV")) == []


def test_nss_with_a_wrong_nir_key_is_still_an_error() -> None:
    nss = {
        "type": {"coding": [{"system": V2_0203, "code": "NH"}]},
        "system": fi.INS_NIR,
        "value": "179019912345644",
    }
    assert [i.expression for i in errors(fi.check_resource(patient(nss, status="PROV")))] == [
        "Patient.identifier[0].value"
    ]


def test_ins_nir_typed_as_ins_with_nir_oid_needs_trusted_status() -> None:
    typed = ins(system=fi.INS_NIR, type={"coding": [{"system": FR_V2_0203, "code": "INS-NIR"}]})
    assert [i.expression for i in errors(fi.check_resource(patient(typed, status="PROV")))] == [
        "Patient.identifier[0]"
    ]


def test_ins_identity_status_rule_applies_to_patients_only() -> None:
    related = {"resourceType": "RelatedPerson", "identifier": [ins()]}
    assert fi.check_resource(related) == []


def test_findings_are_rooted_at_the_given_expression() -> None:
    found = fi.check_resource(patient(ins(VALID_NIR[:13] + "11")), "Bundle.entry[3].resource")
    assert [i.expression for i in found] == ["Bundle.entry[3].resource.identifier[0].value"]


# -- RPPS / idNatPs ------------------------------------------------------------------------------


def test_rpps_of_11_digits_passes() -> None:
    assert fi.check_rpps(RPPS_VALUE) is None


@pytest.mark.parametrize(
    "value", ["1000354321", "100035432111", "1000354321A", "", "1000354321\uff11", "1000354321\u00b9"]
)
def test_rpps_not_11_ascii_digits_fails(value: str) -> None:
    assert fi.check_rpps(value) is not None


def test_practitioner_with_rpps_of_10_digits_is_error_at_its_value() -> None:
    found = errors(fi.check_resource(practitioner((fi.RPPS, "1000354321"))))
    assert [(i.code, i.expression) for i in found] == [("value", "Practitioner.identifier[0].value")]


def test_idnatps_equal_to_8_plus_rpps_passes() -> None:
    resource = practitioner((fi.ID_NAT_PS, "8" + RPPS_VALUE), (fi.RPPS, RPPS_VALUE))
    assert fi.check_resource(resource) == []


def test_idnatps_not_matching_rpps_is_error_at_idnatps_value() -> None:
    resource = practitioner((fi.RPPS, RPPS_VALUE), (fi.ID_NAT_PS, "810003543212"))
    found = errors(fi.check_resource(resource))
    assert [(i.code, i.expression) for i in found] == [("business-rule", "Practitioner.identifier[1].value")]


def test_idnatps_with_malformed_rpps_part_is_error() -> None:
    found = errors(fi.check_resource(practitioner((fi.ID_NAT_PS, "8" + "1000354321"))))
    assert [i.expression for i in found] == ["Practitioner.identifier[0].value"]


def test_idnatps_not_based_on_rpps_is_not_compared() -> None:
    # idNatPs = "0" + ADELI for professionals without an RPPS number.
    resource = practitioner((fi.ID_NAT_PS, "0751234567"), (fi.RPPS, RPPS_VALUE))
    assert fi.check_resource(resource) == []


def test_idnatps_without_rpps_identifier_only_checks_format() -> None:
    assert fi.check_resource(practitioner((fi.ID_NAT_PS, "8" + RPPS_VALUE))) == []


# -- FINESS / idNatSt ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [FINESS_VALUE, "2A0000011", "2B0000011"])
def test_finess_of_9_characters_passes(value: str) -> None:
    assert fi.check_finess(value) is None


@pytest.mark.parametrize("value", ["3300001", "3300000190", "2C0000011", "33000001A", "33000001\uff19"])
def test_malformed_finess_fails(value: str) -> None:
    assert fi.check_finess(value) is not None


def test_organization_with_malformed_finess_is_error_at_its_value() -> None:
    found = errors(fi.check_resource(organization(("urn:example", "x"), (fi.FINESS, "3300001"))))
    assert [(i.code, i.expression) for i in found] == [("value", "Organization.identifier[1].value")]


def test_idnatst_equal_to_1_plus_finess_passes() -> None:
    resource = organization((fi.ID_NAT_ST, "1" + FINESS_VALUE), (fi.FINESS, FINESS_VALUE))
    assert fi.check_resource(resource) == []


def test_idnatst_not_matching_finess_is_error_at_idnatst_value() -> None:
    resource = organization((fi.FINESS, FINESS_VALUE), (fi.ID_NAT_ST, "1330000027"))
    found = errors(fi.check_resource(resource))
    assert [(i.code, i.expression) for i in found] == [("business-rule", "Organization.identifier[1].value")]


def test_idnatst_based_on_siret_is_not_compared_with_finess() -> None:
    resource = organization((fi.ID_NAT_ST, "312345678900012"), (fi.FINESS, FINESS_VALUE))
    assert fi.check_resource(resource) == []
