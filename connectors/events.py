"""The encounter event: what the three intake doors agree on before the one write.

``$process-message`` (R4 messaging), the ANS NdE CommunicationRequest and HL7 v2 ADT (IHE PAM France)
are each mapped to an :class:`EncounterEvent`; ``discharge.process`` then matches the patient, upserts the
Encounter keyed by the sender's visit number and stores everything in one transaction, once per
(sender, message id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

# Event kinds (HL7 v2 trigger → kind): A01 admit, A03 discharge, A04 register, A08 update,
# A11 cancel-admit, A13 cancel-discharge; FHIR notification-transfer / A02 → transfer.
KINDS = frozenset(
    {"admit", "discharge", "transfer", "register", "update", "cancel-admit", "cancel-discharge"}
)


# The server's own identifier namespaces (R4 Identifier.system), scoped by the intake sender
# (``MSH-3^MSH-4``, a MessageHeader.source): a bare HL7 v2 assigning authority and a visit number without
# one are unique within their sender only. No sender may write into another's (review 20 F5: it would
# file its messages on that sender's patients and stays); the rest of ``urn:coordination:`` is ours.
RESERVED_NAMESPACE = "urn:coordination:"
HL7V2_NAMESPACE = "urn:coordination:hl7v2:"
VISIT_NAMESPACE = "urn:coordination:visit-number:"


def scoped_system(sender: str, namespace: str) -> str:
    """The system of a bare HL7 v2 namespace (HD-1) of ``sender``."""
    return f"{HL7V2_NAMESPACE}{quote(sender, safe='')}:{quote(namespace, safe='')}"


def visit_system(sender: str) -> str:
    """The identifier system of a sender's unscoped visit numbers."""
    return f"{VISIT_NAMESPACE}{quote(sender, safe='')}"


def foreign_namespace(system: str, sender: str) -> bool:
    """``system`` is in the server's reserved space and not one of ``sender``'s own namespaces."""
    if system[: len(RESERVED_NAMESPACE)].lower() != RESERVED_NAMESPACE:
        return False
    return not (system.startswith(scoped_system(sender, "")) or system == visit_system(sender))


def content_of(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's content without its sender-side ``id`` and ``meta`` (we assign our own)."""
    return {k: v for k, v in resource.items() if k not in {"id", "meta"}}


class EventError(Exception):
    """The message cannot become an encounter event.

    ``rejected``: the message itself is not acceptable (unsupported type/event, not parseable) —
    HL7 v2 AR, FHIR fatal-error. Otherwise its content is wrong (missing or invalid field, invalid
    INS) — HL7 v2 AE, FHIR fatal-error too. ``location`` names the field (e.g. ``PID-3``,
    ``MessageHeader.eventCoding``); ``code`` is the HL7 table 0357 error code (100 segment sequence,
    101 required field missing, 102 data type error, 103 table value not found, 200 unsupported
    message type, 201 unsupported event code, 207 application internal error).
    """

    def __init__(
        self, message: str, *, location: str | None = None, code: str = "207", rejected: bool = False
    ):
        super().__init__(message)
        self.location = location
        self.code = code
        self.rejected = rejected


@dataclass
class EncounterEvent:
    kind: str  # one of KINDS
    sender: str  # the sending system: HL7 v2 "MSH-3^MSH-4" (application^facility), FHIR source.endpoint
    message_id: str  # MSH-10 / MessageHeader.id / the NdE CommunicationRequest identifier
    patient: dict[str, Any]  # FHIR R4 Patient JSON without id: identifiers (INS + reliability, IPP)…
    # FHIR R4 Encounter JSON without id and subject; identifier[0] = the sender's visit number
    # (system + value), status, class, period, hospitalization.dischargeDisposition, location…
    encounter: dict[str, Any] | None = None
    service_provider: dict[str, Any] | None = None  # Organization JSON (FINESS identifier), without id
    practitioners: list[dict[str, Any]] = field(default_factory=list)  # referring/attending, RPPS
    # (DocumentReference JSON, Binary JSON or None): e.g. the discharge letter (LOINC 11490-0)
    documents: list[tuple[dict[str, Any], dict[str, Any] | None]] = field(default_factory=list)
    occurred: str | None = None  # FHIR dateTime of the event (EVN-2/EVN-6, MessageHeader timestamp)
    # The door already checked the resources' R4 structure (a $process-message Bundle is validated
    # whole): intake then applies only the profile and French identifier rules to each of them.
    structure_checked: bool = False
    # What the door accepted with a reservation (HL7 v2: ERR segments of severity W in the AA).
    warnings: list[EventError] = field(default_factory=list)
