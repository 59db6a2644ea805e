"""Turn a resource into search-index rows, one table per search parameter type (R4 search.html)."""

from __future__ import annotations

import logging
import unicodedata
from collections import defaultdict
from decimal import Decimal
from functools import cache
from typing import Any

from coordination_api.search.dates import MAX_US, MIN_US, InvalidDateError, parse_range
from coordination_api.search.registry import SearchParam, SearchRegistry
from fhir_profiles import patient_compartment, reference_elements

log = logging.getLogger(__name__)

Rows = dict[str, list[dict[str, Any]]]

# Column widths of the index tables: longer values are stored cut, and searched cut the same way.
TEXT_LIMIT = 255
URL_LIMIT = 512

_STRING_PARTS = (
    "family",
    "given",
    "prefix",
    "suffix",
    "text",
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
)


def normalize(text: str, limit: int = TEXT_LIMIT) -> str:
    """Case- and accent-insensitive form used by string search (R4 search.html#string)."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())[:limit]


def cut(value: Any, limit: int = TEXT_LIMIT) -> str | None:
    if value is None:
        return None
    return str(value)[:limit]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        out: list[str] = []
        for key in _STRING_PARTS:
            part = value.get(key)
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, list):
                out.extend(p for p in part if isinstance(p, str))
        return out
    return []


def _tokens(value: Any) -> list[tuple[str | None, str | None, str | None]]:
    """(system, code, text) triples for Coding, CodeableConcept, Identifier, ContactPoint, primitives."""
    if isinstance(value, bool):
        return [(None, "true" if value else "false", None)]
    if isinstance(value, str | int | Decimal):
        return [(None, str(value), None)]
    if not isinstance(value, dict):
        return []
    if "coding" in value or ("text" in value and "system" not in value and "value" not in value):
        # CodeableConcept: one row per Coding (its display for :text), plus one for the concept's
        # own text, so that :text finds either CodeableConcept.text or Coding.display.
        out: list[tuple[str | None, str | None, str | None]] = [
            (c.get("system"), c.get("code"), c.get("display"))
            for c in value.get("coding", [])
            if isinstance(c, dict)
        ]
        text = value.get("text")
        if isinstance(text, str):
            out.append((None, None, text))
        return out
    if "code" in value or ("system" in value and "value" not in value):
        return [(value.get("system"), value.get("code"), value.get("display"))]
    if "value" in value:  # Identifier or ContactPoint
        type_text = None
        if isinstance(value.get("type"), dict):
            type_text = value["type"].get("text")
        system = value.get("system")
        if system in {"phone", "fax", "email", "pager", "url", "sms", "other"}:  # ContactPoint
            system = None
        return [(system, value.get("value"), type_text)]
    return []


def _dates(value: Any) -> list[tuple[int, int]]:
    if isinstance(value, str):
        return [parse_range(value)]
    if not isinstance(value, dict):
        return []
    if "start" in value or "end" in value:  # Period
        low = parse_range(value["start"])[0] if value.get("start") else MIN_US
        high = parse_range(value["end"])[1] if value.get("end") else MAX_US
        return [(low, high)]
    out: list[tuple[int, int]] = []
    for event in value.get("event", []):  # Timing
        if isinstance(event, str):
            out.append(parse_range(event))
    repeat = value.get("repeat")
    if isinstance(repeat, dict) and isinstance(repeat.get("boundsPeriod"), dict):
        out.extend(_dates(repeat["boundsPeriod"]))
    return out


def parse_reference(ref: str) -> tuple[str | None, str | None, str | None]:
    """(type, id, url) of a reference string; relative ones give type/id, absolute ones the url."""
    base = ref.split("/_history/")[0]
    if base.startswith("#"):
        return None, None, None
    if "://" in base or base.startswith("urn:"):
        return None, None, base.split("|")[0][:URL_LIMIT]
    segments = base.split("/")
    if len(segments) == 2 and segments[0] and segments[1]:
        return segments[0][:64], segments[1][:64], None
    return None, None, base[:URL_LIMIT]


def _references(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):  # canonical / uri used as a reference
        _t, _i, url = parse_reference(value)
        return [
            {
                "target_type": _t,
                "target_id": _i,
                "target_url": url,
                "identifier_system": None,
                "identifier_value": None,
            }
        ]
    if not isinstance(value, dict):
        return []
    ref = value.get("reference")
    target_type = target_id = url = None
    if isinstance(ref, str):
        target_type, target_id, url = parse_reference(ref)
        if target_type is None and url is None:
            return []  # contained reference
    raw_identifier = value.get("identifier")
    identifier: dict[str, Any] = raw_identifier if isinstance(raw_identifier, dict) else {}
    if not ref and not identifier:
        return []
    if target_type is None and isinstance(value.get("type"), str) and not url:
        target_type = value["type"]
    return [
        {
            "target_type": target_type,
            "target_id": target_id,
            "target_url": url,
            "identifier_system": cut(identifier.get("system")),
            "identifier_value": cut(identifier.get("value")),
        }
    ]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _quantities(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, dict):
        return []
    if "low" in value or "high" in value:  # Range
        low = _number((value.get("low") or {}).get("value"))
        high = _number((value.get("high") or {}).get("value"))
        unit_src = value.get("low") or value.get("high") or {}
        if low is None and high is None:
            return []
        return [
            {
                "value": low if low is not None else high,
                "low": low if low is not None else float("-inf"),
                "high": high if high is not None else float("inf"),
                "system": cut(unit_src.get("system")),
                "code": cut(unit_src.get("code")),
                "unit": cut(unit_src.get("unit")),
            }
        ]
    number = _number(value.get("value"))
    if number is None:
        return []
    code = value.get("code") or value.get("currency")
    system = value.get("system") or ("urn:iso:std:iso:4217" if value.get("currency") else None)
    return [
        {
            "value": number,
            "low": number,
            "high": number,
            "system": cut(system),
            "code": cut(code),
            "unit": cut(value.get("unit")),
        }
    ]


def index_rows(registry: SearchRegistry, resource_type: str, resource: dict[str, Any]) -> Rows:
    """All index rows for one resource, keyed by index kind (without res_pk)."""
    rows: Rows = defaultdict(list)
    for param in registry.indexed(resource_type):
        try:
            values = param.extract(resource)
        except Exception as exc:  # noqa: BLE001 - fhirpathpy raises bare Exception on unsupported functions
            log.debug("search parameter %s not evaluable: %s", param.code, exc)
            continue
        if not values:
            continue
        if param.type == "composite":
            _add_composite_rows(rows, param, resource_type, resource, values)
        else:
            _add_rows(rows, param, resource_type, values)
            if identifier_param(param):
                _of_type_rows(rows, param, resource_type, values)
    _add_compartment_rows(rows, resource_type, resource)
    for kind, kind_rows in rows.items():  # one column set per table (executemany, COPY)
        if kind != "compartment":
            for row in kind_rows:
                row.setdefault("elem", None)
    return rows


def composite_rows(registry: SearchRegistry, resource_type: str, resource: dict[str, Any]) -> Rows:
    """The rows of the composite parameters and of ``:of-type`` only (to backfill them, migration 0014)."""
    rows: Rows = defaultdict(list)
    for param in registry.indexed(resource_type):
        if identifier_param(param):
            try:
                values = param.extract(resource)
            except Exception as exc:  # noqa: BLE001 - fhirpathpy raises bare Exception
                log.debug("search parameter %s not evaluable: %s", param.code, exc)
                continue
            _of_type_rows(rows, param, resource_type, values)
        elif param.type == "composite":
            try:
                elements = param.extract(resource)
            except Exception as exc:  # noqa: BLE001 - fhirpathpy raises bare Exception
                log.debug("search parameter %s not evaluable: %s", param.code, exc)
                continue
            _add_composite_rows(rows, param, resource_type, resource, elements)
    return rows


def of_type_param(code: str, index: int) -> str:
    """The index ``param`` of the rows ``:of-type`` searches: 0 the Identifier's type codings, 1 its
    value, rows of one Identifier sharing ``elem`` (R4 search.html#token)."""
    return component_param(f"{code}:of-type", index)


def _of_type_rows(rows: Rows, param: SearchParam, resource_type: str, values: list[Any]) -> None:
    ordinal = 0
    for value in values:
        if not isinstance(value, dict) or not isinstance(value.get("value"), str):
            continue
        kind = value.get("type")
        codings = kind.get("coding") if isinstance(kind, dict) else None
        if not isinstance(codings, list):
            continue
        typed = [c for c in codings if isinstance(c, dict) and isinstance(c.get("code"), str)]
        if not typed:
            continue
        common = {"res_type": resource_type, "elem": ordinal, "text_norm": None}
        for coding in typed:
            rows["token"].append(
                {
                    **common,
                    "param": of_type_param(param.code, 0),
                    "system": cut(coding.get("system")),
                    "code": cut(coding["code"]),
                }
            )
        rows["token"].append(
            {**common, "param": of_type_param(param.code, 1), "system": None, "code": cut(value["value"])}
        )
        ordinal += 1


def identifier_param(param: SearchParam) -> bool:
    """Token parameters that may hold Identifiers (the ones ``:of-type`` applies to)."""
    return param.type == "token" and "identifier" in param.expression.lower()


def component_param(code: str, index: int) -> str:
    """The index ``param`` of a composite's component rows: ``code-value-quantity$1``."""
    return f"{code}${index}"


def _add_composite_rows(
    rows: Rows, param: SearchParam, resource_type: str, resource: dict[str, Any], elements: list[Any]
) -> None:
    """Rows of each component, tagged with the ordinal of the element they came from, so that a
    search matches components of the same element only (R4 search.html#composite)."""
    for ordinal, element in enumerate(elements):
        try:
            values = [c.extractor(element, resource) for c in param.components]
        except Exception as exc:  # noqa: BLE001 - fhirpathpy raises bare Exception
            log.debug("composite %s not evaluable: %s", param.code, exc)
            return
        if not all(values):  # an element without every component can match no composite value
            continue
        for index, (component, found) in enumerate(zip(param.components, values, strict=True)):
            _add_rows(
                rows, param, resource_type, found, component.type, component_param(param.code, index), ordinal
            )


@cache
def _compartment_params() -> dict[str, frozenset[str]]:
    """Resource type -> the search parameters that put it in a Patient's compartment."""
    return {
        entry["code"]: frozenset(entry["param"])
        for entry in patient_compartment().get("resource", [])
        if entry.get("param")
    }


# A compartment row for a patient this server cannot name: a reference to a Patient by identifier only,
# conditionally or on another server, a contained Patient, a Binary without a (known) securityContext, a
# followed resource that is not (yet) here. No care team reaches it, so such a resource is for system
# clients only (deny by default), never for every practitioner.
UNRESOLVED = "#unresolved"
# The reference row through which a Binary follows its securityContext (not a search parameter).
SECURITY_CONTEXT = "security-context"
# The reference rows through which any other resource follows what a Reference(Any) element of it
# points at (Provenance.target, AuditEvent.entity.what, Linkage.item.resource, ...), and the compartment
# rows it gets from them (the repository keeps these in step with the followed resources).
FOLLOWS = "#follows"
# Compartment rows of a resource that names a Patient outside the CompartmentDefinition's parameters.
NAMES_PATIENT = "#reference"


def outside_compartments(resource_type: str) -> bool:
    """True for types the R4 Patient CompartmentDefinition (with our additions) never lists, e.g.
    Organization, Device, Provenance: the scope of a Patient-level export (bulk data export.html).
    Not an access rule: any resource that names or follows a patient is in that patient's
    compartment (``compartment_rule``), whatever its type."""
    return resource_type not in ("Patient", "Binary", "Bundle") and resource_type not in _compartment_params()


@cache
def follow_paths(resource_type: str) -> tuple[tuple[str, ...], ...]:
    """Element paths (JSON keys) of the type's Reference(Any) elements, from the R4 StructureDefinitions
    (a choice ``value[x]`` is read as ``valueReference``); Binary.securityContext is the Binary's own."""
    out = []
    for path, targets in reference_elements().get(resource_type, ()):
        if "Resource" not in targets or not path or (resource_type, path) == ("Binary", "securityContext"):
            continue
        out.append(tuple(p[:-3] + "Reference" if p.endswith("[x]") else p for p in path.split(".")))
    return tuple(out)


def binary_context(resource: dict[str, Any]) -> tuple[str, str] | None:
    """(type, id) of a Binary's local securityContext, None if it has none (or a foreign one)."""
    refs = _references(resource.get("securityContext"))
    if not refs or not refs[0]["target_type"] or not refs[0]["target_id"]:
        return None
    return refs[0]["target_type"], refs[0]["target_id"]


def _at(value: Any, path: tuple[str, ...]) -> list[Any]:
    """The values at a JSON path (lists flattened at every step)."""
    values = [value]
    for key in path:
        step: list[Any] = []
        for v in values:
            got = v.get(key) if isinstance(v, dict) else None
            if isinstance(got, list):
                step.extend(got)
            elif got is not None:
                step.append(got)
        values = step
    return values


def named_patients(resource: dict[str, Any]) -> set[str]:
    """Every patient the resource names anywhere in its body (extensions and contained resources
    included): ``Patient/<id>``, or UNRESOLVED for one this server cannot name."""
    found: set[str] = set()

    def walk(value: Any, root: bool) -> None:
        if isinstance(value, list):
            for item in value:
                walk(item, False)
            return
        if not isinstance(value, dict):
            return
        if not root and value.get("resourceType") == "Patient":
            found.add(UNRESOLVED)  # a contained Patient: no care team of ours covers it
        ref = value.get("reference")
        by_identifier = value.get("type") == "Patient" and isinstance(value.get("identifier"), dict)
        if isinstance(ref, str) or by_identifier:
            if isinstance(ref, str) and ref.startswith("Patient?"):
                found.add(UNRESOLVED)  # a conditional reference left unresolved
            for row in _references(value):
                if row["target_type"] == "Patient":
                    found.add(row["target_id"] or UNRESOLVED)
                elif "/Patient/" in (row["target_url"] or ""):
                    found.add(UNRESOLVED)
        for item in value.values():
            if isinstance(item, dict | list):
                walk(item, False)

    walk(resource, True)
    return found


def followed(resource_type: str, resource: dict[str, Any]) -> list[tuple[str, str]]:
    """(type, id) of the local resources the type's Reference(Any) elements point at, Patients aside
    (those are named patients). A reference that is not local (foreign, identifier only) is there as
    None: it follows nothing this server holds."""
    out: dict[tuple[str, str], None] = {}
    for path in follow_paths(resource_type):
        for value in _at(resource, path):
            for row in _references(value) if isinstance(value, dict) else []:
                target = (row["target_type"], row["target_id"])
                if target[0] and target[1] and target[0] != "Patient":
                    out[(target[0], target[1])] = None
    return list(out)


def named_rows(resource_type: str, resource: dict[str, Any]) -> Rows:
    """The compartment and follow rows a resource gets without its search-parameter rows (for a
    migration): the patients it names, the resources it follows."""
    rows: Rows = defaultdict(list)
    _add_compartment_rows(rows, resource_type, resource)
    return rows


def _add_compartment_rows(rows: Rows, resource_type: str, resource: dict[str, Any]) -> None:
    """The patients whose compartment holds this resource (a Patient is in its own).

    The rule (docs/security.md): the compartments of the CompartmentDefinition's parameters when the
    type is listed, plus every patient the resource names anywhere, plus the compartments of what its
    Reference(Any) elements point at (the repository resolves those: FOLLOWS rows)."""
    if resource_type == "Bundle":
        # A stored Bundle (a document, a message) is in no compartment by definition, yet it may carry
        # any patient's data: for system clients only, unless it holds nothing a compartment could.
        raw = resource.get("entry")
        entries: list[Any] = raw if isinstance(raw, list) else []
        kinds = {
            e["resource"].get("resourceType")
            for e in entries
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
        }
        if named_patients(resource) or any(
            k in ("Patient", "Binary") or k in _compartment_params() or follow_paths(str(k)) for k in kinds
        ):
            rows["compartment"].append({"res_type": "Bundle", "param": "entry", "patient_id": UNRESOLVED})
        return
    patients: set[tuple[str, str]] = set()
    if resource_type == "Binary":
        context = binary_context(resource)
        if context is None:
            patients.add((SECURITY_CONTEXT, UNRESOLVED))
        elif context[0] == "Patient":
            patients.add((SECURITY_CONTEXT, context[1]))
        targets = [context] if context is not None and context[0] != "Patient" else []
        param = SECURITY_CONTEXT
    else:
        targets = followed(resource_type, resource)
        param = FOLLOWS
    for target_type, target_id in targets:  # the compartments themselves are the repository's
        rows["reference"].append(
            {
                "res_type": resource_type,
                "param": param,
                "target_type": target_type,
                "target_id": target_id,
                "target_url": None,
                "identifier_system": None,
                "identifier_value": None,
            }
        )
    params = _compartment_params().get(resource_type, frozenset())
    patients |= {
        (row["param"], row["target_id"])
        for row in rows.get("reference", [])
        if row["param"] in params and row.get("target_type") == "Patient" and row.get("target_id")
    }
    patients |= {
        (row["param"], UNRESOLVED)
        for row in rows.get("reference", [])
        if row["param"] in params
        and not row.get("target_id")
        and (row.get("target_type") == "Patient" or "/Patient/" in (row.get("target_url") or ""))
    }
    if resource_type == "Patient" and resource.get("id"):
        patients.add(("_id", resource["id"]))
    held = {p for _param, p in patients}
    patients |= {(NAMES_PATIENT, p) for p in named_patients(resource) if p not in held}
    for param, patient_id in sorted(patients):
        rows["compartment"].append({"res_type": resource_type, "param": param, "patient_id": patient_id})


def _add_rows(
    rows: Rows,
    param: SearchParam,
    resource_type: str,
    values: list[Any],
    kind: str | None = None,
    code: str | None = None,
    elem: int | None = None,
) -> None:
    common = {"res_type": resource_type, "param": code or param.code, "elem": elem}
    kind = kind or param.type
    seen: set[tuple[Any, ...]] = set()

    def add(table: str, row: dict[str, Any]) -> None:
        key = (table, *row.values())
        if key not in seen:
            seen.add(key)
            rows[table].append({**common, **row})

    for value in values:
        if kind == "string":
            for part in _strings(value):
                add("string", {"value_norm": normalize(part), "value_exact": part})
        elif kind == "token":
            for system, code, text in _tokens(value):
                add(
                    "token",
                    {
                        "system": cut(system),
                        "code": cut(code),
                        "text_norm": normalize(text) if isinstance(text, str) else None,
                    },
                )
        elif kind == "date":
            try:
                for low, high in _dates(value):
                    add("date", {"low": low, "high": high})
            except InvalidDateError:
                continue
        elif kind == "reference":
            for ref in _references(value):
                add("reference", ref)
        elif kind == "number":
            number = _number(value)
            if number is not None:
                add("number", {"value": number, "low": number, "high": number})
        elif kind == "quantity":
            for quantity in _quantities(value):
                add("quantity", quantity)
        elif kind == "uri" and isinstance(value, str):
            add("uri", {"value": value[:URL_LIMIT]})
