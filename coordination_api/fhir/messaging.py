"""POST [base]/$process-message (R4 messaging.html, operation-messageheader-process-message).

Synchronous messaging only. A Bundle of type ``message`` whose first entry is the MessageHeader; its
event (Da Vinci notification-event, or the French TRE_R254 ADM/SOR) and focus (the Encounter, its
Patient, serviceProvider Organization, participants, documents) become an :class:`EncounterEvent`, stored
by ``coordination.intake.discharge``. The answer is a response message (MessageHeader.response.code ok /
transient-error / fatal-error, details = an OperationOutcome): 200 when processed, 4xx/503 otherwise.
A request that is not a message at all gets a plain OperationOutcome.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Response, request

from connectors.events import EncounterEvent, EventError, content_of
from coordination_api.coordination.intake import discharge
from coordination_api.errors import Category, FhirError, Issue, operation_outcome
from coordination_api.fhir import access
from coordination_api.fhir.context import services
from coordination_api.fhir.resources import parse_json, validate_resource
from coordination_api.web.http import base_url, check_content_type, fhir_json_response, read_body

DAVINCI = "http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event"
NOS_R254 = "https://mos.esante.gouv.fr/NOS/TRE_R254-TypeEvenement/FHIR/TRE-R254-TypeEvenement"
EVENTS = {
    (DAVINCI, "notification-discharge"): "discharge",
    (DAVINCI, "notification-admit"): "admit",
    (DAVINCI, "notification-transfer"): "transfer",
    (NOS_R254, "SOR"): "discharge",
    (NOS_R254, "ADM"): "admit",
}
LOINC_DISCHARGE_SUMMARY = "11490-0"


class _Message:
    """The entries of a message Bundle, resolvable by fullUrl or Type/id (R4 bundle.html#references)."""

    def __init__(self, bundle: dict[str, Any]) -> None:
        self.entries = [e.get("resource") for e in bundle.get("entry") or [] if isinstance(e, dict)]
        self.by_ref: dict[str, dict[str, Any]] = {}
        for entry in bundle.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                continue
            if isinstance(entry.get("fullUrl"), str):
                self.by_ref[entry["fullUrl"]] = resource
            if resource.get("id"):
                self.by_ref[f"{resource['resourceType']}/{resource['id']}"] = resource

    def resolve(self, reference: Any, resource_type: str) -> dict[str, Any] | None:
        if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
            return None
        ref = reference["reference"]
        found = self.by_ref.get(ref) or self.by_ref.get("/".join(ref.rstrip("/").split("/")[-2:]))
        return found if found is not None and found.get("resourceType") == resource_type else None

    def first(self, resource_type: str) -> dict[str, Any] | None:
        return next(
            (r for r in self.entries if isinstance(r, dict) and r.get("resourceType") == resource_type), None
        )


def to_event(bundle: dict[str, Any]) -> EncounterEvent:
    """The message as an encounter event (EventError: a fatal-error response)."""
    header = bundle["entry"][0]["resource"]
    coding = header.get("eventCoding") or {}
    kind = EVENTS.get((str(coding.get("system")), str(coding.get("code"))))
    if kind is None:
        raise EventError(
            f"Unsupported message event {coding.get('system')}|{coding.get('code')}; supported: "
            + ", ".join(f"{s}|{c}" for s, c in EVENTS),
            code="201",
            location="MessageHeader.eventCoding",
            rejected=True,
        )
    message = _Message(bundle)
    encounter = None
    for focus in header.get("focus") or []:
        encounter = encounter or message.resolve(focus, "Encounter")
    encounter = encounter or message.first("Encounter")
    if encounter is None:
        raise EventError(
            "The message has no Encounter in its focus", code="101", location="MessageHeader.focus"
        )
    patient = message.resolve(encounter.get("subject"), "Patient") or message.first("Patient")
    if patient is None:
        raise EventError(
            "The Encounter's subject Patient is not in the message", code="101", location="Encounter.subject"
        )
    provider = message.resolve(encounter.get("serviceProvider"), "Organization")
    practitioners = [
        p
        for p in (
            message.resolve(part.get("individual"), "Practitioner")
            for part in encounter.get("participant") or []
        )
        if p is not None
    ]
    documents = []
    for resource in message.entries:
        if isinstance(resource, dict) and resource.get("resourceType") == "DocumentReference":
            binary = None
            for content in resource.get("content") or []:
                url = (content.get("attachment") or {}).get("url")
                binary = binary or message.resolve({"reference": url}, "Binary")
            documents.append((content_of(resource), content_of(binary) if binary else None))
    body = content_of(encounter)
    body.pop("subject", None)
    body.pop("serviceProvider", None)
    body.pop("participant", None)
    source = header.get("source") or {}
    return EncounterEvent(
        structure_checked=True,
        kind=kind,
        sender=str(source.get("endpoint") or source.get("name") or ""),
        message_id=str(header.get("id") or (bundle.get("identifier") or {}).get("value") or ""),
        patient=content_of(patient),
        encounter=body,
        service_provider=content_of(provider) if provider else None,
        practitioners=[content_of(p) for p in practitioners],
        documents=documents,
        occurred=bundle.get("timestamp"),
    )


def _response(
    header: dict[str, Any], code: str, issues: list[Issue], status: int, focus: str | None
) -> Response:
    outcome_id = str(uuid.uuid4())
    base = base_url()
    reply: dict[str, Any] = {
        "resourceType": "MessageHeader",
        "id": str(uuid.uuid4()),
        "eventCoding": header.get("eventCoding"),
        "source": {"name": "coordination", "endpoint": f"{base}/$process-message"},
        "response": {
            "identifier": header.get("id") or "unknown",
            "code": code,
            "details": {"reference": f"urn:uuid:{outcome_id}"},
        },
    }
    endpoint = (header.get("source") or {}).get("endpoint")
    if endpoint:
        reply["destination"] = [{"endpoint": endpoint}]
    if focus:
        reply["focus"] = [{"reference": f"{base}/{focus}"}]
    bundle = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "message",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "entry": [
            {"fullUrl": f"urn:uuid:{reply['id']}", "resource": reply},
            {
                "fullUrl": f"urn:uuid:{outcome_id}",
                "resource": {**operation_outcome(issues), "id": outcome_id},
            },
        ],
    }
    return fhir_json_response(bundle, status)


