"""The delivery worker: handshakes, event notifications in event-number order, heartbeats.

ARCHITECTURE.md "delivery worker": rows are claimed with SELECT … FOR UPDATE SKIP LOCKED on PostgreSQL
(on SQLite the claim runs in a BEGIN IMMEDIATE transaction, which serialises claimers) and leased
(coordination_api/outbox);
a crash between the POST and the database update re-sends after the lease (at least once;
receivers deduplicate by event number). Only the lowest pending event of a subscription is
claimable, so event n+1 never leaves before event n is delivered; with backport-max-count the
head claims the consecutive pending events after it, and they travel (and fail) together.

Sends run on a bounded pool (sending.py): a hanging or failing endpoint holds at most its origin's
share of it, and the claim queries skip saturated origins, so other subscribers are not held up.
The worker runs three lanes, each its own loop (notifications and dispatch timers; connector jobs;
Bulk Data exports): a slow DMP or a long export never delays a notification.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import signal
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
import requests
from flask import Flask
from sqlalchemy import ColumnElement, false, func, select, true, update
from sqlalchemy.engine import Connection, Row

from connectors import http, mssante
from connectors.errors import ConnectorError
from coordination_api import health, jobs, metrics
from coordination_api.bulk import export as bulk_export
from coordination_api.config import Settings
from coordination_api.coordination import dispatch
from coordination_api.integrations.mssante import mail_sender
from coordination_api.outbox import US, Held, Queue, RetryPolicy, claiming, doorbell, lease_end
from coordination_api.storage.repository import now_us
from coordination_api.storage.schema import subscription_outbox, subscription_state
from coordination_api.subscriptions import endpoint, model, notify, reach
from coordination_api.subscriptions.sending import Sender, outside
from coordination_api.subscriptions.service import COLLECTING, SubscriptionService, not_ended

log = logging.getLogger(__name__)
NOTIFICATIONS = Queue(subscription_outbox, attempts="attempts", due="next_attempt_us")
SUBSCRIPTIONS = Queue(subscription_state, key="res_pk")  # handshake and heartbeat claims


def _deliverable(now: int) -> list[ColumnElement[bool]]:
    """Outbox rows (joined to their subscription state) that may be claimed and sent now."""
    o, st = subscription_outbox, subscription_state
    return [
        o.c.status == "pending",
        o.c.next_attempt_us <= now,
        NOTIFICATIONS.free(now),
        st.c.status == "active",
        st.c.handshake_due == false(),
        not_ended(now),
    ]


@dataclass(frozen=True)
class _Notification:
    """A claimed batch as read under its lease: its outbox rows (the head first), its subscription's
    state and spec, and the events the owner may still read."""

    rows: list[Row[Any]]
    state: Row[Any]
    spec: model.Spec
    events: list[notify.Event]
    resources: dict[str, Any]

    @property
    def head(self) -> Row[Any]:
        return self.rows[0]


class Deliverer:
    def __init__(self, app: Flask) -> None:
        self.svc: SubscriptionService = app.extensions["subscriptions"]
        self.repo = self.svc.repo
        self.engine = self.repo.engine
        settings: Settings = app.config["SETTINGS"]
        self.base = settings.public_base_url
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self.mail, self.mail_from = mail_sender(settings)
        config = self.svc.config
        self.sender = Sender(config.concurrency, config.per_origin)
        self.retry = RetryPolicy(config.retry_base, config.retry_cap, config.retry_jitter)
        # Set on SIGTERM: the notifications being sent finish, the rest waits (its lease).
        self.stopping = threading.Event()

    @property
    def session(self) -> requests.Session:
        """This sending thread's HTTP session (requests sessions are not shared between threads).
        Every connection goes to the address checked when it is made (DNS rebinding; endpoint.py)."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = http.pinned_session(
                lambda host, port: endpoint.pinned_address(host, port, self.svc.config)
            )
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        self.sender.close()
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def run_pass(self) -> int:
        """Claim what is due and start sending it; returns how many sends it started."""
        return self.expirations() + self.handshakes() + self.deliveries() + self.heartbeats()

    def run_once(self) -> int:
        """One pass, waiting for its sends to finish (tests, `--once`)."""
        started = self.run_pass()
        self.sender.drain()
        return started

    def _room(self) -> int:
        return min(self.svc.config.batch_size, self.sender.free())

    # -- claiming (coordination_api/outbox) -----------------------------------------------------

    def _lease(self) -> int:
        return lease_end(now_us(), self.svc.config.lease)

    def _kept(self, queue: Queue, keys: list[int], lease: int) -> AbstractContextManager[Held]:
        """The rows stay ours from the moment a sending thread starts on them until their POST (or mail)
        is over, however long the subscriber's backport-timeout or the relay makes it: the claim loop,
        which keeps running meanwhile, never takes back a row still being sent (review 20 F5)."""
        return queue.kept(self.engine, keys, lease, self.svc.config.lease)

    def _unlease(self, queue: Queue, pks: list[int], lease: int, *, undo_attempt: bool = False) -> None:
        with self.repo.writing() as conn:
            queue.release(conn, pks, lease, undo_attempt=undo_attempt)

    # -- Subscription.end (R4: "the time for the server to turn the subscription off") --------------

    def expirations(self) -> int:
        st = subscription_state
        now = now_us()
        with self.engine.connect() as conn, conn.begin():
            ended = conn.execute(
                select(st.c.res_pk, st.c.res_id).where(st.c.status.in_(COLLECTING), ~not_ended(now))
            ).all()
        for res_pk, res_id in ended:
            with self.repo.writing() as conn:
                turned = conn.execute(
                    update(st)
                    .where(st.c.res_pk == res_pk, st.c.status.in_(COLLECTING))
                    .values(status="off", handshake_due=False, lease_until=None)
                ).rowcount
                if turned:
                    self._write_status(conn, res_id, "off", None)
            log.info("subscription %s reached its end: off", res_id)
        return len(ended)

    # -- handshake (Backport "Handshake": a requested subscription becomes active) -----------------

    def handshakes(self) -> int:
        st = subscription_state
        now = now_us()
        lease = self._lease()
        room = self._room()
        if room <= 0:
            return 0
        stmt = (
            select(st.c.res_pk, st.c.origin)
            .where(
                st.c.status == "requested",
                st.c.handshake_due == true(),
                SUBSCRIPTIONS.free(now),
                not_ended(now),
                outside(st.c.origin, self.sender.saturated()),
            )
            .order_by(st.c.res_pk)
            .limit(room)
        )
        with claiming(self.engine) as conn:
            claimed = SUBSCRIPTIONS.claim(conn, stmt, lease)
        started = 0
        for row in claimed:
            if self.sender.try_submit(row.origin, partial(self._handshake, row.res_pk, lease)):
                started += 1
            else:  # its origin filled up during this pass: the next pass claims it again
                self._unlease(SUBSCRIPTIONS, [row.res_pk], lease)
        return started

    def _handshake(self, pk: int, lease: int) -> None:
        st = subscription_state
        with self._kept(SUBSCRIPTIONS, [pk], lease) as held:
            if held.lost:
                return  # the lease ran out before this thread got to it: another worker has it
            with self.engine.connect() as conn, conn.begin():
                state = conn.execute(select(st).where(st.c.res_pk == pk)).first()
                compiled = (
                    self.svc.compiled(conn, pk, state.version, state.res_id) if state is not None else None
                )
            if state is None or compiled is None:
                return
            body = notify.bundle(
                notify.Notice(compiled.spec, "requested", "handshake", state.events, [], "empty", self.base)
            )
            error = self._post(compiled.spec, body)
        lease = held.lease
        with self.repo.writing() as conn:
            fresh = conn.execute(select(st).where(st.c.res_pk == pk)).first()
            if fresh is None or fresh.lease_until != lease or fresh.status != "requested":
                return  # the subscription changed meanwhile: its new request gets its own handshake
            status = "active" if error is None else "error"
            message = None if error is None else f"handshake failed: {error}"
            SUBSCRIPTIONS.settle(
                conn, [pk], lease, status, handshake_due=False, last_sent_us=now_us(), error=message
            )
            self._write_status(conn, fresh.res_id, status, message)
        log.info("subscription %s handshake: %s", fresh.res_id, status if error is None else error)

    def _write_status(self, conn: Connection, res_id: str, status: str, error: str | None) -> None:
        """A new version of the Subscription with the status we set (R4 Subscription.status/.error)."""
        current = self.repo.current(conn, "Subscription", res_id)
        if current is None or current.deleted:
            return
        body = current.json()
        if body.get("status") == status and body.get("error") == error:
            return
        body["status"] = status
        if error:
            body["error"] = error
        else:
            body.pop("error", None)
        self.repo.update(conn, "Subscription", res_id, body, method="PUT")

    # -- event notifications ----------------------------------------------------------------------

    def deliveries(self) -> int:
        o = subscription_outbox
        st = subscription_state
        head_table = subscription_outbox.alias("head")
        now = now_us()
        lease = self._lease()
        room = self._room()
        if room <= 0:
            return 0
        head = (
            select(func.min(head_table.c.event_number))
            .where(head_table.c.sub_pk == o.c.sub_pk, head_table.c.status == "pending")
            .scalar_subquery()
        )
        stmt = (
            select(o.c.pk, o.c.sub_pk, o.c.event_number, st.c.max_count, st.c.origin)
            .select_from(o.join(st, st.c.res_pk == o.c.sub_pk))
            .where(
                *_deliverable(now),
                o.c.event_number == head,
                outside(st.c.origin, self.sender.saturated()),
            )
            .order_by(o.c.next_attempt_us, o.c.pk)
            .limit(room)
        )
        with claiming(self.engine) as conn:
            batches = [
                ([pk, *self._followers(conn, sub_pk, number, count)], key)
                for pk, sub_pk, number, count, key in conn.execute(NOTIFICATIONS.lock(conn, stmt, of=o))
            ]
            NOTIFICATIONS.take(conn, [pk for batch, _ in batches for pk in batch], lease, attempt=True)
        started = 0
        for batch, key in batches:
            if not self.stopping.is_set() and self.sender.try_submit(
                key, partial(self._stream, batch, lease)
            ):
                started += 1
            else:  # its origin filled up during this pass (or we are stopping): claimed again later
                self._unlease(NOTIFICATIONS, batch, lease, undo_attempt=True)
        return started

    def _stream(self, batch: list[int], lease: int) -> None:
        """Send a claimed notification and, while its subscription has a backlog, the next ones:
        marking one delivered claims the next in the same transaction, so an ordered stream costs two
        transactions an event instead of a claim pass each (bounded by batch_size)."""
        claimed: tuple[list[int], int] | None = (batch, lease)
        streak = 0
        while claimed is not None and not self.stopping.is_set():
            streak += 1
            more = streak < self.svc.config.batch_size
            claimed = self._deliver(*claimed, claim_next=more)

    def _followers(self, conn: Connection, sub_pk: int, head: int, max_count: int | None) -> list[int]:
        """Backport backport-max-count: the pending events right after the head (consecutive numbers,
        so the order holds), up to max-count events in all. They are only ever claimed with their
        head, so the head's claim covers them."""
        if not max_count or max_count <= 1:
            return []
        o = subscription_outbox
        stmt = (
            select(o.c.pk, o.c.event_number)
            .where(
                o.c.sub_pk == sub_pk,
                o.c.status == "pending",
                o.c.event_number > head,
                o.c.event_number < head + max_count,
            )
            .order_by(o.c.event_number)
        )
        out: list[int] = []
        for pk, number in conn.execute(NOTIFICATIONS.lock(conn, stmt)):
            if number != head + len(out) + 1:
                break  # a gap (a row locked elsewhere): stop, the rest goes in a later notification
            out.append(pk)
        return out

    def _deliver(
        self, batch: list[int], lease: int, *, claim_next: bool = False
    ) -> tuple[list[int], int] | None:
        """Send one claimed notification; on success, return the next claimed one of the same
        subscription (its following events), if any is due."""
        # Kept renews the lease at once (a pass claims many rows under one lease and sends them one
        # after the other: a slow endpoint earlier in the pass must not let another worker send this
        # one as well) and then while it is sent.
        with self._kept(NOTIFICATIONS, batch, lease) as held:
            notification = None if held.lost else self._load(batch, held.lease)
            if notification is None:
                return None
            error = self._send(notification)
        lease = held.lease
        if error is None:
            return self._delivered(notification, lease, claim_next=claim_next)
        self._failed(notification, lease, error)
        return None

    def _load(self, batch: list[int], lease: int) -> _Notification | None:
        """The rows of ``batch`` still held under ``lease`` and what their notification carries;
        None when nothing is to be sent (the head reclaimed, the subscription gone or ended)."""
        o = subscription_outbox
        st = subscription_state
        with self.engine.connect() as conn, conn.begin():
            rows = conn.execute(
                select(o).where(o.c.pk.in_(batch), o.c.lease_until == lease).order_by(o.c.event_number)
            ).all()
            if not rows or rows[0].pk != batch[0]:
                return None  # the head was reclaimed meanwhile (lease over): its new claimer sends it
            sub_pk = rows[0].sub_pk
            state = conn.execute(select(st).where(st.c.res_pk == sub_pk)).first()
            compiled = (
                self.svc.compiled(conn, sub_pk, state.version, state.res_id) if state is not None else None
            )
            if state is None or compiled is None:
                return None
            if state.end_us is not None and state.end_us <= now_us():
                return None  # Subscription.end passed since the claim: nothing more is sent
            spec = compiled.spec
            events = [notify.Event(r.event_number, r.focus, r.created_us) for r in rows]
            # Nothing, not even an id, about a resource the owner may not read now (issue 16).
            allowed = reach.readable_focuses(conn, state, [e.focus for e in events])
            events = [e for e in events if e.focus in allowed]
            resources: dict[str, Any] = {}
            if spec.content == "full-resource":
                resources = notify.focus_versions(self.repo, conn, events)
        return _Notification(rows, state, spec, events, resources)

    def _send(self, notification: _Notification) -> str | None:
        """POST (or mail) the notification; None when accepted, else why not."""
        n = notification
        if not n.events:
            return None  # every event of the batch is withheld: they count as done, nothing is sent
        notice = notify.Notice(
            n.spec, "active", "event-notification", n.state.events, n.events, n.spec.content, self.base
        )
        body = notify.bundle(notice, n.resources)
        return self._post(n.spec, body)

    def _delivered(
        self, notification: _Notification, lease: int, *, claim_next: bool
    ) -> tuple[list[int], int] | None:
        """Mark the batch delivered and, with ``claim_next``, claim the subscription's next events in
        the same transaction."""
        n = notification
        now = now_us()
        sent = [r.pk for r in n.rows]
        st = subscription_state
        with self.repo.writing() as conn:
            marked = NOTIFICATIONS.settle(conn, sent, lease, "delivered", delivered_us=now, last_error=None)
            conn.execute(update(st).where(st.c.res_pk == n.head.sub_pk).values(last_sent_us=now))
            metrics.delivery(n.spec.channel_type, "ok")
            if not claim_next or marked != len(sent):
                return None  # (a lost lease: another worker has these rows; it goes on from them)
            return self._claim_next(conn, n.head.sub_pk, n.rows[-1].event_number + 1, n.state.max_count, now)

    def _failed(self, notification: _Notification, lease: int, error: str) -> None:
        """The head carries the retry schedule and its followers wait behind it again; past the retry
        period the subscription goes to error, its rows stay pending, for $events replay and for
        delivery once it is requested again (nothing is dropped)."""
        n = notification
        head = n.head
        now = now_us()
        config = self.svc.config
        st = subscription_state
        with self.repo.writing() as conn:
            NOTIFICATIONS.release(conn, [r.pk for r in n.rows[1:]], lease)
            first = head.first_failure_us or now
            if now - first >= config.retry_period * US:
                NOTIFICATIONS.retry(conn, [head.pk], lease, now, first_failure_us=None, last_error=error)
                message = (
                    f"delivery of event {head.event_number} failed since {config.retry_period:g} s: {error}"
                )
                conn.execute(
                    update(st).where(st.c.res_pk == head.sub_pk).values(status="error", error=message)
                )
                self._write_status(conn, n.state.res_id, "error", message)
                log.warning("subscription %s: %s", n.state.res_id, message)
                metrics.delivery(n.spec.channel_type, "failed")
                return
            at = now + int(self.retry.delay(head.attempts) * US)
            NOTIFICATIONS.retry(conn, [head.pk], lease, at, first_failure_us=first, last_error=error)
        metrics.delivery(n.spec.channel_type, "retrying")

    def _claim_next(
        self, conn: Connection, sub_pk: int, number: int, max_count: int | None, now: int
    ) -> tuple[list[int], int] | None:
        """Claim event ``number`` of a subscription (the new head once the previous ones are
        delivered) and its followers, as the claim pass would, inside the caller's transaction."""
        o = subscription_outbox
        st = subscription_state
        stmt = (
            select(o.c.pk)
            .select_from(o.join(st, st.c.res_pk == o.c.sub_pk))
            .where(*_deliverable(now), o.c.sub_pk == sub_pk, o.c.event_number == number)
        )
        head = conn.scalar(NOTIFICATIONS.lock(conn, stmt, of=o))
        if head is None:
            return None
        batch = [head, *self._followers(conn, sub_pk, number, max_count)]
        lease = self._lease()
        NOTIFICATIONS.take(conn, batch, lease, attempt=True)
        return batch, lease

    # -- heartbeat (Backport "heartbeat-period": a notification when idle for that long) ------------

    def heartbeats(self) -> int:
        st = subscription_state
        o = subscription_outbox
        now = now_us()
        pending = select(o.c.pk).where(o.c.sub_pk == st.c.res_pk, o.c.status == "pending").exists()
        with self.engine.connect() as conn, conn.begin():
            rows = conn.execute(
                select(st.c.res_pk, st.c.last_sent_us, st.c.origin).where(
                    st.c.status == "active",
                    st.c.handshake_due == false(),
                    st.c.heartbeat_s.is_not(None),
                    not_ended(now),
                    func.coalesce(st.c.last_sent_us, 0) + st.c.heartbeat_s * US <= now,
                    SUBSCRIPTIONS.free(now),
                    ~pending,
                )
            ).all()
        sent = 0
        for res_pk, last_sent, key in rows:
            if key in self.sender.saturated() or self.sender.free() <= 0:
                continue  # next pass
            lease = self._lease()
            # Claimed without a lock: the lease is written only if no one sent or claimed it since.
            unchanged = st.c.last_sent_us.is_(None) if last_sent is None else st.c.last_sent_us == last_sent
            with self.repo.writing() as conn:
                claimed = SUBSCRIPTIONS.take(
                    conn, [res_pk], lease, where=(unchanged, SUBSCRIPTIONS.free(now))
                )
                state = conn.execute(select(st).where(st.c.res_pk == res_pk)).first()
                compiled = (
                    self.svc.compiled(conn, res_pk, state.version, state.res_id)
                    if claimed and state
                    else None
                )
            if compiled is None or state is None:
                continue
            if self.sender.try_submit(key, partial(self._heartbeat, state, compiled.spec, lease)):
                sent += 1
            else:
                self._unlease(SUBSCRIPTIONS, [res_pk], lease)
        return sent

    def _heartbeat(self, state: Row[Any], spec: model.Spec, lease: int) -> None:
        body = notify.bundle(notify.Notice(spec, "active", "heartbeat", state.events, [], "empty", self.base))
        with self._kept(SUBSCRIPTIONS, [state.res_pk], lease) as held:
            if held.lost:
                return
            error = self._post(spec, body)
        lease = held.lease
        if error is not None:
            log.info("subscription %s heartbeat failed: %s", state.res_id, error)
        with self.repo.writing() as conn:
            SUBSCRIPTIONS.release(conn, [state.res_pk], lease, last_sent_us=now_us())

    # -- transport: rest-hook (R4 subscription.html#channels) --------------------------------------

    def _post(self, spec: model.Spec, body: dict[str, Any]) -> str | None:
        """Send the notification on its channel; None when it was accepted, else why not."""
        if spec.channel_type == "email":
            return self._mail(spec, body)
        config = self.svc.config
        try:
            endpoint.check(spec.endpoint, config)  # again at send time: DNS may have changed
        except endpoint.EndpointError as exc:
            return str(exc)
        data = orjson.dumps(body)
        headers = dict(spec.headers)
        headers["Content-Type"] = spec.mime if "json" in spec.mime else "application/fhir+json"
        if spec.secret:
            digest = hmac.new(spec.secret.encode(), data, hashlib.sha256).hexdigest()
            headers["X-Coordination-Signature"] = f"sha256={digest}"
        timeout = (config.connect_timeout, float(spec.timeout_s or config.read_timeout))
        try:
            status = http.send_once(
                self.session, "POST", spec.endpoint, data=data, headers=headers, timeout=timeout
            )
            if 200 <= status < 300:
                return None
            return f"endpoint answered HTTP {status}"
        except endpoint.EndpointError as exc:  # refused at connection time
            return str(exc)
        except requests.RequestException as exc:
            return f"{type(exc).__name__}: {exc}"[:500]

    # -- transport: email (MSSanté; connectors/mssante) -------------------------------------------

    def _mail(self, spec: model.Spec, body: dict[str, Any]) -> str | None:
        """Mail the notification; heartbeats are not mailed (a mailbox is no liveness probe: the
        Backport IG leaves heartbeats to channels that use them). The handshake is mailed: it tells
        the recipient the subscription exists and proves the address works."""
        kind = next(
            (
                p.get("valueCode")
                for p in body["entry"][0]["resource"].get("parameter") or []
                if p.get("name") == "type"
            ),
            None,
        )
        if kind == "heartbeat":
            return None
        try:
            address = endpoint.check_mailto(spec.endpoint, self.svc.config)
            message = mssante.notification_message(body, to=address, sender=self.mail_from)
            self.mail.send(message)
        except endpoint.EndpointError as exc:
            return str(exc)
        except ConnectorError as exc:
            return str(exc)
        return None


