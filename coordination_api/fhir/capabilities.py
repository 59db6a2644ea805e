"""GET [base]/metadata: CapabilityStatement built from what is implemented (R4 http.html#capabilities)."""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Response

from coordination_api.bulk import views as bulk
from coordination_api.fhir.context import Services, services
from coordination_api.subscriptions.topics import TOPICS
from coordination_api.web.http import base_url, fhir_json_response
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

# The audit trail is server-written and served from its own tables (fhir/audit_trail.py).
_SP = "http://hl7.org/fhir/SearchParameter/"
AUDIT_EVENT: dict[str, Any] = {
    "type": "AuditEvent",
    "profile": "http://hl7.org/fhir/StructureDefinition/AuditEvent",
    "documentation": "Read-only audit trail; needs a scope naming AuditEvent (a * scope does not open it). "
    "Practitioners' user tokens see only their own accesses. Sorted newest first.",
    "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "search-type"}],
    "versioning": "no-version",
    "readHistory": False,
    "updateCreate": False,
    "searchParam": [
        {"name": "_id", "definition": f"{_SP}Resource-id", "type": "token"},
        {"name": "agent", "definition": f"{_SP}AuditEvent-agent", "type": "reference"},
        {"name": "date", "definition": f"{_SP}AuditEvent-date", "type": "date"},
        {"name": "entity", "definition": f"{_SP}AuditEvent-entity", "type": "reference"},
        {"name": "outcome", "definition": f"{_SP}AuditEvent-outcome", "type": "token"},
        {"name": "patient", "definition": f"{_SP}clinical-patient", "type": "reference"},
        {"name": "subtype", "definition": f"{_SP}AuditEvent-subtype", "type": "token"},
    ],
}


# Subscriptions R5 Backport IG 1.1.0 (R4): profile, $status/$events, and the topics we offer.
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"
SUBSCRIPTION: dict[str, Any] = {
    "supportedProfile": [f"{BACKPORT}/StructureDefinition/backport-subscription"],
    "operation": [
        {"name": "status", "definition": f"{BACKPORT}/OperationDefinition/backport-subscription-status"},
        {"name": "events", "definition": f"{BACKPORT}/OperationDefinition/backport-subscription-events"},
    ],
}


# R4 patient-operation-everything / encounter-operation-everything (fhir/everything.py).
EVERYTHING: dict[str, dict[str, Any]] = {
    t: {
        "operation": [
            {"name": "everything", "definition": f"http://hl7.org/fhir/OperationDefinition/{t}-everything"}
        ]
    }
    for t in ("Patient", "Encounter")
}

# R4 plandefinition-operation-apply and our $start (fhir/apply.py; README "Protocols").
PROTOCOLS: dict[str, dict[str, Any]] = {
    "PlanDefinition": {
        "operation": [
            {"name": "apply", "definition": "http://hl7.org/fhir/OperationDefinition/PlanDefinition-apply"},
            {
                "name": "start",
                "definition": "https://coordination.cpts.fr/fhir/OperationDefinition/PlanDefinition-start",
                "documentation": "POST [base]/PlanDefinition/[id]/$start with the $apply parameters: stores "
                "the CarePlan (active), its RequestGroup and Tasks/ServiceRequests/CommunicationRequests in "
                "one transaction; 201 with a transaction-response Bundle, or 200 when this protocol was "
                "already started for that encounter.",
            },
        ]
    }
}


# Our $dmp-push (fhir/dmp.py; docs/integration.md "DMP").
DMP: dict[str, dict[str, Any]] = {
    "DocumentReference": {
        "operation": [
            {
                "name": "dmp-push",
                "definition": "https://coordination.cpts.fr/fhir/OperationDefinition/DocumentReference-dmp-push",
                "documentation": "POST [base]/DocumentReference/[id]/$dmp-push: queue the document for "
                "the DMP (IHE MHD ITI-65 to the configured PDSm); 202, the outcome is recorded on the "
                "DocumentReference (extension dmp-submission).",
            }
        ]
    }
}


def _topics() -> list[dict[str, Any]]:
    return [
        {
            "url": f"{BACKPORT}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical",
            "valueCanonical": t.url,
        }
        for t in TOPICS
    ]


def _security(base: str) -> dict[str, Any]:
    """SMART on FHIR (SMART App Launch 2, conformance.html): the service and its OAuth endpoints."""
    root = base.rsplit("/fhir", 1)[0]
    return {
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "token", "valueUri": f"{root}/auth/token"},
                    {"url": "authorize", "valueUri": f"{root}/auth/authorize"},
                    {"url": "introspect", "valueUri": f"{root}/auth/introspect"},
                    {"url": "revoke", "valueUri": f"{root}/auth/revoke"},
                ],
            }
        ],
        "cors": True,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        "description": "OAuth2 bearer tokens (SMART App Launch 2 and Backend Services); discovery at "
        f"{base}/.well-known/smart-configuration. Access to patients' data follows the care-team rule.",
    }


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
        if resource_type == AUDIT_EVENT["type"]:
            out.append(AUDIT_EVENT)
            continue
        extra = (
            SUBSCRIPTION
            if resource_type == "Subscription"
            else EVERYTHING.get(resource_type) or PROTOCOLS.get(resource_type) or DMP.get(resource_type, {})
        )
        params = svc.repo.registry.params(resource_type)
        search_params = [
            {"name": p.code, "definition": p.url, "type": p.type}
            for p in sorted(params.values(), key=lambda p: p.code)
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
                "supportedProfile": shipped().profiles_for(resource_type) + extra.get("supportedProfile", []),
                "operation": [
                    {
                        "name": "validate",
                        "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
                    },
                    *extra.get("operation", []),
                    *bulk.TYPE_OPERATIONS.get(resource_type, []),  # Bulk Data $export
                ],
            }
        )
    return tuple(out)


def capability_statement(svc: Services, base: str) -> dict[str, Any]:
    rest: dict[str, Any] = {"mode": "server"}
    if not svc.settings.security_disabled:
        rest["security"] = _security(base)
    rest["resource"] = list(_resources(svc))
    rest["interaction"] = [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}]
    rest["operation"] = bulk.SYSTEM_OPERATIONS
    return {
        "resourceType": "CapabilityStatement",
        "extension": _topics(),
        "status": "active",
        "date": "2026-11-23",
        "publisher": "coordination (open-source CPTS care-coordination backend)",
        "kind": "instance",
        "instantiates": [bulk.INSTANTIATES],  # Bulk Data Access IG 2.0.0 server
        "software": {"name": "coordination", "version": SOFTWARE_VERSION},
        "implementation": {"description": "CPTS care-coordination FHIR facade", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [rest],
    }


def metadata() -> Response:
    return fhir_json_response(capability_statement(services(), base_url()))
