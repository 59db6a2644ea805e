"""Encounter events to stored resources: the one write behind the three intake doors.

One database transaction per message. The sender is checked first: a client sends only as the senders
registered to it (issue 16, "senders are bound to credentials"). Then the message log row (client,
sender, message id) is claimed, so that a replay hits the primary key and gets the first answer back,
and another client claiming the same sender and id first changes nothing for the real one. Then the
patient (matched by INS only when the identity is validated or qualified, else by the sender's IPP, else
created; never on name and birth date), the service provider and practitioners (by FINESS / RPPS), the
Encounter keyed by the sender's visit number, and the documents. Subscriptions' outbox rows ride along
through the repository hook.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import orjson
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from auth.policy import Principal
from auth.schema import oauth_client_sender
from connectors import events
from connectors.events import EncounterEvent, EventError, content_of
from coordination_api.coordination import namespaces, protocols
from coordination_api.core.services import Services
from coordination_api.core.validation import validate_resource
from coordination_api.core.writes import create_in
from coordination_api.errors import FhirError
from coordination_api.storage.engine import is_postgres
from coordination_api.storage.repository import Stored, new_id
from coordination_api.storage.schema import message_log
from fhir_profiles.french_identifiers import FINESS, INS_SYSTEMS, RPPS, TRUSTED_STATUSES, identity_statuses


@dataclass(frozen=True)
class Outcome:
    """What a message did; kept in the message log so that a replay answers the same."""

    kind: str
    patient: str  # "Patient/<id>"
    encounter: str | None  # "Encounter/<id>"
    replayed: bool = False
    organization: str | None = None  # "Organization/<id>": the service provider (the NdE sender)

    def to_json(self) -> str:
        return orjson.dumps(
            {
                "kind": self.kind,
                "patient": self.patient,
                "encounter": self.encounter,
                "organization": self.organization,
            }
        ).decode()


@dataclass(frozen=True)
class Origin:
    """Who delivers a message: the authenticated client and the senders it may send as.

    ``registered``: the client's senders in ``oauth_client_sender`` apply (HTTP doors, MLLP over TLS
    with a mapped certificate); ``listener``: the senders an MLLP listener accepts (None: no listener
    restriction); ``any_sender``: security disabled or an operator command (no credentials at all).
    A client with no registered sender may send as none (secure default).
    """

    client: str
    registered: bool = True
    listener: frozenset[str] | None = None
    any_sender: bool = False
    sender_field: str = "MSH-3"  # where the door reads the sender (named in the refusal)

    def at(self, sender_field: str) -> Origin:
        return replace(self, sender_field=sender_field)


UNRESTRICTED = Origin("-", registered=False, any_sender=True)


def origin_for(who: Principal) -> Origin:
    """The origin of a message posted over HTTP by ``who`` (security disabled: any sender)."""
    if who.unrestricted or who.client_id is None:
        return UNRESTRICTED
    return Origin(who.client_id)


# The sender that opened a stay, on the Encounter (meta.tag): only it may update the stay later.
INTAKE_SENDER = "https://coordination.cpts.fr/fhir/CodeSystem/intake-sender"


class SenderNotAllowedError(EventError):
    """The message's sender is not one the delivering client (or listener) may send as: HTTP 403,
    HL7 v2 AR."""

    application_code = "SENDER-NOT-ALLOWED"  # HL7 v2 ERR-5 (table 0357 has no security code)

    def __init__(self, message: str, location: str) -> None:
        super().__init__(message, code="207", location=location, rejected=True)


def check_sender(conn: Connection, origin: Origin, event: EncounterEvent) -> None:
    if origin.any_sender:
        return
    if not origin.registered and origin.listener is None:  # fail closed: no rule means no sender
        raise SenderNotAllowedError("No sender is allowed on this door", origin.sender_field)
    where = origin.sender_field
    candidates = {event.sender}
    if event.sender.startswith("nde:"):
        candidates.add(event.sender[4:])  # an NdE sender may be registered by its bare FINESS
    if origin.listener is not None and not candidates & origin.listener:
        raise SenderNotAllowedError(
            f"Sender {event.sender[:120]!r} is not accepted by this listener (COORDINATION_MLLP_SENDERS)",
            where,
        )
    if origin.registered:
        own = select(oauth_client_sender.c.sender).where(oauth_client_sender.c.client_id == origin.client)
        if conn.execute(own.limit(1)).first() is None:
            # CONTRACT.md: "a client registered with none may send as any sender" (the operator's choice
            # at registration; its messages are still de-duplicated under its own key).
            return
        found = conn.execute(
            own.where(oauth_client_sender.c.sender.in_(sorted(c[:255] for c in candidates)))
        ).first()
        if found is None:
            raise SenderNotAllowedError(
                f"Sender {event.sender[:120]!r} is not registered to this client "
                "(coordination clients create ... --sender)",
                where,
            )


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def check_strings(event: EncounterEvent) -> None:
    """R4 datatypes.html#string: no character below U+0020 but TAB, CR and LF, in anything an intake
    door stores (the HL7 v2 mapping refuses them per field already; this covers every door)."""

    def walk(value: Any, path: str) -> None:
        if isinstance(value, str):
            found = _CONTROL.search(value)
            if found:
                raise EventError(
                    f"{path}: control character U+{ord(found.group()):04X} not allowed in a FHIR string",
                    code="102",
                    location=path,
                )
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")

    walk(event.sender, "sender")
    walk(event.message_id, "message id")
    resources = [event.patient, event.encounter, event.service_provider, *event.practitioners]
    resources += [r for pair in event.documents for r in pair]
    for resource in resources:
        if resource is not None:
            walk(resource, str(resource.get("resourceType", "resource")))


def check_namespaces(event: EncounterEvent) -> None:
    """No door writes an identifier into another sender's namespace of this server (events.py): the
    patient and the stay are matched by identifier, so it would file the message on that sender's."""
    resources = [event.patient, event.encounter, event.service_provider, *event.practitioners]
    for resource in resources:
        if not isinstance(resource, dict):
            continue
        for index, identifier in enumerate(resource.get("identifier") or []):
            system = identifier.get("system") if isinstance(identifier, dict) else None
            if isinstance(system, str) and events.foreign_namespace(system, event.sender):
                where = f"{resource.get('resourceType', 'resource')}.identifier[{index}].system"
                raise EventError(
                    f"{where}: {system[:120]!r} is a namespace of this server that belongs to another sender",
                    code="103",
                    location=where,
                )