LANE_BACKOFF_CAP = 30.0  # seconds between passes of a lane whose passes keep failing


def _lane(
    name: str,
    work: Callable[[], int],
    stop: threading.Event,
    poll: float,
    bell: doorbell.Doorbell | None = None,
    rung_by: str = "",
) -> None:
    """Run ``work`` until ``stop``: at once again when it did something, when ``bell`` rings for
    ``rung_by`` or after ``poll`` when idle, and with a doubling pause (to LANE_BACKOFF_CAP) while its
    passes fail (database down...)."""
    failures = 0
    while not stop.is_set():
        ticket = bell.ticket(rung_by) if bell is not None else 0  # before the pass: a ring during it counts
        try:
            worked = work()
            failures = 0
        except Exception:  # a failed pass (database restart...) must not stop the worker
            failures += 1
            log.exception("%s pass failed (%d in a row)", name, failures)
            worked = 0
        if failures:
            stop.wait(min(LANE_BACKOFF_CAP, poll * 2**failures))
        elif worked:
            continue
        elif bell is not None:
            bell.wait(rung_by, ticket, poll)  # the worker's stop rings it too
        else:
            stop.wait(poll)


def _wake_on_stop(stop: threading.Event, bell: doorbell.Doorbell) -> None:
    """The lanes wait on the doorbell: stopping rings it, so they stop at once, not after ``poll``."""
    stop.wait()
    bell.wake()


