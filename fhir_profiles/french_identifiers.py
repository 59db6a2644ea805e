"""French national identifiers: INS (NIR/NIA), RPPS, idNatPs, FINESS, idNatSt.

These rules apply to every resource whatever profile it claims (a wrong INS attached to the
wrong patient is a patient-safety incident). Sources: ANS "Référentiel INS" (NIR/NIA structure,
key = 97 - (number mod 97), Corsica 2A/2B read as 19/18 for the computation), FR Core 2.1.0
identifier systems (INS-NIR …4.8, INS-NIA …4.9, INS-NIR-TEST …4.10, INS-NIR-DEMO …4.11; RPPS
11 digits; idNatPs = "8" + RPPS; idNatSt = "1" + FINESS). RPPS and FINESS are checked for
format only: we found no official ANS statement of a check-digit rule.

The NSS (billing NIR, FR Core Patient slice NSS: type v2-0203#NH) shares the INS-NIR OID …4.8: it
is a NIR (format and key are checked) but not an INS (no identity-status rule). Digits are ASCII
only: ``str.isdigit`` and the regex digit class accept other scripts' digits, which ``int()``
reads as the same number.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from fhir_profiles.issues import ValidationIssue

INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
INS_NIA = "urn:oid:1.2.250.1.213.1.4.9"
INS_NIR_TEST = "urn:oid:1.2.250.1.213.1.4.10"
INS_NIA_TEST = "urn:oid:1.2.250.1.213.1.4.11"
INS_SYSTEMS = {INS_NIR, INS_NIA, INS_NIR_TEST, INS_NIA_TEST}
RPPS = "https://rpps.esante.gouv.fr"
ID_NAT_PS = "urn:oid:1.2.250.1.71.4.2.1"
FINESS = "https://finess.esante.gouv.fr"
ID_NAT_ST = "urn:oid:1.2.250.1.71.4.2.2"
RELIABILITY_URL = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
RELIABILITY_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445"
TRUSTED_STATUSES = {"VALI", "QUAL"}
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
FR_V2_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"

# Sex (1, 2; 3, 4, 7, 8 for special/temporary registrations), year, month (01-12, or 20-42 / 50+
# for unknown or pseudo months), department (2 digits, 2A, 2B), commune (3), order number (3).
_NIR = re.compile(r"[123478][0-9]{2}(0[1-9]|1[0-2]|[2-9][0-9])([0-9]{2}|2[AB])[0-9]{6}")
_KEY = re.compile(r"[0-9]{2}")
_RPPS = re.compile(r"[0-9]{11}")
_FINESS = re.compile(r"([0-9]{2}|2[AB])[0-9]{7}")


def nir_key(number13: str) -> int:
    """INS key: 97 - (number mod 97), Corsica 2A -> 19 and 2B -> 18 for the computation."""
    digits = number13[:5] + number13[5:7].replace("2A", "19").replace("2B", "18") + number13[7:]
    return 97 - int(digits) % 97


def check_nir(value: str) -> str | None:
    """None when ``value`` is a well-formed NIR/NIA with a correct key, else the reason."""
    if len(value) != 15:
        return f"must be 15 characters (13 + a 2-digit key), got {len(value)}"
    number, key = value[:13], value[13:]
    if not _NIR.fullmatch(number):
        return (
            "the first 13 characters are not a valid NIR/NIA (sex, year, month, department, commune, order)"
        )
    if not _KEY.fullmatch(key):
        return "the key (last 2 characters) must be digits"
    expected = nir_key(number)
    if int(key) != expected:
        return f"wrong key {key}: expected {expected:02d}"
    return None


def check_rpps(value: str) -> str | None:
    # Format only: no official ANS source we could find states a check-digit rule for RPPS.
    if not _RPPS.fullmatch(value):
        return "an RPPS number is 11 digits"
    return None


def check_finess(value: str) -> str | None:
    # Format only (9 characters; Corsica 2A/2B), for the same reason as RPPS.
    if not _FINESS.fullmatch(value):
        return "a FINESS number is 9 characters: a 2-character department (2A/2B allowed) then 7 digits"
    return None


def _identifiers(resource: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    for index, identifier in enumerate(resource.get("identifier") or []):
        if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
            yield index, identifier


def identity_statuses(resource: dict[str, Any]) -> set[str]:
    """Codes (of fr-core-cs-v2-0445) of the FR Core identity-reliability extension(s) on a Patient."""
    statuses: set[str] = set()
    for extension in resource.get("extension") or []:
        if not isinstance(extension, dict) or extension.get("url") != RELIABILITY_URL:
            continue
        for sub in extension.get("extension") or []:
            if isinstance(sub, dict) and sub.get("url") == "identityStatus":
                coding = sub.get("valueCoding") or {}
                if (
                    isinstance(coding, dict)
                    and coding.get("system") == RELIABILITY_SYSTEM
                    and isinstance(coding.get("code"), str)
                ):
                    statuses.add(coding["code"])
    return statuses


def _is_nss(identifier: dict[str, Any]) -> bool:
    """An NSS (type v2-0203#NH) under the NIR OID, which FR Core shares between NSS and INS-NIR."""
    if identifier.get("system") != INS_NIR:
        return False
    type_ = identifier.get("type")
    codings = type_.get("coding") if isinstance(type_, dict) else None
    pairs = [(c.get("system"), c.get("code")) for c in codings or [] if isinstance(c, dict)]
    return (V2_0203, "NH") in pairs and not any(
        system == FR_V2_0203 and isinstance(code, str) and code.startswith("INS-") for system, code in pairs
    )


def check_resource(resource: dict[str, Any], root: str | None = None) -> list[ValidationIssue]:
    """All French identifier findings for one resource."""
    resource_type = str(resource.get("resourceType", ""))
    root = root or resource_type
    issues: list[ValidationIssue] = []
    by_system: dict[str, list[tuple[int, str]]] = {}
    ins_indexes: list[int] = []
    for index, identifier in _identifiers(resource):
        system, value = identifier.get("system"), identifier["value"]
        where = f"{root}.identifier[{index}].value"
        by_system.setdefault(str(system), []).append((index, value))
        reason = None
        if system in INS_SYSTEMS and _is_nss(identifier):
            reason, label = check_nir(value), "NSS (NIR)"
        elif system in INS_SYSTEMS:
            ins_indexes.append(index)
            reason = check_nir(value)
            label = "INS (NIR/NIA)"
        elif system == RPPS:
            reason, label = check_rpps(value), "RPPS"
        elif system == ID_NAT_PS and value.startswith("8"):
            reason, label = check_rpps(value[1:]), "idNatPs (8 + RPPS)"
        elif system == FINESS:
            reason, label = check_finess(value), "FINESS"
        elif system == ID_NAT_ST and value.startswith("1"):
            reason, label = check_finess(value[1:]), "idNatSt (1 + FINESS)"
        if reason:
            issues.append(ValidationIssue("error", "value", f"Invalid {label} '{value}': {reason}", where))
    issues += _consistency(by_system, root)
    if resource_type == "Patient" and ins_indexes:
        statuses = identity_statuses(resource)
        if not statuses & TRUSTED_STATUSES:
            index = ins_indexes[0]
            shown = ", ".join(sorted(statuses)) or "none"
            issues.append(
                ValidationIssue(
                    "error",
                    "business-rule",
                    "An INS may only be attached to a Patient whose identity is validated (VALI) or "
                    f"qualified (QUAL) per the fr-core-identity-reliability extension; status: {shown}",
                    f"{root}.identifier[{index}]",
                )
            )
    return issues


def _consistency(by_system: dict[str, list[tuple[int, str]]], root: str) -> list[ValidationIssue]:
    issues = []
    pairs = ((RPPS, ID_NAT_PS, "8", "idNatPs", "RPPS"), (FINESS, ID_NAT_ST, "1", "idNatSt", "FINESS"))
    for base_system, national_system, prefix, national, base in pairs:
        bases = {value for _, value in by_system.get(base_system, [])}
        if not bases:
            continue
        for index, value in by_system.get(national_system, []):
            if value.startswith(prefix) and value[1:] not in bases:
                issues.append(
                    ValidationIssue(
                        "error",
                        "business-rule",
                        f"{national} '{value}' does not match the {base} identifier "
                        f"({', '.join(sorted(bases))}): it must be '{prefix}' followed by the {base} number",
                        f"{root}.identifier[{index}].value",
                    )
                )
    return issues