def process(svc: Services, event: EncounterEvent, origin: Origin) -> Outcome:
    """Store the event in one transaction; the same (client, sender, message id) again changes nothing."""
    with svc.repo.writing() as conn:
        return process_in(conn, svc, event, origin)


def process_in(conn: Connection, svc: Services, event: EncounterEvent, origin: Origin) -> Outcome:
    """``process`` inside the caller's transaction (e.g. the create of an NdE CommunicationRequest)."""
    if not event.sender or not event.message_id:
        raise EventError("The message has no sender or no message id", code="101", location="MSH-10")
    if len(event.sender) > 255 or len(event.message_id) > 255:
        # Truncating would make two distinct messages share a key (the second one a "replay").
        raise EventError("The sender or the message id is longer than 255 characters", code="102")
    check_strings(event)
    check_sender(conn, origin, event)
    check_namespaces(event)
    key = (
        message_log.c.client == origin.client[:255],
        message_log.c.sender == event.sender[:255],
        message_log.c.message_id == event.message_id[:255],
    )
    # The primary key decides between a first delivery and a replay, also between two concurrent
    # deliveries of one message (the second waits on the key, then inserts nothing).
    claimed = conn.execute(
        _insert_for(conn)(message_log)
        .values(
            client=origin.client[:255],
            sender=event.sender[:255],
            message_id=event.message_id[:255],
            kind=event.kind,
            received_us=int(time.time() * 1_000_000),
            outcome="{}",
        )
        .on_conflict_do_nothing()
        .returning(message_log.c.sender)
    ).first()
    if claimed is None:
        return _replay(conn, key)
    with namespaces.writing_as(namespaces.intake_for(event.sender)):  # its own identifiers only
        outcome = _store(conn, svc, event)
    conn.execute(message_log.update().where(*key).values(outcome=outcome.to_json()))
    return outcome


