"""ANS "Notifications d'événements" (NdE): a CommunicationRequest announcing an admission or a discharge.

The CommunicationRequest carries the event type in the NdE ``event-type`` extension (TRE_R254: ADM, SOR)
and the patient and the sending organisation as contained resources. On create it becomes the same
encounter event as a ``$process-message``, in the same transaction as the CommunicationRequest itself;
the stored CommunicationRequest then points at the matched Patient and Organization (so that
``CommunicationRequest?subject.identifier=`` and ``?event-type=`` find it).

Assumptions (the NdE IG was not at hand): the event-type value is a Coding (or CodeableConcept) of
TRE_R254, and an NdE announces one event (several distinct codes, by codings or extensions, are
refused rather than read by the first, since the index holds them all); the occurrence
(``occurrenceDateTime``, else ``authoredOn``) is the event time; without a contained Encounter, one is
derived (class IMP, status from the event, period from the occurrence).
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


def event_extensions(resource: dict[str, Any]) -> list[Any]:
    """Every NdE event-type extension of the resource, whole (one is enough to make it an NdE)."""
    extensions = resource.get("extension")
    return [
        e
        for e in (extensions if isinstance(extensions, list) else [])
        if isinstance(e, dict) and e.get("url") == EVENT_TYPE_URL
    ]


def event_codes(resource: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(system, code) of every coding of every event-type extension: what the ``event-type`` search
    parameter indexes (CommunicationRequest.extension('…event-type').value, every coding)."""
    codes: list[tuple[Any, Any]] = []
    for extension in event_extensions(resource):
        value = extension.get("valueCoding")
        if isinstance(value, dict):
            codes.append((value.get("system"), value.get("code")))
            continue
        concept = extension.get("valueCodeableConcept")
        codings = concept.get("coding") if isinstance(concept, dict) else None
        for coding in codings if isinstance(codings, list) else []:
            if isinstance(coding, dict):
                codes.append((coding.get("system"), coding.get("code")))
    return codes


def event_code(resource: dict[str, Any]) -> tuple[Any, Any] | None:
    """The one event an NdE announces (None: not an NdE). The intake acts on it and the index holds
    it, so every event-type value must be a Coding or CodeableConcept and all of them one code: an
    NdE announcing several events (several codings or extensions) is refused, not read by its first."""
    extensions = event_extensions(resource)
    if not extensions:
        return None
    codes = event_codes(resource)
    other = [
        e
        for e in extensions
        if not any(isinstance(e.get(k), dict) for k in ("valueCoding", "valueCodeableConcept"))
    ]
    # Both parts are strings after validation; anything else is refused, never hashed.
    other += [c for c in codes if not all(isinstance(part, str | None) for part in c)]
    distinct = sorted({c for c in codes if all(isinstance(part, str | None) for part in c)}, key=str)
    if other or len(distinct) != 1 or not isinstance(distinct[0][1], str):
        shown = ", ".join(f"{system}|{code}" for system, code in distinct) or "none"
        raise FhirError(
            Category.UNPROCESSABLE,
            "An NdE CommunicationRequest announces one event: its event-type extension(s) carry one "
            f"TRE_R254 code as a Coding or CodeableConcept (found: {shown}"
            f"{'; a value of another type' if other else ''})",
            expression="CommunicationRequest.extension",
        )
    return distinct[0]


def _contained(resource: dict[str, Any], reference: Any, resource_type: str) -> dict[str, Any] | None:
    if not isinstance(reference, dict) or not str(reference.get("reference", "")).startswith("#"):
        return None
    wanted = reference["reference"][1:]
    for item in resource.get("contained") or []:
        if isinstance(item, dict) and item.get("id") == wanted and item.get("resourceType") == resource_type:
            return item
    return None


