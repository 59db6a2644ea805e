"""The delivery worker: handshakes, event notifications in event-number order, heartbeats.

ARCHITECTURE.md "delivery worker": rows are claimed with SELECT … FOR UPDATE SKIP LOCKED on PostgreSQL
(on SQLite the claim runs in a BEGIN IMMEDIATE transaction, which serialises claimers) and leased;
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
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import orjson
import requests
from flask import Flask
from sqlalchemy import ColumnElement, false, func, or_, select, true, update
from sqlalchemy.engine import Connection, Row

from connectors import http, mssante
from connectors.errors import ConnectorError
from coordination_api import health, jobs, metrics
from coordination_api.bulk import export as bulk_export
from coordination_api.config import Settings
from coordination_api.coordination import dispatch
from coordination_api.storage.engine import WRITE
from coordination_api.storage.repository import now_us
from coordination_api.storage.schema import subscription_outbox, subscription_state
from coordination_api.subscriptions import endpoint, model, notify, reach
from coordination_api.subscriptions.sending import Sender, origin, outside
from coordination_api.subscriptions.service import COLLECTING, SubscriptionService, not_ended

log = logging.getLogger(__name__)
_RANDOM = secrets.SystemRandom()
US = 1_000_000


def _deliverable(now: int) -> list[ColumnElement[bool]]:
    """Outbox rows (joined to their subscription state) that may be claimed and sent now."""
    o, st = subscription_outbox, subscription_state
    return [
        o.c.status == "pending",
        o.c.next_attempt_us <= now,
        or_(o.c.lease_until.is_(None), o.c.lease_until < now),
        st.c.status == "active",
        st.c.handshake_due == false(),
        not_ended(now),
    ]


def _mail_sender(settings: Settings) -> tuple[mssante.MailSender, str]:
    """The MSSanté sender of the app's settings (the Null one when no SMTP host is configured)."""
    config = settings.mssante
    if not config.smtp_host:
        return mssante.NullSender(), "notifications@localhost"
    smtp = mssante.SmtpSettings(
        host=config.smtp_host,
        port=config.smtp_port,
        timeout=config.timeout,
        ca_file=config.ca_file,
        client_cert=config.client_cert,
        client_key=config.client_key,
        username=config.username,
        password=config.password,
    )
    return mssante.SmtpSender(smtp), config.from_address or "notifications@localhost"