def _message_bundle() -> dict[str, Any]:
    check_content_type()
    bundle = parse_json(read_body())
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError(Category.INVALID, "$process-message takes a Bundle of type 'message' as its body")
    # What makes it a message first (400 naming it), then the R4 rules of the whole Bundle.
    if bundle.get("type") != "message":
        raise FhirError(
            Category.INVALID,
            f"Bundle.type must be 'message', not '{bundle.get('type')}'",
            expression="Bundle.type",
        )
    entries = bundle.get("entry")
    head = entries[0] if isinstance(entries, list) and entries and isinstance(entries[0], dict) else {}
    first = head.get("resource")
    if not isinstance(first, dict) or first.get("resourceType") != "MessageHeader":
        raise FhirError(
            Category.INVALID,
            "The first entry of a message must be its MessageHeader",
            expression="Bundle.entry[0]",
        )
    validate_resource(bundle, "Bundle")
    return bundle


def process_message() -> Response:
    for resource_type in ("Patient", "Encounter"):
        access.require(resource_type, "c")
        access.require(resource_type, "u")
    if request.args.get("async") == "true":
        raise FhirError(Category.NOT_SUPPORTED, "Only synchronous messaging is supported (async=true is not)")
    bundle = _message_bundle()
    header = bundle["entry"][0]["resource"]
    origin = discharge.origin_for(access.principal()).at("MessageHeader.source.endpoint")
    try:
        outcome = discharge.process(services(), to_event(bundle), origin)
    except discharge.SenderNotAllowedError as exc:
        # Issue 16: a client sends only as its registered senders (plain 403 OperationOutcome).
        raise FhirError(Category.FORBIDDEN, str(exc), expression=exc.location) from exc
    except EventError as exc:
        where = [exc.location] if exc.location else None
        status = 400 if exc.rejected else 422
        return _response(header, "fatal-error", [Issue("error", "processing", str(exc), where)], status, None)
    except FhirError as exc:
        if exc.category in {Category.CONFLICT, Category.TRANSIENT}:
            issue = Issue("error", "transient", exc.diagnostics)
            return _response(header, "transient-error", [issue], 503, None)
        issue = Issue("error", exc.category.code, exc.diagnostics)
        return _response(header, "fatal-error", [issue], max(exc.category.status, 400), None)
    text = f"{outcome.kind}: {outcome.patient}" + (f", {outcome.encounter}" if outcome.encounter else "")
    if outcome.replayed:
        text += " (message already processed: same result, nothing written again)"
    return _response(header, "ok", [Issue("information", "informational", text)], 200, outcome.encounter)
