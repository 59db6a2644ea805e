"""ANS "Notifications d'événements" (NdE): a CommunicationRequest announcing an admission or a discharge.

The CommunicationRequest carries the event type in the NdE ``event-type`` extension (TRE_R254: ADM, SOR)
and the patient and the sending organisation as contained resources. On create it becomes the same
encounter event as a ``$process-message``, in the same transaction as the CommunicationRequest itself;
the stored CommunicationRequest then points at the matched Patient and Organization (so that
``CommunicationRequest?subject.identifier=`` and ``?event-type=`` find it).

Assumptions (the NdE IG was not at hand): the event-type value is a Coding (or CodeableConcept) of
TRE_R254; the occurrence (``occurrenceDateTime``, else ``authoredOn``) is the event time; without a
contained Encounter, one is derived (class IMP, status from the event, period from the occurrence).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from auth.policy import Principal
from connectors.events import EncounterEvent, EventError, content_of
from coordination_api.coordination.intake import discharge
from coordination_api.core.services import PendingCreate, PendingUpdate, Services
from coordination_api.core.writes import find_matches, parse_criteria
from coordination_api.errors import Category, FhirError
from fhir_profiles.french_identifiers import FINESS

EVENT_TYPE_URL = "https://interop.esante.gouv.fr/ig/fhir/nde/StructureDefinition/event-type"
NOS_R254 = "https://mos.esante.gouv.fr/NOS/TRE_R254-TypeEvenement/FHIR/TRE-R254-TypeEvenement"
KINDS = {"ADM": "admit", "SOR": "discharge"}
_STATUS = {"admit": "in-progress", "discharge": "finished"}


def event_coding(resource: dict[str, Any]) -> dict[str, Any] | None:
    for extension in resource.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == EVENT_TYPE_URL:
            if isinstance(extension.get("valueCoding"), dict):
                return dict(extension["valueCoding"])
            codings = (extension.get("valueCodeableConcept") or {}).get("coding") or []
            return dict(codings[0]) if codings else {}
    return None


def _contained(resource: dict[str, Any], reference: Any, resource_type: str) -> dict[str, Any] | None:
    if not isinstance(reference, dict) or not str(reference.get("reference", "")).startswith("#"):
        return None
    wanted = reference["reference"][1:]
    for item in resource.get("contained") or []:
        if isinstance(item, dict) and item.get("id") == wanted and item.get("resourceType") == resource_type:
            return item
    return None


def to_event(resource: dict[str, Any], coding: dict[str, Any]) -> EncounterEvent:
    kind = KINDS.get(str(coding.get("code"))) if coding.get("system") in {NOS_R254, None} else None
    if kind is None:
        raise EventError(
            f"Unsupported NdE event type {coding.get('system')}|{coding.get('code')} (supported: ADM, SOR)",
            code="201",
            location="CommunicationRequest.extension",
        )
    patient = _contained(resource, resource.get("subject"), "Patient")
    if patient is None:
        raise EventError(
            "An NdE CommunicationRequest carries its patient as a contained Patient",
            code="101",
            location="CommunicationRequest.subject",
        )
    sender = _contained(resource, resource.get("sender"), "Organization")
    finess = [i.get("value") for i in (sender or {}).get("identifier") or [] if i.get("system") == FINESS]
    identifiers = [i for i in resource.get("identifier") or [] if isinstance(i, dict) and i.get("value")]
    when = resource.get("occurrenceDateTime") or resource.get("authoredOn")
    encounter = _contained(resource, resource.get("encounter"), "Encounter")
    if encounter is None:
        encounter = {
            "resourceType": "Encounter",
            "status": _STATUS[kind],
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        }
        if when:
            encounter["period"] = {"end" if kind == "discharge" else "start": when}
    return EncounterEvent(
        kind=kind,
        sender=f"nde:{finess[0]}" if finess else "nde:" + str((sender or {}).get("name") or "unknown"),
        message_id=(f"{identifiers[0].get('system', '')}|{identifiers[0]['value']}" if identifiers else ""),
        patient=content_of(patient),
        encounter={k: v for k, v in content_of(encounter).items() if k != "subject"},
        service_provider=content_of(sender) if sender else None,
        occurred=when,
    )


def _sender_finess(resource: dict[str, Any]) -> str | None:
    sender = _contained(resource, resource.get("sender"), "Organization")
    for identifier in (sender or {}).get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") == FINESS and identifier.get("value"):
            return str(identifier["value"])
    return None


def identifier_criteria(resource: dict[str, Any]) -> str | None:
    """Conditional-create criteria on the first identifier and the sending Organization's FINESS (None
    without an identifier): another sender's NdE with the same identifier is not this one's resend
    (issue 16; the message log then keys the event by client, sender and identifier)."""
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("value"):
            criteria = discharge.identifier_criteria(identifier)
            finess = _sender_finess(resource)
            if finess:
                criteria += "&" + discharge.identifier_criteria({"system": FINESS, "value": finess}).replace(
                    "identifier=", "sender:Organization.identifier=", 1
                )
            return criteria
    return None


# What an NdE's intake established; an update keeps them (the reference only: a display may change).
_ESTABLISHED = ("subject", "sender", "encounter")


def before_create(conn: Connection, svc: Services, pending: PendingCreate) -> None:
    """The create hook create_app registers: an NdE CommunicationRequest becomes its encounter event,
    in the create's transaction. A resend (same identifier, same sender) finds the first one and
    changes nothing. A PUT (update-as-create) cannot be an intake: the intake decides the id."""
    if pending.resource_type != "CommunicationRequest" or event_coding(pending.body) is None:
        return
    if pending.res_id is not None:
        raise FhirError(
            Category.UNPROCESSABLE,
            "An NdE CommunicationRequest (event-type extension) is announced by POST "
            "[base]/CommunicationRequest or a POST entry of a transaction or batch, not created by PUT: "
            "its intake (sender check, message log, Patient match) decides what is stored",
            expression="CommunicationRequest.extension",
        )
    if not pending.if_none_exist:
        pending.if_none_exist = identifier_criteria(pending.body)
    criteria = pending.if_none_exist
    if not criteria or not find_matches(conn, svc, pending.resource_type, parse_criteria(criteria)):
        pending.body = intake(conn, svc, pending.body, pending.principal)


def before_update(_conn: Connection, _svc: Services, pending: PendingUpdate) -> None:
    """The update hook create_app registers: an update cannot be an intake. It may not make an NdE of
    a CommunicationRequest that is none, nor change an NdE's event type, patient, sender or encounter
    (each is an event only an intake may announce)."""
    if pending.resource_type != "CommunicationRequest":
        return
    coding = event_coding(pending.body)
    if coding is None:
        return  # not (or no longer) an NdE: an ordinary CommunicationRequest
    before = pending.current.json()
    name = f"CommunicationRequest/{pending.res_id}"
    if event_coding(before) is None:
        raise FhirError(
            Category.UNPROCESSABLE,
            f"{name} is not an NdE and an update cannot make it one: an NdE (event-type extension) "
            "is announced by POST [base]/CommunicationRequest, which runs its intake",
            expression="CommunicationRequest.extension",
        )
    changed = [
        element
        for element in _ESTABLISHED
        if _reference(pending.body.get(element)) != _reference(before.get(element))
    ]
    if _code(coding) != _code(event_coding(before) or {}):
        changed.insert(0, "extension")
    if changed:
        raise FhirError(
            Category.UNPROCESSABLE,
            f"An update of the NdE {name} keeps what its intake established; it changes "
            f"{', '.join(changed)}. A new event is announced by POST [base]/CommunicationRequest",
            expression=f"CommunicationRequest.{changed[0]}",
        )


def _reference(value: Any) -> Any:
    return value.get("reference") if isinstance(value, dict) else value


def _code(coding: dict[str, Any]) -> tuple[Any, Any]:
    return coding.get("system"), coding.get("code")


def intake(conn: Connection, svc: Services, resource: dict[str, Any], who: Principal) -> dict[str, Any]:
    """Store the NdE event and return the CommunicationRequest to store (subject/sender resolved).

    Not an NdE CommunicationRequest: returned unchanged. Without an identifier the message cannot be
    recognised when resent, so one is required (a replay then changes nothing)."""
    coding = event_coding(resource)
    if coding is None:
        return resource
    try:
        event = to_event(resource, coding)
        if not event.message_id:
            raise EventError(
                "An NdE CommunicationRequest needs an identifier (it makes a resend harmless)",
                code="101",
                location="CommunicationRequest.identifier",
            )
        origin = discharge.origin_for(who).at("CommunicationRequest.sender")
        outcome = discharge.process_in(conn, svc, event, origin)
    except discharge.SenderNotAllowedError as exc:
        raise FhirError(Category.FORBIDDEN, str(exc), expression=exc.location) from exc
    except EventError as exc:
        raise FhirError(Category.UNPROCESSABLE, str(exc), expression=exc.location) from exc
    stored = dict(resource)
    contained = [c for c in stored.get("contained") or [] if isinstance(c, dict)]
    stored["subject"] = {"reference": outcome.patient}
    keep = [c for c in contained if c.get("resourceType") != "Patient"]
    if outcome.encounter:
        stored["encounter"] = {"reference": outcome.encounter}
        keep = [c for c in keep if c.get("resourceType") != "Encounter"]
    if outcome.organization and _sender_finess(resource):
        # The stored sender is the Organization found by FINESS, so that a resend is recognised by
        # (sender, identifier) and never by the identifier alone (identifier_criteria, issue 16).
        stored["sender"] = {"reference": outcome.organization}
        keep = [c for c in keep if c.get("resourceType") != "Organization"]
    if keep:
        stored["contained"] = keep
    else:
        stored.pop("contained", None)
    return stored