def to_event(resource: dict[str, Any], code: tuple[Any, Any]) -> EncounterEvent:
    system, value = code
    kind = KINDS.get(str(value)) if system in {NOS_R254, None} else None
    if kind is None:
        raise EventError(
            f"Unsupported NdE event type {system}|{value} (supported: ADM, SOR)",
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


# What an NdE's intake established or keys it by (identifier: a resend is recognised by it and the
# sender, identifier_criteria). An update keeps each as a whole value, as the index reads all of it
# (e.g. subject.identifier is indexed beside subject.reference).
_ESTABLISHED = ("subject", "sender", "encounter", "identifier")


def before_create(conn: Connection, svc: Services, pending: PendingCreate) -> None:
    """The create hook create_app registers: an NdE CommunicationRequest becomes its encounter event,
    in the create's transaction. A resend (same identifier, same sender) finds the first one and
    changes nothing. A PUT (update-as-create) cannot be an intake: the intake decides the id."""
    if pending.resource_type != "CommunicationRequest" or not event_extensions(pending.body):
        return
    if pending.res_id is not None:
        raise FhirError(
            Category.UNPROCESSABLE,
            "An NdE CommunicationRequest (event-type extension) is announced by POST "
            "[base]/CommunicationRequest or a POST entry of a transaction or batch, not created by PUT: "
            "its intake (sender check, message log, Patient match) decides what is stored",
            expression="CommunicationRequest.extension",
        )
    event_code(pending.body)  # one event, also for a resend: what the index would hold is checked first
    if not pending.if_none_exist:
        pending.if_none_exist = identifier_criteria(pending.body)
    criteria = pending.if_none_exist
    if not criteria or not find_matches(conn, svc, pending.resource_type, parse_criteria(criteria)):
        pending.body = intake(conn, svc, pending.body, pending.principal)


def before_update(_conn: Connection, _svc: Services, pending: PendingUpdate) -> None:
    """The update hook create_app registers: an update cannot be an intake. It may not make an NdE of
    a CommunicationRequest that is none, nor change or remove anything an NdE's intake established:
    its event-type extensions, subject, sender, encounter, identifier and the contained resources
    they point at, each compared whole (a changed one would be an event only an intake may announce)."""
    if pending.resource_type != "CommunicationRequest":
        return
    before = pending.current.json()
    was, now = event_extensions(before), event_extensions(pending.body)
    if not was and not now:
        return  # an ordinary CommunicationRequest
    name = f"CommunicationRequest/{pending.res_id}"
    if not was:
        raise FhirError(
            Category.UNPROCESSABLE,
            f"{name} is not an NdE and an update cannot make it one: an NdE (event-type extension) "
            "is announced by POST [base]/CommunicationRequest, which runs its intake",
            expression="CommunicationRequest.extension",
        )
    changed = ["extension"] if was != now else []
    changed += [e for e in _ESTABLISHED if pending.body.get(e) != before.get(e)]
    if _pointed_at(pending.body) != _pointed_at(before):
        changed.append("contained")
    if changed:
        raise FhirError(
            Category.UNPROCESSABLE,
            f"An update of the NdE {name} keeps what its intake established; it changes "
            f"{', '.join(changed)}. A new event is announced by POST [base]/CommunicationRequest",
            expression=f"CommunicationRequest.{changed[0]}",
        )


def _pointed_at(resource: dict[str, Any]) -> dict[str, list[Any]]:
    """The contained resources the established elements point at (``#id``), and those they point at
    in turn: id -> every contained resource with that id, whole."""
    contained = [c for c in resource.get("contained") or [] if isinstance(c, dict)]
    found: dict[str, list[Any]] = {}
    todo = [resource.get(e) for e in _ESTABLISHED]
    while todo:
        for ref in _local_references(todo.pop()):
            if ref not in found:
                found[ref] = [c for c in contained if c.get("id") == ref]
                todo.extend(found[ref])
    return found


def _local_references(value: Any) -> list[str]:
    """The ids of the ``#id`` references anywhere in ``value`` (R4 references.html#contained)."""
    if isinstance(value, list):
        return [ref for item in value for ref in _local_references(item)]
    if not isinstance(value, dict):
        return []
    out = [ref for item in value.values() for ref in _local_references(item)]
    ref = value.get("reference")
    if isinstance(ref, str) and ref.startswith("#") and len(ref) > 1:
        out.append(ref[1:])
    return out


def intake(conn: Connection, svc: Services, resource: dict[str, Any], who: Principal) -> dict[str, Any]:
    """Store the NdE event and return the CommunicationRequest to store (subject/sender resolved).

    Not an NdE CommunicationRequest: returned unchanged. Without an identifier the message cannot be
    recognised when resent, so one is required (a replay then changes nothing)."""
    code = event_code(resource)
    if code is None:
        return resource
    try:
        event = to_event(resource, code)
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
