"""The audit trail: one AuditEvent per interaction, IHE Basic Audit Log Patterns (BALP) style.

type = rest (DICOM/HL7 audit event type), subtype = the FHIR restful interaction, agents = the client
application and the practitioner, entities = the patient(s) and the resource, outcome 0/4/8.
Rows are never updated or deleted through the API.
"""

from __future__ import annotations

import atexit
import base64
import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.pool import StaticPool

from auth.policy import Principal
from auth.schema import audit_event, audit_patient

log = logging.getLogger(__name__)
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
    entities: list[str] = field(default_factory=list)  # "Type/id", each once, in access order
    patients: set[str] = field(default_factory=set)
    query: str | None = None
    break_glass_reason: str | None = None
    _seen: set[str] = field(default_factory=set, repr=False)

    def add_entity(self, name: str) -> None:
        """Note one accessed resource; a set beside the list keeps a page of thousands linear."""
        if name not in self._seen:
            self._seen.add(name)
            self.entities.append(name)


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


def audit_row(
    record: AuditRecord, principal: Principal | None, status: int, now_us: int
) -> tuple[dict[str, Any], list[str]]:
    """The ``audit_event`` row of one request and the patients it touched."""
    event_id = str(uuid.uuid4())
    content = orjson.dumps(audit_json(record, principal, status, now_us, event_id)).decode()
    row = {
        "event_id": event_id,
        "recorded_us": now_us,
        "subtype": record.subtype,
        "outcome": outcome_code(status),
        "client_id": principal.client_id if principal else None,
        "agent": principal.agent if principal else None,
        "entity": record.entities[0] if record.entities else None,
        "break_glass": record.break_glass_reason is not None,
        "content": content,
    }
    return row, sorted(record.patients)


_EVENT_COLUMNS = (
    "event_id",
    "recorded_us",
    "subtype",
    "outcome",
    "client_id",
    "agent",
    "entity",
    "break_glass",
    "content",
)


@cache  # one pair per driver paramstyle
def _audit_sql(paramstyle: str) -> tuple[str, str]:
    mark = "?" if paramstyle == "qmark" else "%s"
    return (
        f"INSERT INTO {audit_event.name} ({', '.join(_EVENT_COLUMNS)}) "
        f"VALUES ({', '.join([mark] * len(_EVENT_COLUMNS))})",
        # The patients join their event by its unique event_id: no RETURNING needed, so both
        # inserts are one executemany each whatever the number of events.
        f"INSERT INTO {audit_patient.name} (audit_pk, patient_id) "
        f"SELECT pk, {mark} FROM {audit_event.name} WHERE event_id = {mark}",
    )


def insert_audit(conn: Connection, events: list[tuple[dict[str, Any], list[str]]]) -> None:
    """Insert events and their patients on ``conn``; the caller's transaction makes them durable.
    Driver SQL built once (this runs for every request: statement building was a quarter of a read's
    CPU, issue 21); SQLAlchemy still wraps driver errors (IntegrityError...) for the writer's retries."""
    if not events:
        return
    events_sql, patients_sql = _audit_sql(conn.dialect.paramstyle)
    conn.exec_driver_sql(events_sql, [tuple(row[c] for c in _EVENT_COLUMNS) for row, _patients in events])
    pairs = [(patient, row["event_id"]) for row, patients in events for patient in patients]
    if pairs:
        conn.exec_driver_sql(patients_sql, pairs)


def write_audit(
    conn: Connection, record: AuditRecord, principal: Principal | None, status: int, now_us: int
) -> None:
    """One event, in the caller's transaction (writes: the AuditEvent commits with the data)."""
    insert_audit(conn, [audit_row(record, principal, status, now_us)])


class AuditUnavailableError(Exception):
    """The event cannot be recorded: the request must not be answered as if audited."""


@dataclass
class _Pending:
    event: tuple[dict[str, Any], list[str]]
    done: threading.Event | None = None  # set once committed ("sync" mode)
    error: BaseException | None = None