class Deliverer:
    def __init__(self, app: Flask) -> None:
        self.svc: SubscriptionService = app.extensions["subscriptions"]
        self.repo = self.svc.repo
        self.engine = self.repo.engine
        self.pg = self.engine.dialect.name == "postgresql"
        settings: Settings = app.config["SETTINGS"]
        self.base = settings.public_base_url
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self.mail, self.mail_from = _mail_sender(settings)
        config = self.svc.config
        self.sender = Sender(config.concurrency, config.per_origin)
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

    # -- claiming -------------------------------------------------------------------------------

    @contextmanager
    def _claiming(self) -> Iterator[Connection]:
        # SQLite: the WRITE option makes this BEGIN IMMEDIATE (one claimer at a time).
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            yield conn

    def _lease(self) -> int:
        return now_us() + int(self.svc.config.lease * US)

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
        with self._claiming() as conn:
            stmt = (
                select(st.c.res_pk, st.c.endpoint)
                .where(
                    st.c.status == "requested",
                    st.c.handshake_due == true(),
                    or_(st.c.lease_until.is_(None), st.c.lease_until < now),
                    not_ended(now),
                    outside(st.c.endpoint, self.sender.saturated()),
                )
                .order_by(st.c.res_pk)
                .limit(room)
            )
            if self.pg:
                stmt = stmt.with_for_update(skip_locked=True)
            claimed = conn.execute(stmt).all()
            if claimed:
                pks = [pk for pk, _ in claimed]
                conn.execute(update(st).where(st.c.res_pk.in_(pks)).values(lease_until=lease))
        started = 0
        for pk, url in claimed:
            if self.sender.try_submit(origin(url), partial(self._handshake, pk, lease)):
                started += 1
            else:  # its origin filled up during this pass: the next pass claims it again
                self._unlease(st, st.c.res_pk, [pk], lease)
        return started

    def _unlease(
        self, table: Any, key: Any, pks: list[int], lease: int, *, undo_attempt: bool = False
    ) -> None:
        values: dict[str, Any] = {"lease_until": None}
        if undo_attempt:
            values["attempts"] = table.c.attempts - 1
        with self.repo.writing() as conn:
            conn.execute(update(table).where(key.in_(pks), table.c.lease_until == lease).values(**values))

    def _handshake(self, pk: int, lease: int) -> None:
        st = subscription_state
        with self.engine.connect() as conn, conn.begin():
            state = conn.execute(select(st).where(st.c.res_pk == pk)).first()
            compiled = self.svc.compiled(conn, pk, state.version, state.res_id) if state is not None else None
        if state is None or compiled is None:
            return
        body = notify.bundle(compiled.spec, "requested", "handshake", state.events, [], "empty", self.base)
        error = self._post(compiled.spec, body)
        with self.repo.writing() as conn:
            fresh = conn.execute(select(st).where(st.c.res_pk == pk)).first()
            if fresh is None or fresh.lease_until != lease or fresh.status != "requested":
                return  # the subscription changed meanwhile: its new request gets its own handshake
            status = "active" if error is None else "error"
            message = None if error is None else f"handshake failed: {error}"
            conn.execute(
                update(st)
                .where(st.c.res_pk == pk)
                .values(
                    status=status, handshake_due=False, lease_until=None, last_sent_us=now_us(), error=message
                )
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
        with self._claiming() as conn:
            stmt = (
                select(o.c.pk, o.c.sub_pk, o.c.event_number, st.c.max_count, st.c.endpoint)
                .select_from(o.join(st, st.c.res_pk == o.c.sub_pk))
                .where(
                    *_deliverable(now),
                    o.c.event_number == head,
                    outside(st.c.endpoint, self.sender.saturated()),
                )
                .order_by(o.c.next_attempt_us, o.c.pk)
                .limit(room)
            )
            if self.pg:
                stmt = stmt.with_for_update(of=o, skip_locked=True)
            batches = [
                ([pk, *self._followers(conn, sub_pk, number, count)], url)
                for pk, sub_pk, number, count, url in conn.execute(stmt)
            ]
            pks = [pk for batch, _ in batches for pk in batch]
            if pks:
                conn.execute(
                    update(o).where(o.c.pk.in_(pks)).values(lease_until=lease, attempts=o.c.attempts + 1)
                )
        started = 0
        for batch, url in batches:
            if not self.stopping.is_set() and self.sender.try_submit(
                origin(url), partial(self._stream, batch, lease)
            ):
                started += 1
            else:  # its origin filled up during this pass (or we are stopping): claimed again later
                self._unlease(o, o.c.pk, batch, lease, undo_attempt=True)
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
            # The first lease was claimed a moment ago; a streamed one is renewed before its POST.
            claimed = self._deliver(*claimed, fresh=streak == 1, claim_next=more)

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
        if self.pg:
            stmt = stmt.with_for_update(skip_locked=True)
        out: list[int] = []
        for pk, number in conn.execute(stmt):
            if number != head + len(out) + 1:
                break  # a gap (a row locked elsewhere): stop, the rest goes in a later notification
            out.append(pk)
        return out

    def _deliver(
        self, batch: list[int], lease: int, *, fresh: bool = False, claim_next: bool = False
    ) -> tuple[list[int], int] | None:
        """Send one claimed notification; on success, return the next claimed one of the same
        subscription (its following events), if any is due."""
        o = subscription_outbox
        st = subscription_state
        # A pass claims many rows under one lease and sends them one after the other: each row's lease
        # is renewed just before its POST, so a slow endpoint earlier in the pass never lets another
        # worker send it as well (unless this one has stopped meanwhile). The first of a pass was
        # claimed a moment ago: its lease is still whole.
        if not fresh:
            renewed = self._lease()
            with self.repo.writing() as conn:
                conn.execute(
                    update(o).where(o.c.pk.in_(batch), o.c.lease_until == lease).values(lease_until=renewed)
                )
            lease = renewed
        with self.engine.connect() as conn, conn.begin():
            rows = conn.execute(
                select(o).where(o.c.pk.in_(batch), o.c.lease_until == lease).order_by(o.c.event_number)
            ).all()
            if not rows or rows[0].pk != batch[0]:
                return None  # the head was reclaimed meanwhile (lease over): its new claimer sends it
            row = rows[0]
            state = conn.execute(select(st).where(st.c.res_pk == row.sub_pk)).first()
            compiled = (
                self.svc.compiled(conn, row.sub_pk, state.version, state.res_id)
                if state is not None
                else None
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
        if events:
            body = notify.bundle(
                spec, "active", "event-notification", state.events, events, spec.content, self.base, resources
            )
            error = self._post(spec, body)
        else:
            error = None  # every event of the batch is withheld: they count as done, nothing is sent
        now = now_us()
        sent = [r.pk for r in rows]
        with self.repo.writing() as conn:
            mine = (o.c.pk == row.pk, o.c.lease_until == lease)
            if error is None:
                marked = conn.execute(
                    update(o)
                    .where(o.c.pk.in_(sent), o.c.lease_until == lease)
                    .values(status="delivered", delivered_us=now, lease_until=None, last_error=None)
                ).rowcount
                conn.execute(update(st).where(st.c.res_pk == row.sub_pk).values(last_sent_us=now))
                metrics.delivery(spec.channel_type, "ok")
                if not claim_next or marked != len(sent):
                    return None  # (a lost lease: another worker has these rows; it goes on from them)
                return self._claim_next(conn, row.sub_pk, rows[-1].event_number + 1, state.max_count, now)
            # The followers wait behind the head again; the head carries the retry schedule.
            conn.execute(
                update(o).where(o.c.pk.in_(sent[1:]), o.c.lease_until == lease).values(lease_until=None)
            )
            first = row.first_failure_us or now
            config = self.svc.config
            if now - first >= config.retry_period * US:
                # Retry period over: the subscription goes to error; its rows stay pending, for $events
                # replay and for delivery once it is requested again (nothing is dropped).
                conn.execute(
                    update(o)
                    .where(*mine)
                    .values(lease_until=None, first_failure_us=None, next_attempt_us=now, last_error=error)
                )
                message = (
                    f"delivery of event {row.event_number} failed since {config.retry_period:g} s: {error}"
                )
                conn.execute(
                    update(st).where(st.c.res_pk == row.sub_pk).values(status="error", error=message)
                )
                self._write_status(conn, state.res_id, "error", message)
                log.warning("subscription %s: %s", state.res_id, message)
                metrics.delivery(spec.channel_type, "failed")
                return None
            delay = min(config.retry_cap, config.retry_base * 2 ** max(row.attempts - 1, 0))
            delay *= 1 + _RANDOM.uniform(-config.retry_jitter, config.retry_jitter)
            conn.execute(
                update(o)
                .where(*mine)
                .values(
                    lease_until=None,
                    first_failure_us=first,
                    next_attempt_us=now + int(delay * US),
                    last_error=error,
                )
            )
        metrics.delivery(spec.channel_type, "retrying")
        return None

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
        if self.pg:
            stmt = stmt.with_for_update(of=o, skip_locked=True)
        head = conn.scalar(stmt)
        if head is None:
            return None
        batch = [head, *self._followers(conn, sub_pk, number, max_count)]
        lease = self._lease()
        conn.execute(update(o).where(o.c.pk.in_(batch)).values(lease_until=lease, attempts=o.c.attempts + 1))
        return batch, lease

    # -- heartbeat (Backport "heartbeat-period": a notification when idle for that long) ------------

    def heartbeats(self) -> int:
        st = subscription_state
        o = subscription_outbox
        now = now_us()
        pending = select(o.c.pk).where(o.c.sub_pk == st.c.res_pk, o.c.status == "pending").exists()
        with self.engine.connect() as conn, conn.begin():
            rows = conn.execute(
                select(st.c.res_pk, st.c.last_sent_us, st.c.endpoint).where(
                    st.c.status == "active",
                    st.c.handshake_due == false(),
                    st.c.heartbeat_s.is_not(None),
                    not_ended(now),
                    func.coalesce(st.c.last_sent_us, 0) + st.c.heartbeat_s * US <= now,
                    or_(st.c.lease_until.is_(None), st.c.lease_until < now),
                    ~pending,
                )
            ).all()
        sent = 0
        for res_pk, last_sent, url in rows:
            key = origin(url)
            if key in self.sender.saturated() or self.sender.free() <= 0:
                continue  # next pass
            lease = self._lease()
            with self.repo.writing() as conn:
                claimed = conn.execute(
                    update(st)
                    .where(
                        st.c.res_pk == res_pk,
                        st.c.last_sent_us.is_(None) if last_sent is None else st.c.last_sent_us == last_sent,
                        or_(st.c.lease_until.is_(None), st.c.lease_until < now),
                    )
                    .values(lease_until=lease)
                ).rowcount
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
                self._unlease(st, st.c.res_pk, [res_pk], lease)
        return sent

    def _heartbeat(self, state: Row[Any], spec: model.Spec, lease: int) -> None:
        st = subscription_state
        body = notify.bundle(spec, "active", "heartbeat", state.events, [], "empty", self.base)
        error = self._post(spec, body)
        if error is not None:
            log.info("subscription %s heartbeat failed: %s", state.res_id, error)
        with self.repo.writing() as conn:
            conn.execute(
                update(st)
                .where(st.c.res_pk == state.res_pk, st.c.lease_until == lease)
                .values(lease_until=None, last_sent_us=now_us())
            )

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
            with self.session.post(
                spec.endpoint, data=data, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                if 200 <= response.status_code < 300:
                    return None
                return f"endpoint answered HTTP {response.status_code}"
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


def _lane(name: str, work: Callable[[], int], stop: threading.Event, poll: float) -> None:
    """Run ``work`` until ``stop``: at once again when it did something, after ``poll`` when idle,
    and with a doubling pause (to LANE_BACKOFF_CAP) while its passes fail (database down...)."""
    failures = 0
    while not stop.is_set():
        try:
            worked = work()
            failures = 0
        except Exception:  # a failed pass (database restart...) must not stop the worker
            failures += 1
            log.exception("%s pass failed (%d in a row)", name, failures)
            worked = 0
        if failures:
            stop.wait(min(LANE_BACKOFF_CAP, poll * 2**failures))
        elif not worked:
            stop.wait(poll)


def worker_loop(app: Flask, stop_event: threading.Event, *, once: bool = False) -> None:
    """Deliver until ``stop_event`` is set (or one pass of each lane when ``once``)."""
    deliverer = Deliverer(app)
    deliverer.stopping = stop_event
    heartbeat = health.WorkerHeartbeat(deliverer.engine)  # read by /readyz
    poll = deliverer.svc.config.poll_interval

    def notifications() -> int:
        heartbeat.beat()
        return deliverer.run_pass() + dispatch.run_due(app)  # Task dispatch timers

    lanes: list[tuple[str, Callable[[], int]]] = [
        ("connector jobs", lambda: jobs.run_due(app)),  # outside services: DMP, e-parcours, directory
        ("bulk export", lambda: bulk_export.run_due(app)),
    ]
    try:
        if once:
            try:
                notifications()
                deliverer.sender.drain()
                for _, work in lanes:
                    work()
            except Exception:
                log.exception("worker pass failed")
            return
        threads = [
            threading.Thread(target=_lane, args=(name, work, stop_event, poll), name=name, daemon=True)
            for name, work in lanes
        ]
        for thread in threads:
            thread.start()
        _lane("notifications", notifications, stop_event, poll)
        for thread in threads:
            thread.join()
    finally:
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