def _insert_for(conn: Connection) -> Any:
    """The dialect's INSERT (both have ON CONFLICT DO NOTHING … RETURNING)."""
    return pg_insert if is_postgres(conn) else sqlite_insert


def _replay(conn: Connection, key: tuple[Any, ...]) -> Outcome:
    row = conn.execute(select(message_log.c.outcome).where(*key)).scalar_one()
    data = orjson.loads(row)
    return Outcome(data["kind"], data["patient"], data.get("encounter"), True, data.get("organization"))


def _valid(resource: dict[str, Any], resource_type: str, event: EncounterEvent) -> dict[str, Any]:
    try:
        return validate_resource(resource, resource_type, structure=not event.structure_checked)
    except FhirError as exc:
        raise EventError(f"{resource_type}: {exc.diagnostics}", code="102", location=resource_type) from exc


def _upsert_by_identifier(
    conn: Connection,
    svc: Services,
    event: EncounterEvent,
    resource_type: str,
    body: dict[str, Any],
    identifier: dict[str, Any],
) -> tuple[Stored, bool]:
    """Conditional create on one identifier: (stored, created). The database decides between
    concurrent senders (the conditional-create claim), not a check-then-insert."""
    criteria = identifier_criteria(identifier)
    result = create_in(conn, svc, resource_type, _valid(body, resource_type, event), criteria)
    assert result.stored is not None
    return result.stored, result.status == 201


def identifier_criteria(identifier: dict[str, Any]) -> str:
    """``identifier=system|value`` as conditional-create criteria."""
    return f"identifier={_escape(str(identifier.get('system', '')))}|{_escape(str(identifier['value']))}"


def _escape(value: str) -> str:
    """A token part as a search value (R4 search.html#escaping), URL-encoded for the criteria."""
    for char in "\\|,$":
        value = value.replace(char, "\\" + char)
    return quote(value, safe="")


def _patient(conn: Connection, svc: Services, event: EncounterEvent) -> Stored:
    patient = dict(event.patient)
    patient.pop("id", None)
    identifiers = [i for i in patient.get("identifier") or [] if i.get("system") and i.get("value")]
    trusted = bool(identity_statuses(patient) & TRUSTED_STATUSES)
    ins = [i for i in identifiers if i["system"] in INS_SYSTEMS]
    if ins and not trusted:
        raise EventError(
            "An INS may be used only with a validated or qualified identity", code="102", location="PID-32"
        )
    local = [i for i in identifiers if i["system"] not in INS_SYSTEMS]
    keys = ins[:1] + local[:1]
    if not keys:
        result = create_in(conn, svc, "Patient", _valid(patient, "Patient", event))
        assert result.stored is not None
        return result.stored
    stored, created = _upsert_by_identifier(conn, svc, event, "Patient", patient, keys[0])
    if created:
        return stored
    # Found by INS: make sure this sender's IPP is on the record too (matching by IPP next time).
    current = stored.json()
    known = {(i.get("system"), i.get("value")) for i in current.get("identifier") or []}
    missing = [i for i in identifiers if (i["system"], i["value"]) not in known]
    if missing:
        current["identifier"] = [*(current.get("identifier") or []), *missing]
        current.pop("meta", None)
        stored, _created = svc.repo.update(conn, "Patient", stored.res_id, _valid(current, "Patient", event))
    return stored


