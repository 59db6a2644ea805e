"""The audit trail: one AuditEvent per interaction, IHE Basic Audit Log Patterns (BALP) style.

type = rest (DICOM/HL7 audit event type), subtype = the FHIR restful interaction, agents = the client
application and the practitioner, entities = the patient(s) and the resource, outcome 0/4/8.
Rows are never updated or deleted through the API.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import insert
from sqlalchemy.engine import Connection

from auth.policy import Principal
from auth.schema import audit_event, audit_patient

INTERACTION = "http://hl7.org/fhir/restful-interaction"
# Break-the-glass purpose of use (HL7 v3 ActReason BTG), as BALP records it.
BTG = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
    "code": "BTG",
    "display": "break the glass",
}
ACTION = {"create": "C", "read": "R", "vread": "R", "update": "U", "patch": "U", "delete": "D"}
OUTCOME_DISPLAY = {"0": "Success", "4": "Minor failure", "8": "Serious failure", "12": "Major failure"}


@dataclass
class AuditRecord:
    """What one request did, gathered while it runs."""

    subtype: str
    method: str
    path: str
    address: str | None
    request_id: str | None
    entities: list[str] = field(default_factory=list)  # "Type/id"
    patients: set[str] = field(default_factory=set)
    query: str | None = None
    break_glass_reason: str | None = None


def outcome_code(status: int) -> str:
    if status < 400:
        return "0"
    return "4" if status < 500 else "8"


def audit_json(
    record: AuditRecord, principal: Principal | None, status: int, now_us: int, event_id: str
) -> dict[str, Any]:
    recorded = (
        datetime.fromtimestamp(now_us / 1_000_000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
    code = outcome_code(status)
    agents: list[dict[str, Any]] = []
    if principal is not None and principal.client_id:
        agents.append(
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://dicom.nema.org/resources/ontology/DCM",
                            "code": "110150",
                            "display": "Application",
                        }
                    ]
                },
                "who": {"identifier": {"system": "urn:coordination:client", "value": principal.client_id}},
                "requestor": principal.agent is None,
            }
        )
        if record.address:
            agents[0]["network"] = {"address": record.address, "type": "2"}
    if principal is not None and principal.agent:
        user_agent: dict[str, Any] = {
            "type": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                        "code": "IRCP",
                        "display": "information recipient",
                    }
                ]
            },
            "who": {"reference": principal.agent},
            "requestor": True,
        }
        if principal.username:
            user_agent["altId"] = principal.username
        if record.break_glass_reason:
            user_agent["purposeOfUse"] = [{"coding": [BTG], "text": record.break_glass_reason}]
        agents.append(user_agent)
    if not agents:
        agents.append({"who": {"display": "anonymous"}, "requestor": True})
    entities: list[dict[str, Any]] = [
        {
            "what": {"reference": f"Patient/{patient}"},
            "type": {
                "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                "code": "1",
                "display": "Person",
            },
            "role": {
                "system": "http://terminology.hl7.org/CodeSystem/object-role",
                "code": "1",
                "display": "Patient",
            },
        }
        for patient in sorted(record.patients)
    ]
    for entity in record.entities[:100]:
        entities.append(
            {
                "what": {"reference": entity},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "2",
                    "display": "System Object",
                },
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "4",
                    "display": "Domain Resource",
                },
            }
        )
    if record.query is not None:
        entities.append(
            {
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "24",
                    "display": "Query",
                },
                "query": _b64(record.query),
            }
        )
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": event_id,
        "meta": {"versionId": "1", "lastUpdated": recorded},
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{"system": INTERACTION, "code": record.subtype}],
        "action": ACTION.get(record.subtype, "E"),
        "recorded": recorded,
        "outcome": code,
        "outcomeDesc": f"HTTP {status}",
        "agent": agents,
        "source": {
            "observer": {"display": "coordination FHIR server"},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
    }
    if record.break_glass_reason:
        event["purposeOfEvent"] = [{"coding": [BTG], "text": record.break_glass_reason}]
    if entities:
        event["entity"] = entities
    return event


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_audit(
    conn: Connection, record: AuditRecord, principal: Principal | None, status: int, now_us: int
) -> None:
    """Insert the event (and its patients) on ``conn``; the caller's transaction makes it durable."""
    event_id = str(uuid.uuid4())
    content = orjson.dumps(audit_json(record, principal, status, now_us, event_id)).decode()
    result = conn.execute(
        insert(audit_event).returning(audit_event.c.pk),
        {
            "event_id": event_id,
            "recorded_us": now_us,
            "subtype": record.subtype,
            "outcome": outcome_code(status),
            "client_id": principal.client_id if principal else None,
            "agent": principal.agent if principal else None,
            "entity": record.entities[0] if record.entities else None,
            "break_glass": record.break_glass_reason is not None,
            "content": content,
        },
    )
    pk = result.scalar_one()
    if record.patients:
        conn.execute(
            insert(audit_patient), [{"audit_pk": pk, "patient_id": p} for p in sorted(record.patients)]
        )