def worker_loop(app: Flask, stop_event: threading.Event, *, once: bool = False) -> None:
    """Deliver until ``stop_event`` is set (or one pass of each lane when ``once``)."""
    deliverer = Deliverer(app)
    deliverer.stopping = stop_event
    heartbeat = health.WorkerHeartbeat(deliverer.engine)  # read by /readyz
    config = deliverer.svc.config
    poll = config.poll_interval

    def notifications() -> int:
        heartbeat.beat()
        return deliverer.run_pass() + dispatch.run_due(app)  # Task dispatch timers

    lanes: list[tuple[str, Callable[[], int], str]] = [
        # outside services: DMP, e-parcours, directory
        ("connector jobs", lambda: jobs.run_due(app), doorbell.JOBS),
        ("bulk export", lambda: bulk_export.run_due(app), doorbell.EXPORTS),
    ]
    bell: doorbell.Doorbell | None = None
    try:
        if once:
            try:
                notifications()
                deliverer.sender.drain()
                for _, work, _ in lanes:
                    work()
            except Exception:
                log.exception("worker pass failed")
            return
        if config.doorbell:
            # Writes that add rows wake the lane that serves them.
            bell = doorbell.of(deliverer.engine)
            bell.listen()
            waker = threading.Thread(target=_wake_on_stop, args=(stop_event, bell), daemon=True)
            waker.start()
        threads = [
            threading.Thread(
                target=_lane, args=(name, work, stop_event, poll, bell, rung_by), name=name, daemon=True
            )
            for name, work, rung_by in lanes
        ]
        for thread in threads:
            thread.start()
        _lane("notifications", notifications, stop_event, poll, bell, doorbell.NOTIFICATIONS)
        for thread in threads:
            thread.join()
    finally:
        if bell is not None:
            bell.close()
        heartbeat.stop()
        deliverer.close()


def run_worker(app: Flask) -> None:
    """`coordination worker`: run until SIGTERM / SIGINT."""
    stop = threading.Event()

    def _stop(_signum: int, _frame: Any) -> None:
        # From another thread: set() here could deadlock on the lock the main thread holds in wait().
        threading.Thread(target=stop.set).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("subscription delivery worker started")
    worker_loop(app, stop)
    log.info("subscription delivery worker stopped")


def start_in_thread(app: Flask) -> tuple[threading.Thread, threading.Event]:
    """The worker inside the server process (`make run`): a daemon thread; set the event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=worker_loop, args=(app, stop), name="subscription-worker", daemon=True)
    thread.start()
    return thread, stop
