"""Native Python versions of invariants shipped in our StructureDefinitions.

fhirpathpy takes 0.5-2 ms per invariant on a Patient, which would more than double the cost of a
write; these functions implement exactly the FHIRPath expressions of the same keys (kept in the
data, where they document the rule) and the validator uses them instead. Each returns the
FHIRPath result shape: ``[True]`` or ``[False]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fhir_profiles.french_identifiers import (
    FINESS,
    ID_NAT_PS,
    INS_NIA,
    INS_NIA_TEST,
    INS_NIR,
    INS_NIR_TEST,
    RELIABILITY_SYSTEM,
    RELIABILITY_URL,
    RPPS,
)

V2_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
INS_TYPE_CODES = {"INS-NIR", "INS-NIA", "INS-NIR-TEST", "INS-NIR-DEMO"}
_NIR_SHAPE = re.compile(r"^[0-9]{5}(2[AB]|[0-9]{2})[0-9]{8}$")


def _identifiers(node: Any, *systems: str) -> list[dict[str, Any]]:
    items = node.get("identifier") if isinstance(node, dict) else None
    return [i for i in items or [] if isinstance(i, dict) and (not systems or i.get("system") in systems)]


def _status_codings(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for extension in node.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == RELIABILITY_URL:
            for sub in extension.get("extension") or []:
                if isinstance(sub, dict) and sub.get("url") == "identityStatus":
                    coding = sub.get("valueCoding")
                    if isinstance(coding, dict):
                        out.append(coding)
    return out


def fr_core_1(node: dict[str, Any]) -> bool:
    """VALI status implies an INS identifier (systems …4.8 to …4.11)."""
    vali = any(c.get("code") == "VALI" for c in _status_codings(node))
    return not vali or bool(_identifiers(node, INS_NIR, INS_NIA, INS_NIR_TEST, INS_NIA_TEST))


def cpts_ins_1(node: dict[str, Any]) -> bool:
    """An INS (by type code, or systems …4.9-…4.11) implies status VALI or QUAL."""
    has_ins = False
    for identifier in _identifiers(node):
        codings = (identifier.get("type") or {}).get("coding") or []
        typed = any(
            isinstance(c, dict) and c.get("system") == V2_0203 and c.get("code") in INS_TYPE_CODES
            for c in codings
        )
        if typed or identifier.get("system") in {INS_NIA, INS_NIR_TEST, INS_NIA_TEST}:
            has_ins = True
    trusted = any(
        c.get("system") == RELIABILITY_SYSTEM and c.get("code") in {"VALI", "QUAL"}
        for c in _status_codings(node)
    )
    return not has_ins or trusted


def cpts_ins_2(node: dict[str, Any]) -> bool:
    """Every NIR-based INS has the NIR shape and a valid key."""
    for identifier in _identifiers(node, INS_NIR, INS_NIR_TEST, INS_NIA_TEST):
        value = identifier.get("value")
        if not isinstance(value, str) or not _NIR_SHAPE.fullmatch(value):
            return False
        digits = value[:13].replace("2A", "19").replace("2B", "18")
        if 97 - int(digits) % 97 != int(value[13:15]):
            return False
    return True


def cpts_org_1(node: dict[str, Any]) -> bool:
    return all(
        isinstance(i.get("value"), str) and re.fullmatch(r"([0-9]{2}|2[AB])[0-9]{7}", i["value"])
        for i in _identifiers(node, FINESS)
    )


def cpts_prat_1(node: dict[str, Any]) -> bool:
    return all(
        isinstance(i.get("value"), str) and re.fullmatch(r"[0-9]{11}", i["value"])
        for i in _identifiers(node, RPPS)
    )


def cpts_prat_2(node: dict[str, Any]) -> bool:
    national, rpps = _identifiers(node, ID_NAT_PS), _identifiers(node, RPPS)
    if not (national and rpps):
        return True
    first = national[0].get("value")
    if not isinstance(first, str):
        return True  # FHIRPath: startsWith() on an empty collection is empty, and so is the implication
    return first.startswith("8") and first[1:] in {i.get("value") for i in rpps}


NATIVE: dict[str, Callable[[dict[str, Any]], bool]] = {
    "fr-core-1": fr_core_1,
    "cpts-ins-1": cpts_ins_1,
    "cpts-ins-2": cpts_ins_2,
    "cpts-org-1": cpts_org_1,
    "cpts-prat-1": cpts_prat_1,
    "cpts-prat-2": cpts_prat_2,
}


def native_check(key: str) -> Callable[[Any], list[bool]] | None:
    function = NATIVE.get(key)
    if function is None:
        return None
    return lambda node: [function(node)] if isinstance(node, dict) else []