def _organization(conn: Connection, svc: Services, event: EncounterEvent) -> Stored | None:
    organization = event.service_provider
    if organization is None:
        return None
    finess = [i for i in organization.get("identifier") or [] if i.get("system") == FINESS and i.get("value")]
    body = {k: v for k, v in organization.items() if k != "id"}
    if finess:
        stored, created = _upsert_by_identifier(conn, svc, event, "Organization", body, finess[0])
        if created:  # unknown here until now: e.g. the directory completes it later (connector job)
            _new_party(conn, svc, "Organization", finess[0]["value"])
        return stored
    result = create_in(conn, svc, "Organization", _valid(body, "Organization", event))
    return result.stored


def _practitioner(
    conn: Connection, svc: Services, event: EncounterEvent, practitioner: dict[str, Any]
) -> Stored | None:
    rpps = [i for i in practitioner.get("identifier") or [] if i.get("system") == RPPS and i.get("value")]
    if not rpps:
        return None  # an unidentified practitioner is not worth a record of its own
    body = {k: v for k, v in practitioner.items() if k != "id"}
    stored, created = _upsert_by_identifier(conn, svc, event, "Practitioner", body, rpps[0])
    if created:  # unknown here until now: e.g. the directory completes it later (connector job)
        _new_party(conn, svc, "Practitioner", rpps[0]["value"])
    return stored


def _new_party(conn: Connection, svc: Services, resource_type: str, number: str) -> None:
    """The hooks create_app registers for a Practitioner (RPPS) or Organization (FINESS) first met here."""
    for hook in svc.hooks.new_party:
        hook(conn, svc, resource_type, number)


def _encounter(
    conn: Connection,
    svc: Services,
    event: EncounterEvent,
    patient: Stored,
    provider: Stored | None,
    practitioners: list[Stored],
) -> Stored | None:
    if event.encounter is None:
        return None
    incoming = content_of(event.encounter)
    incoming["subject"] = {"reference": f"Patient/{patient.res_id}"}
    if provider is not None:
        incoming["serviceProvider"] = {"reference": f"Organization/{provider.res_id}"}
    if practitioners:
        incoming["participant"] = [
            {"individual": {"reference": f"Practitioner/{p.res_id}"}} for p in practitioners
        ]
    identifiers = incoming.get("identifier") or []
    visit = [i for i in identifiers if i.get("system") and i.get("value")]
    if not visit and any(i.get("value") for i in identifiers):
        # A visit number without assigning authority (PV1-19 without its HD, an Encounter.identifier
        # without system) is unique within its sender only: scope it by the sender, so that the
        # admission and the discharge of one stay still meet on the same Encounter.
        incoming["identifier"] = identifiers = [dict(i) for i in identifiers]
        bare = next(i for i in identifiers if i.get("value"))
        bare["system"] = visit_system(event.sender)
        visit = [bare]
    if not visit:
        result = create_in(conn, svc, "Encounter", _valid(incoming, "Encounter", event))
        return result.stored
    # The stay belongs to the sender that opened it (issue 16: a client bound to its own sender must not
    # rewrite another hospital's stay by quoting its visit number), and to one patient.
    incoming.setdefault("meta", {})["tag"] = [{"system": INTAKE_SENDER, "code": event.sender[:255]}]
    stored, created = _upsert_by_identifier(conn, svc, event, "Encounter", incoming, visit[0])
    if created:
        return stored
    current = stored.json()
    owners = [
        t.get("code")
        for t in (current.get("meta") or {}).get("tag") or []
        if t.get("system") == INTAKE_SENDER
    ]
    if owners and event.sender[:255] not in owners:
        raise SenderNotAllowedError(
            f"The visit number {visit[0]['value'][:64]!r} belongs to a stay another sender opened", "PV1-19"
        )
    if (current.get("subject") or {}).get("reference") != incoming["subject"]["reference"]:
        raise EventError(
            f"The visit number {visit[0]['value'][:64]!r} belongs to another patient's stay",
            code="205",  # HL7 table 0357 "duplicate key identifier": a content conflict, not our failure
            location="PV1-19",
        )
    merged = _merge(current, incoming, event.kind)
    if merged == content_of(stored.json()):
        return stored
    updated, _created = svc.repo.update(conn, "Encounter", stored.res_id, _valid(merged, "Encounter", event))
    return updated


