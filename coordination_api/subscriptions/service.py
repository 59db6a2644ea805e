"""Write-time matching: the repository hook that keeps subscription state and fills the outbox.

ARCHITECTURE.md "One write": it runs inside the write transaction, so outbox rows commit or roll back
with the data they announce. Criteria are evaluated in SQL: the compiled search conditions plus
``resource.pk IN (written pks)``, one indexed query per candidate subscription.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, bindparam, false, insert, or_, select, update
from sqlalchemy.engine import Connection

from auth import policy
from coordination_api.config import SubscriptionSettings
from coordination_api.core.principal import authenticated
from coordination_api.errors import Category, FhirError
from coordination_api.outbox import doorbell
from coordination_api.search.compiler import HopGuard, SearchCompiler
from coordination_api.storage.repository import Repository, Stored, now_us
from coordination_api.storage.schema import resource, subscription_outbox, subscription_state
from coordination_api.subscriptions import endpoint, model, reach

log = logging.getLogger(__name__)

# States whose subscriptions collect events (an errored one keeps counting, for $events replay).
COLLECTING = ("requested", "active", "error")
OWNER_COLUMNS = ("owner_client", "owner_practitioner", "owner_patient", "owner_scopes")


def not_ended(now: int | ColumnElement[int]) -> ColumnElement[bool]:
    """R4 Subscription.end: a subscription past its end matches nothing and is sent nothing."""
    st = subscription_state
    return or_(st.c.end_us.is_(None), st.c.end_us > now)


# Built once: this runs in every write transaction (statement construction costs more than the query).
_CANDIDATES = (
    select(
        subscription_state.c.res_pk,
        subscription_state.c.version,
        subscription_state.c.res_id,
        subscription_state.c.resource_type,
        subscription_state.c.owner_client,
        subscription_state.c.owner_practitioner,
        subscription_state.c.owner_patient,
        subscription_state.c.owner_scopes,
    )
    .where(
        subscription_state.c.status.in_(COLLECTING),
        subscription_state.c.resource_type.in_(bindparam("types", expanding=True)),
        not_ended(bindparam("now")),
    )
    .order_by(subscription_state.c.res_pk)
)


def _focus(item: Stored) -> str:
    return f"{item.res_type}/{item.res_id}/_history/{item.version}"


def effective_status(status: str, end_us: int | None, now: int) -> str:
    """The status to report: "off" once Subscription.end has passed, even before the worker says so."""
    return "off" if end_us is not None and end_us <= now else status


def request_owner() -> dict[str, Any] | None:
    """The caller of the current HTTP request as owner columns; None outside a request or without a
    caller (then the owner is left as it was; a new subscription is unrestricted, like CLI writes)."""
    who = authenticated()
    if who is None:
        return None
    if who.unrestricted:
        return dict.fromkeys(OWNER_COLUMNS)
    return {
        "owner_client": who.client_id,
        "owner_practitioner": who.practitioner_id,
        # patient/ scopes confine a user token to its launch patient (as access.patient_filter does).
        # Without a launch patient, patient/ scopes reach no one (policy.NO_PATIENT).
        "owner_patient": (who.patient_id or policy.NO_PATIENT)
        if "patient" in who.scopes.contexts()
        else None,
        "owner_scopes": " ".join(sorted(who.scopes.raw)),
    }


@dataclass(frozen=True)
class Compiled:
    spec: model.Spec
    where: list[ColumnElement[bool]]


class SubscriptionService:
    def __init__(self, repo: Repository, compiler: SearchCompiler, config: SubscriptionSettings) -> None:
        self.repo = repo
        self.compiler = compiler
        self.config = config
        # Set by the security layer: who may put a chain or _has hop in a Subscription's criteria.
        self.criteria_guard: HopGuard | None = None
        self._cache: dict[tuple[int, int, str], Compiled] = {}
        self._lock = threading.Lock()
        # Candidate subscriptions per resource type, read once per write transaction (an intake
        # message writes several resources; each would otherwise ask again).
        self._candidates: weakref.WeakKeyDictionary[Connection, tuple[Any, dict[str, list[Any]]]] = (
            weakref.WeakKeyDictionary()
        )

    # -- compiled criteria, cached per subscription version -------------------------------------

    def compile(self, spec: model.Spec, hop_guard: HopGuard | None = None) -> list[ColumnElement[bool]]:
        try:
            query = self.compiler.compile(spec.resource_type, spec.params, strict=True, hop_guard=hop_guard)
        except FhirError as exc:
            if exc.category is Category.FORBIDDEN:
                raise  # the writer may not ask this (a hop beyond their reach), not a bad criteria
            raise FhirError(
                Category.UNPROCESSABLE,
                f"Subscription criteria: {exc.diagnostics}",
                expression="Subscription.criteria",
            ) from exc
        if query.includes or query.revincludes or query.sort_keys:
            raise FhirError(
                Category.UNPROCESSABLE,
                "Subscription criteria may not use _include, _revinclude or _sort",
                expression="Subscription.criteria",
            )
        return query.where

    def compiled(self, conn: Connection, res_pk: int, version: int, res_id: str) -> Compiled | None:
        # The id is in the key: SQLite may hand a deleted row's pk to a new resource.
        key = (res_pk, version, res_id)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        row = conn.execute(
            select(resource.c.res_id, resource.c.version, resource.c.content).where(resource.c.pk == res_pk)
        ).first()
        if row is None or row.content is None:
            return None
        stored = Stored(res_pk, "Subscription", row.res_id, row.version, 0, False, row.content)
        spec = model.parse(row.res_id, stored.json())
        compiled = Compiled(spec, self.compile(spec))
        with self._lock:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = compiled
        return compiled

    # -- the hook -------------------------------------------------------------------------------

    def on_written(self, conn: Connection, stored: list[Stored]) -> None:
        for item in stored:
            if item.res_type == "Subscription":
                self._candidates.pop(conn, None)
                self._subscription_written(conn, item)
        written = [s for s in stored if s.res_type != "Subscription" and not s.deleted]
        if written:
            self._match(conn, written)

    def _subscription_written(self, conn: Connection, item: Stored) -> None:
        st = subscription_state
        row = conn.execute(select(st).where(st.c.res_pk == item.pk)).first()
        body = item.json()
        status = str(body.get("status") or "")
        if item.deleted or status not in model.LIVE:
            # "off" (or "error" set by us or the client): stop; the state and rows stay for $events.
            if row is not None:
                new_status = "error" if status == "error" else "off"
                conn.execute(
                    update(st)
                    .where(st.c.res_pk == item.pk)
                    .values(status=new_status, version=item.version, handshake_due=False)
                )
            elif not item.deleted:
                # Created "off" (R4: a client may submit requested or off): nothing to match yet, but
                # its owner is recorded, as for any other (its channel may carry credentials).
                channel = body.get("channel") if isinstance(body.get("channel"), dict) else {}
                conn.execute(
                    insert(st).values(
                        res_pk=item.pk,
                        res_id=item.res_id,
                        version=item.version,
                        status="off",
                        resource_type="",
                        endpoint=str((channel or {}).get("endpoint") or ""),
                        origin=endpoint.origin_key(str((channel or {}).get("endpoint") or "")),
                        events=0,
                        handshake_due=False,
                        max_count=1,
                        **(request_owner() or {}),
                    )
                )
            return
        spec = model.parse(item.res_id, body)
        # A criteria we cannot evaluate is refused now (422), not at match time; its chains and _has
        # hops are judged for the writer as a search of theirs would be (criteria_guard, issue 16).
        self.compile(spec, self.criteria_guard)
        values: dict[str, Any] = {
            "res_id": item.res_id,
            "version": item.version,
            "resource_type": spec.resource_type,
            "topic": spec.topic_url,
            "endpoint": spec.endpoint,
            "heartbeat_s": spec.heartbeat_s,
            "max_count": max(1, min(spec.max_count, self.config.max_count_cap)),
            "end_us": spec.end_us,
        }
        # The owner is whoever last wrote the Subscription through the API: whoever points it at an
        # endpoint gets only what they may read themselves. The worker's own status writes keep it.
        owner = request_owner()
        if owner is not None:
            values.update(owner)
        if row is None:
            values["origin"] = endpoint.check_or_422(spec.endpoint, self.config)
            conn.execute(
                insert(st).values(
                    res_pk=item.pk, status="requested", events=0, handshake_due=True, error=None, **values
                )
            )
            doorbell.ring(conn, doorbell.NOTIFICATIONS)  # the handshake is the worker's
            return
        if row.status == status and row.endpoint == spec.endpoint:
            # Our own activation write, or an edit that keeps the channel: no new handshake.
            conn.execute(update(st).where(st.c.res_pk == item.pk).values(**values))
            return
        # A (re)requested subscription or a new endpoint: check it and shake hands again
        # (Backport "handshake": sent when a subscription is requested).
        values["origin"] = endpoint.check_or_422(spec.endpoint, self.config)
        conn.execute(
            update(st)
            .where(st.c.res_pk == item.pk)
            .values(status="requested", handshake_due=True, lease_until=None, error=None, **values)
        )
        doorbell.ring(conn, doorbell.NOTIFICATIONS)

    def _match(self, conn: Connection, written: list[Stored]) -> None:
        candidates = self._candidates_for(conn, sorted({s.res_type for s in written}))
        previous: dict[int, dict[str, Any] | None] = {}
        for candidate in candidates:
            compiled = self.compiled(conn, candidate.res_pk, candidate.version, candidate.res_id)
            if compiled is None:
                continue
            spec = compiled.spec
            items = [s for s in written if s.res_type == candidate.resource_type]
            if spec.topic is not None:
                topic = spec.topic
                items = [s for s in items if topic.trigger(self._before(conn, s, previous), s.json())]
            if not items:
                continue
            matched = set(
                conn.scalars(
                    select(resource.c.pk).where(
                        resource.c.pk.in_([s.pk for s in items]),
                        resource.c.res_type == candidate.resource_type,
                        resource.c.deleted == false(),
                        *compiled.where,
                    )
                )
            )
            hits = [item for item in items if item.pk in matched]
            if hits and candidate.owner_scopes is not None:
                # No event (not even a number) about a resource the owner may not read (issue 16):
                # the count of events would otherwise tell that a hidden record changed.
                readable = reach.readable_focuses(conn, candidate, [_focus(s) for s in hits])
                hits = [s for s in hits if _focus(s) in readable]
            for item in hits:
                self._enqueue(conn, candidate.res_pk, item)

    def _candidates_for(self, conn: Connection, types: list[str]) -> list[Any]:
        """Collecting subscriptions on these types, in one lock order (PostgreSQL row locks in
        ``_enqueue``); cached for the rest of this transaction."""
        transaction = conn.get_transaction()
        cached = self._candidates.get(conn)
        if cached is None or cached[0] is not transaction:
            cached = (transaction, {})
            self._candidates[conn] = cached
        known = cached[1]
        missing = [t for t in types if t not in known]
        if missing:
            rows = conn.execute(_CANDIDATES, {"types": missing, "now": now_us()}).all()
            for t in missing:
                known[t] = [row for row in rows if row.resource_type == t]
        return sorted((row for t in types for row in known[t]), key=lambda row: row.res_pk)

    def _before(self, conn: Connection, item: Stored, cache: dict[int, dict[str, Any] | None]) -> Any:
        """The version this write replaced (None when created), for topic triggers."""
        if item.pk not in cache:
            prior = None
            if item.version > 1:
                found = self.repo.version(conn, item.res_type, item.res_id, item.version - 1)
                prior = found.json() if found is not None and not found.deleted else None
            cache[item.pk] = prior
        return cache[item.pk]

    def _enqueue(self, conn: Connection, sub_pk: int, item: Stored) -> None:
        """Next event number (atomic: the UPDATE locks the state row until commit) + one outbox row."""
        st = subscription_state
        number = conn.execute(
            update(st).where(st.c.res_pk == sub_pk).values(events=st.c.events + 1).returning(st.c.events)
        ).scalar_one()
        now = now_us()
        conn.execute(
            insert(subscription_outbox).values(
                sub_pk=sub_pk,
                event_number=number,
                focus=f"{item.res_type}/{item.res_id}/_history/{item.version}",
                created_us=now,
                status="pending",
                attempts=0,
                next_attempt_us=now,
            )
        )
        # Wakes the worker when this commits (PostgreSQL: NOTIFY in this transaction; once per
        # transaction however many rows it adds).
        doorbell.ring(conn, doorbell.NOTIFICATIONS)