class AuditWriter:
    """Read audits, committed in batches by one writer thread per process.

    Concurrent requests share one transaction: one lock and one flush for many events instead of one
    each (SQLite serialises writers; PostgreSQL flushes its WAL at each commit). ``sync``: the request
    waits for the commit of its event. ``async``: it does not (IHE BALP as HAPI FHIR's memory-queue
    sink does); a failed batch is retried, never dropped, and once ``max_pending`` events wait, requests
    are refused (503) rather than served unaudited. ``flush`` runs at exit.
    """

    MAX_BATCH = 256
    RETRY_SECONDS = (0.2, 1.0, 5.0)

    def __init__(self, engine: Engine, mode: str = "sync", max_pending: int = 10_000) -> None:
        if mode not in {"async", "sync"}:
            raise ValueError(f"audit mode must be 'async' or 'sync', not {mode!r}")
        self.engine = engine
        self.mode = mode
        self.max_pending = max_pending
        self.timeout = 30.0
        # One shared SQLite connection (StaticPool: in-memory) cannot be used from another thread.
        self.threaded = not isinstance(engine.pool, StaticPool)
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._pending = 0  # queued or being written
        self._idle = threading.Condition()
        self._owner: int | None = None  # pid whose thread runs (gunicorn forks after create_app)

    def write(self, event: tuple[dict[str, Any], list[str]]) -> None:
        if not self.threaded:
            with self.engine.begin() as conn:
                insert_audit(conn, [event])
            return
        self._ensure_thread()
        pending = _Pending(event, threading.Event() if self.mode == "sync" else None)
        with self._idle:
            if self._pending >= self.max_pending:
                raise AuditUnavailableError(f"{self._pending} audit events are waiting for the database")
            self._pending += 1
        self._queue.put(pending)
        if pending.done is None:
            return
        if not pending.done.wait(self.timeout):
            raise AuditUnavailableError("the audit writer did not answer in time")
        if pending.error is not None:
            raise AuditUnavailableError(str(pending.error)) from pending.error

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event is committed (False if the time ran out)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _ensure_thread(self) -> None:
        pid = os.getpid()
        if self._owner == pid:
            return
        with self._idle:
            if self._owner != pid:
                self._queue = queue.SimpleQueue()  # a forked child starts afresh
                self._pending = 0
                threading.Thread(target=self._run, name="audit-writer", daemon=True).start()
                atexit.register(self.flush)
                self._owner = pid

    def _run(self) -> None:
        source = self._queue
        while True:
            batch = [source.get()]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(source.get_nowait())
                except queue.Empty:
                    break
            self._commit(batch)
            with self._idle:
                self._pending -= len(batch)
                self._idle.notify_all()

    def _insert(self, batch: list[_Pending]) -> Exception | None:
        try:
            with self.engine.connect().execution_options(coordination_write=True) as conn, conn.begin():
                insert_audit(conn, [p.event for p in batch])
        except Exception as exc:  # noqa: BLE001  (the writer must live on; no params logged)
            log.error("audit batch of %d events failed: %s", len(batch), type(exc).__name__)
            return exc
        return None

    def _commit(self, batch: list[_Pending]) -> None:
        error: Exception | None = None
        for attempt in range(len(self.RETRY_SECONDS) + 1):
            error = self._insert(batch)
            if error is None:
                break
            if isinstance(error, IntegrityError | DataError):  # this data will never go in
                if len(batch) > 1:
                    for pending in batch:  # one bad event must not hold back the others
                        self._commit([pending])
                    return
                log.error("audit event %s dropped: %s", batch[0].event[0]["event_id"], type(error).__name__)
                break
            if self.mode == "sync":
                break  # the request answers 503 at once rather than wait for retries
            if attempt < len(self.RETRY_SECONDS):
                time.sleep(self.RETRY_SECONDS[attempt])
                continue
            # Still failing: back to the end of the queue (bounded by max_pending), never dropped.
            with self._idle:
                self._pending += len(batch)
            for pending in batch:
                self._queue.put(pending)
            return
        for pending in batch:
            pending.error = error
            if pending.done is not None:
                pending.done.set()
