"""Minimal instances of R4 resource types built from the R4 StructureDefinitions shipped in
fhir_profiles/data/r4-core (required elements only, a code from each required binding's value set),
and a Reference placed at any element path of them."""

from __future__ import annotations

import gzip
import json
from functools import cache
from typing import Any

from fhir_profiles import DATA_DIR


@cache
def _sds() -> dict[str, dict[str, Any]]:
    with gzip.open(DATA_DIR / "r4-core" / "profiles-resources.json.gz", "rt", encoding="utf-8") as h:
        bundle = json.load(h)
    return {
        e["resource"]["type"]: e["resource"]
        for e in bundle["entry"]
        if e["resource"].get("resourceType") == "StructureDefinition"
        and e["resource"].get("kind") == "resource"
        and e["resource"].get("derivation") != "constraint"
    }


@cache
def _codes() -> dict[str, str]:
    """ValueSet url -> a code in it (first concept of its first include, or of the CodeSystem)."""
    with gzip.open(DATA_DIR / "r4-core" / "valuesets.json.gz", "rt", encoding="utf-8") as h:
        bundle = json.load(h)
    systems = {}
    sets = {}
    for e in bundle["entry"]:
        r = e["resource"]
        if r["resourceType"] == "CodeSystem" and r.get("concept"):
            systems[r["url"]] = r["concept"][0]["code"]
        elif r["resourceType"] == "ValueSet":
            sets[r["url"]] = r
    out = {}
    for url, vs in sets.items():
        for inc in vs.get("compose", {}).get("include", []):
            if inc.get("concept"):
                out[url] = inc["concept"][0]["code"]
                break
            if inc.get("system") in systems:
                out[url] = systems[inc["system"]]
                break
    return out


PRIMITIVE = {
    "string": "x",
    "markdown": "x",
    "uri": "http://example.org/x",
    "url": "http://example.org/x",
    "canonical": "http://example.org/x",
    "oid": "urn:oid:1.2.3",
    "uuid": "urn:uuid:2f1c6a3e-9d4e-4a4b-8c8b-1d2e3f4a5b6c",
    "id": "x1",
    "dateTime": "2024-01-01T00:00:00Z",
    "instant": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "10:00:00",
    "boolean": True,
    "integer": 1,
    "positiveInt": 1,
    "unsignedInt": 1,
    "decimal": 1,
    "base64Binary": "eA==",
}
COMPLEX = {
    "CodeableConcept": {"text": "x"},
    "Coding": {"system": "http://example.org", "code": "x"},
    "Identifier": {"value": "x"},
    "Period": {"start": "2024-01-01"},
    "Quantity": {"value": 1},
    "Money": {"value": 1, "currency": "EUR"},
    "Attachment": {"contentType": "text/plain"},
    "Annotation": {"text": "x"},
    "Reference": {"display": "x"},
    "SimpleQuantity": {"value": 1},
    "Duration": {"value": 1},
    "Age": {"value": 1},
    "Range": {"low": {"value": 1}},
    "Timing": {"event": ["2024-01-01"]},
    "HumanName": {"family": "x"},
    "Address": {"city": "x"},
    "ContactPoint": {"system": "phone", "value": "1"},
    "Signature": {
        "type": [{"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1"}],
        "when": "2024-01-01T00:00:00Z",
        "who": {"display": "x"},
    },
    "Ratio": {"numerator": {"value": 1}},
    "SampledData": {"origin": {"value": 1}, "period": 1, "dimensions": 1},
    "Dosage": {"text": "x"},
    "RelatedArtifact": {"type": "citation"},
    "Expression": {"language": "text/cql"},
    "UsageContext": {
        "code": {"system": "http://example.org", "code": "x"},
        "valueCodeableConcept": {"text": "x"},
    },
    "DataRequirement": {"type": "Patient"},
    "TriggerDefinition": {"type": "named-event", "name": "x"},
    "ContactDetail": {"name": "x"},
    "Count": {"value": 1},
    "Distance": {"value": 1},
}


