"""GET [base]/metadata: CapabilityStatement built from what is implemented (R4 http.html#capabilities)."""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Response

from coordination_api.fhir.context import Services, services
from coordination_api.fhir.http import base_url, fhir_json_response
from fhir_profiles.conformance import shipped

SOFTWARE_VERSION = "0.1.0"
TYPE_INTERACTIONS = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]


@cache
def _resources(svc: Services) -> tuple[dict[str, Any], ...]:
    registry = svc.repo.registry
    # Who may be _revinclude'd: every reference parameter of any type that can point here.
    rev: dict[str, set[str]] = {}
    for source in registry.resource_types:
        for param in registry.params(source).values():
            if param.type == "reference":
                for target in param.targets:
                    rev.setdefault(target, set()).add(f"{source}:{param.code}")
    out = []
    for resource_type in sorted(registry.resource_types):
        params = svc.repo.registry.params(resource_type)
        search_params = [
            {"name": p.code, "definition": p.url, "type": p.type}
            for p in sorted(params.values(), key=lambda p: p.code)
            if p.type != "composite"
        ]
        reference_params = [p for p in params.values() if p.type == "reference"]
        out.append(
            {
                "type": resource_type,
                "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
                "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalRead": "full-support",
                "conditionalUpdate": True,
                "conditionalDelete": "single",
                "referencePolicy": ["literal", "logical", "local"],
                "searchInclude": sorted({f"{resource_type}:{p.code}" for p in reference_params} | {"*"}),
                "searchRevInclude": sorted(rev.get(resource_type, set())),
                "searchParam": search_params,
                "supportedProfile": shipped().profiles_for(resource_type),
                "operation": [
                    {
                        "name": "validate",
                        "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
                    }
                ],
            }
        )
    return tuple(out)


def capability_statement(svc: Services, base: str) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "publisher": "coordination (open-source CPTS care-coordination backend)",
        "kind": "instance",
        "software": {"name": "coordination", "version": SOFTWARE_VERSION},
        "implementation": {"description": "CPTS care-coordination FHIR facade", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "No authentication yet: loopback only until the security module lands.",
                "resource": list(_resources(svc)),
                "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
            }
        ],
    }


def metadata() -> Response:
    return fhir_json_response(capability_statement(services(), base_url()))
