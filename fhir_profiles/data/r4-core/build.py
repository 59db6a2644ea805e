"""Rebuild the gzip bundles of this folder from HL7's own FHIR R4 package (see README.md).

    python fhir_profiles/data/r4-core/build.py /path/to/hl7.fhir.r4.examples-4.0.1.tgz

Every resource is copied as HL7 published it; this only sorts them into the five bundles the loaders
read (fhir_profiles/r4_core.py), in the layout of the specification's definitions.json.zip.
"""

from __future__ import annotations

import gzip
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def _kind(resource: dict[str, Any]) -> str | None:
    rtype = resource.get("resourceType")
    if rtype == "SearchParameter":
        # The package also holds example SearchParameters; the specification's are at its canonical base.
        rid = str(resource.get("id", ""))
        if "example" in rid or not str(resource.get("url", "")).startswith(
            "http://hl7.org/fhir/SearchParameter/"
        ):
            return None
        if len(rid) > 64:  # not a valid id (R4 datatypes.html#id): one extension parameter of the package
            return None
        return "search-parameters"
    if rtype in ("ValueSet", "CodeSystem"):
        return "valuesets" if str(resource.get("url", "")).startswith("http://") else None
    if rtype in ("CompartmentDefinition", "OperationDefinition"):
        return "profiles-resources"
    if rtype != "StructureDefinition" or "example" in str(resource.get("id", "")):
        return None
    url = str(resource.get("url", ""))
    if not url.startswith("http://hl7.org/fhir/StructureDefinition/"):
        return None
    kind, derivation = resource.get("kind"), resource.get("derivation")
    if resource.get("type") == "Extension" and derivation == "constraint":
        return "extension-definitions"
    if kind == "resource" and derivation != "constraint":
        return "profiles-resources"
    if kind in ("primitive-type", "complex-type") and "-" not in str(resource.get("id")):
        return "profiles-types"  # data types and their constraints (SimpleQuantity, Age…), not profiles
    return None


def build(package: Path) -> dict[str, int]:
    bundles: dict[str, list[dict[str, Any]]] = {}
    with tarfile.open(package) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if not member.isfile() or not member.name.endswith(".json") or member.name.count("/") != 1:
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            try:
                resource = json.load(handle)
            except ValueError:
                continue
            name = _kind(resource) if isinstance(resource, dict) else None
            if name is not None:
                bundles.setdefault(name, []).append(resource)
    counts = {}
    for name, items in sorted(bundles.items()):
        base = "http://hl7.org/fhir"
        bundle = {
            "resourceType": "Bundle",
            "id": name,
            "type": "collection",
            "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r} for r in items],
        }
        data = json.dumps(bundle, ensure_ascii=False, separators=(",", ":")).encode()
        with gzip.GzipFile(HERE / f"{name}.json.gz", "wb", compresslevel=9, mtime=0) as out:
            out.write(data)
        counts[name] = len(items)
    return counts


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