def visit_system(sender: str) -> str:
    """The identifier system of a sender's unscoped visit numbers."""
    return events.visit_system(sender)


def _merge(current: dict[str, Any], incoming: dict[str, Any], kind: str) -> dict[str, Any]:
    """The stored Encounter brought up to date by a later event of the same visit."""
    merged = content_of(current)
    for key, value in incoming.items():
        if key == "period":
            period = dict(merged.get("period") or {})
            period.update({k: v for k, v in value.items() if v})
            merged["period"] = period
        elif key == "hospitalization":
            stay = dict(merged.get("hospitalization") or {})
            stay.update(value)
            merged["hospitalization"] = stay
        elif key == "identifier":
            known = {(i.get("system"), i.get("value")) for i in merged.get("identifier") or []}
            merged["identifier"] = [
                *(merged.get("identifier") or []),
                *(i for i in value if (i.get("system"), i.get("value")) not in known),
            ]
        else:
            merged[key] = value
    if kind == "cancel-discharge":
        # A13: the discharge did not happen; the stay goes on (IHE PAM FR: annulation de sortie).
        merged.get("period", {}).pop("end", None)
        hospitalization = merged.get("hospitalization")
        if isinstance(hospitalization, dict):
            hospitalization.pop("dischargeDisposition", None)
            if not hospitalization:
                merged.pop("hospitalization")
    return merged


def _documents(
    conn: Connection, svc: Services, event: EncounterEvent, patient: Stored, encounter: Stored | None
) -> None:
    for reference, binary in event.documents:
        doc = content_of(reference)
        doc_id = new_id()
        if binary is not None:
            # The letter is read as its DocumentReference is (Binary.securityContext, issue 16).
            content = {k: v for k, v in binary.items() if k != "id"}
            content["securityContext"] = {"reference": f"DocumentReference/{doc_id}"}
            stored_binary = svc.repo.create(conn, "Binary", _valid(content, "Binary", event))
            for content in doc.get("content") or []:
                attachment = content.get("attachment")
                if isinstance(attachment, dict):
                    attachment.pop("data", None)
                    attachment["url"] = f"Binary/{stored_binary.res_id}"
        doc["subject"] = {"reference": f"Patient/{patient.res_id}"}
        if encounter is not None:
            doc.setdefault("context", {})["encounter"] = [{"reference": f"Encounter/{encounter.res_id}"}]
        svc.repo.create(conn, "DocumentReference", _valid(doc, "DocumentReference", event), doc_id)


def _store(conn: Connection, svc: Services, event: EncounterEvent) -> Outcome:
    patient = _patient(conn, svc, event)
    provider = _organization(conn, svc, event)
    practitioners = [p for p in (_practitioner(conn, svc, event, x) for x in event.practitioners) if p]
    encounter = _encounter(conn, svc, event, patient, provider, practitioners)
    _documents(conn, svc, event, patient, encounter)
    if event.kind == "discharge" and encounter is not None:  # protocols triggered by a discharge
        protocols.start_on_discharge(conn, svc, f"Patient/{patient.res_id}", f"Encounter/{encounter.res_id}")
    return Outcome(
        event.kind,
        f"Patient/{patient.res_id}",
        f"Encounter/{encounter.res_id}" if encounter is not None else None,
        organization=f"Organization/{provider.res_id}" if provider is not None else None,
    )