def _value(sd: dict[str, Any], element: dict[str, Any]) -> Any:
    kind = element["type"][0]["code"]
    if kind == "code":
        vs = element.get("binding", {}).get("valueSet", "").split("|")[0]
        return _codes().get(vs, "x")
    if kind in PRIMITIVE:
        return PRIMITIVE[kind]
    if kind in ("BackboneElement", "Element"):
        return _fill(sd, element["path"])
    if kind in COMPLEX:
        return json.loads(json.dumps(COMPLEX[kind]))
    raise LookupError(f"no minimal value for {kind} at {element['path']}")


def _key(element: dict[str, Any]) -> str:
    name = element["path"].rsplit(".", 1)[-1]
    if name.endswith("[x]"):
        kind = element["type"][0]["code"]
        return name[:-3] + kind[0].upper() + kind[1:]
    return name


def _fill(sd: dict[str, Any], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for element in sd["snapshot"]["element"]:
        p = element["path"]
        if (
            p.rsplit(".", 1)[0] != path
            or "." not in p
            or element.get("min", 0) < 1
            or not element.get("type")
        ):
            continue
        if element.get("contentReference"):
            continue
        value = _value(sd, element)
        out[_key(element)] = [value] if element.get("max") != "1" else value
    return out


def minimal(res_type: str) -> dict[str, Any]:
    sd = _sds()[res_type]
    return _invariants(res_type, {"resourceType": res_type, **_fill(sd, res_type)})


def place(res_type: str, body: dict[str, Any], path: str, ref: dict[str, Any]) -> dict[str, Any]:
    """``body`` with ``ref`` at ``path`` (parents filled minimally)."""
    sd = _sds()[res_type]
    elements = {e["path"]: e for e in sd["snapshot"]["element"]}
    parts = path.split(".")
    node = body
    for i, part in enumerate(parts):
        full = ".".join([res_type, *parts[: i + 1]])
        element = elements[full]
        many = element.get("max") != "1"
        key = part[:-3] + "Reference" if part.endswith("[x]") else part
        if i == len(parts) - 1:
            if part.endswith("[x]"):  # one choice at a time: drop the minimal filler of another type
                for other in [k for k in node if k.startswith(part[:-3])]:
                    del node[other]
            node[key] = [ref] if many else ref
            return _invariants(res_type, body)
        existing = node.get(key)
        child = (existing[0] if isinstance(existing, list) else existing) if existing else _fill(sd, full)
        node[key] = [child] if many else child
        node = child
    return _invariants(res_type, body)


_TEXT = {"text": "x"}
_DIV = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}


def _invariants(res_type: str, body: dict[str, Any]) -> dict[str, Any]:
    """Complete a minimal instance so that it meets its type's base invariants (writes check them):
    required elements alone do not satisfy ait-1, app-1, apr-1, cmp-1, ppc-1, ele-1, imr-1, lnk-1, que-*,
    rqg-1."""
    if res_type == "AllergyIntolerance" and "clinicalStatus" not in body:
        body["clinicalStatus"] = _TEXT
    if res_type == "Appointment":
        for p in body.get("participant", []):
            if "actor" not in p and "type" not in p:
                p["type"] = [_TEXT]
    if res_type == "AppointmentResponse" and "actor" not in body and "participantType" not in body:
        body["participantType"] = [_TEXT]  # apr-1
    if res_type == "Composition":
        for section in body.get("section", []):
            if not any(k in section for k in ("text", "entry", "section")):
                section["text"] = _DIV
    if res_type == "Consent" and not body.get("policy") and "policyRule" not in body:
        body["policyRule"] = _TEXT
    if res_type == "Contract":
        for term in body.get("term", []):
            if term.get("offer") == {}:
                term["offer"] = {"text": "x"}
    if res_type == "ImmunizationRecommendation":
        for r in body.get("recommendation", []):
            if "vaccineCode" not in r and "targetDisease" not in r:
                r["targetDisease"] = _TEXT
    if res_type == "Linkage" and len(body.get("item", [])) < 2:
        body["item"].append({"type": "alternate", "resource": {"display": "x"}})
    if res_type == "Questionnaire":
        for item in body.get("item", []):
            item["type"] = "choice"
            for condition in item.get("enableWhen", []):
                condition["operator"] = "="
    if res_type == "RequestGroup":
        for action in body.get("action", []):
            if "resource" not in action and "action" not in action:
                action["action"] = [{"resource": {"display": "x"}}]
    return body
