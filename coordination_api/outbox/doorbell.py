"""The outbox doorbell: a write that adds outbox rows wakes the delivery worker (issue 21).

The worker's lanes poll their queues every ``poll_interval``; with the doorbell an idle lane is woken as
soon as rows it serves are committed, and the poll stays as the safety net (a missed wake-up, a retry
due later, a doorbell that cannot listen). Writers ``ring(conn)`` inside the transaction that adds the
rows, naming the lane that serves them (NOTIFICATIONS, JOBS, EXPORTS: only that lane runs a pass; on
SQLite a pass of the jobs or export lane takes the write lock); the worker ``listen()``s and each lane
``wait(lane, ticket, timeout)``.

- PostgreSQL: ``pg_notify`` in the write transaction (delivered on commit only, so a rolled-back write
  wakes no one; duplicates in one transaction are folded). The worker holds one connection of its own
  that LISTENs; when it is lost (restart, pg_terminate_backend) the listener reconnects with a backoff
  and the lanes poll meanwhile. The channel names the database and schema: deployments (and test
  schemas) sharing one server do not wake each other.
- SQLite file: after the commit (never before: the worker must find the rows), one datagram to the UNIX
  socket the worker bound in ``<database>-doorbell/``, a directory beside the database that only its
  writers can enter (the database's owner and mode, storage/sidecar.py: no other local user can ring,
  flood or take it; review 22 F2); best effort and non-blocking. The worker that listens holds an flock
  on ``<database>-doorbell/lock``: a second worker on the same file polls, and the socket a crashed
  worker left is replaced.

Only the three lane names below are counted; anything else a ring or a NOTIFY carries is dropped.
- SQLite in memory (one process): an in-process wake-up after the commit.

Framework-free: it knows engines and connections, not the app.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import socket
import threading
import weakref
from collections.abc import Iterable
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry

from coordination_api.storage.sidecar import adopt, open_beside, private_directory

log = logging.getLogger(__name__)

# The same expression on both sides (writer and listener), evaluated on the server: the channel of this
# database and schema (search_path), within PostgreSQL's 63-byte identifier limit.
_CHANNEL_SQL = "'coordination_outbox_' || md5(current_database() || '.' || coalesce(current_schema(), ''))"
_NOTIFY = text(f"SELECT pg_notify({_CHANNEL_SQL}, :lane)")
_CHANNEL = f"SELECT {_CHANNEL_SQL}"
# Keys of the DBAPI connection's info dict (shared by every checkout of that connection).
_RUNG = "coordination.doorbell.rung"  # lane -> the transaction that already rang it (PostgreSQL)
_PENDING = "coordination.doorbell.pending"  # lanes rung in the open transaction (SQLite)
_COMMITTED = "coordination.doorbell.committed"  # committed: ring them when the connection is returned
RECONNECT_CAP = 30.0  # seconds between two attempts to get the listening connection back
KEEPALIVE = 30.0  # seconds of silence after which the listening connection is checked
# The worker's lanes (subscriptions/worker.py), as writers name them.
NOTIFICATIONS = "notifications"  # subscription_outbox rows, handshakes
JOBS = "jobs"  # connector_job rows
EXPORTS = "exports"  # bulk_export_job rows
LANES = frozenset({NOTIFICATIONS, JOBS, EXPORTS})
# sockaddr_un.sun_path (Linux: 108 bytes with the terminating NUL).
_SUN_PATH = 107


class Doorbell:
    """Wakes this process's waiters; subclasses carry the wake-up from the writers (other processes)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._rings: dict[str, int] = {}  # per lane
        self._everyone = 0  # wake-ups of every lane
        self._listeners = 0
        self._lock = threading.Lock()

    # -- waiting side ---------------------------------------------------------------------------

    def ticket(self, lane: str) -> int:
        """Taken before a pass: a ring during the pass makes the next ``wait`` return at once."""
        with self._cond:
            return self._rings.get(lane, 0) + self._everyone

    def wait(self, lane: str, ticket: int, timeout: float) -> bool:
        """Until ``lane`` is rung after ``ticket`` (True) or ``timeout`` seconds (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._rings.get(lane, 0) + self._everyone != ticket, timeout)

    def wake(self, lanes: Iterable[str] | None = None) -> None:
        """Wake the waiters of ``lanes`` in this process (None: every lane; a lost connection, the
        worker stopping)."""
        with self._cond:
            if lanes is None:
                self._everyone += 1
            else:
                for lane in lanes:
                    if lane in LANES:  # a name from outside (datagram, NOTIFY payload) never keys memory
                        self._rings[lane] = self._rings.get(lane, 0) + 1
            self._cond.notify_all()

    def listen(self) -> bool:
        """Start receiving rings (the worker; counted, so several worker loops may share it); False
        when this process cannot (then its lanes poll)."""
        with self._lock:
            self._listeners += 1
            if self._listeners > 1:
                return self.listening
            return self._start()

    def close(self) -> None:
        """One ``listen`` fewer; the last one stops receiving."""
        with self._lock:
            self._listeners = max(0, self._listeners - 1)
            if self._listeners == 0:
                self._stop()

    @property
    def listening(self) -> bool:
        return True

    def _start(self) -> bool:
        self.wake()  # in process: every ring reaches the waiters; this is the first pass's
        return True

    def _stop(self) -> None:
        pass

    # -- writing side ---------------------------------------------------------------------------

    def ring(self, conn: Connection, lane: str) -> None:
        """Called in the write transaction that adds rows ``lane`` serves."""
        raise NotImplementedError


class _AfterCommit(Doorbell):
    """SQLite: the ring is noted in the transaction and sent once it has committed (when the connection
    goes back to the pool, right after the commit); a rolled-back transaction sends nothing."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        event.listen(engine, "commit", _committing)
        event.listen(engine, "rollback", _rolled_back)
        event.listen(engine.pool, "checkin", self._checkin)

    def ring(self, conn: Connection, lane: str) -> None:
        _known(lane)
        conn.info.setdefault(_PENDING, set()).add(lane)

    def _checkin(self, _dbapi_connection: Any, record: ConnectionPoolEntry | None) -> None:
        lanes = record.info.pop(_COMMITTED, None) if record is not None else None
        if lanes:
            self._send(lanes)

    def _send(self, lanes: set[str]) -> None:
        self.wake(lanes)


def _known(lane: str) -> None:
    if lane not in LANES:
        raise ValueError(f"unknown doorbell lane {lane!r}")


def _committing(conn: Connection) -> None:
    # The "commit" event runs just before the COMMIT: the ring waits for the checkin that follows it.
    lanes = conn.info.pop(_PENDING, None)
    if lanes:
        conn.info.setdefault(_COMMITTED, set()).update(lanes)


def _rolled_back(conn: Connection) -> None:
    conn.info.pop(_PENDING, None)


def _forget(conn: Connection) -> None:
    conn.info.pop(_RUNG, None)


class _Local(_AfterCommit):
    """In-memory SQLite: writers and the worker share the process (and the connection)."""


class _Socket(_AfterCommit):
    """A SQLite file: a datagram to the socket the worker bound in the database's private directory."""

    def __init__(self, engine: Engine, path: str) -> None:
        super().__init__(engine)
        self.database = os.path.realpath(path)
        self.directory = self.database + "-doorbell"
        self.address = os.path.join(self.directory, "bell")
        self._in: socket.socket | None = None
        self._lock_fd = -1
        self._thread: threading.Thread | None = None
        self._closing = False

    def _send(self, lanes: set[str]) -> None:
        # A socket per ring (a few microseconds): none is left open for the garbage collector, or
        # shared by forked processes. Nobody bound (no worker) or its buffer full: the worker polls.
        # Never into a directory another user made (a database in a shared directory): the worker
        # refuses it too, and says so.
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
            private_directory(self.database, self.directory, create=False)
            out.setblocking(False)
            out.sendto(" ".join(sorted(lanes)).encode(), self.address)

    @property
    def listening(self) -> bool:
        return self._in is not None

    def _start(self) -> bool:
        try:
            sock = self._bind()
        except OSError as exc:
            log.warning("outbox doorbell: not listening on %s (%s); the worker polls", self.address, exc)
            return False
        if sock is None:
            return False
        self._closing = False
        self._in = sock
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="outbox doorbell", daemon=True)
        self._thread.start()
        self.wake()  # as on PostgreSQL: a pass for whatever was committed before anyone listened
        return True

    def _bind(self) -> socket.socket | None:
        """The bound socket, or None when another worker listens (raises OSError when this one cannot:
        a directory someone else made, a path too long for a socket)."""
        if len(self.address.encode()) > _SUN_PATH:
            raise OSError(errno.ENAMETOOLONG, "the database's path is too long for a socket's")
        private_directory(self.database, self.directory)
        lock = open_beside(self.database, os.path.join(self.directory, "lock"))
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(lock, 32, 0).decode(errors="replace").strip() or "?"
                log.warning(
                    "outbox doorbell: process %s already listens on %s; this worker polls",
                    holder,
                    self.address,
                )
                os.close(lock)
                return None
            os.ftruncate(lock, 0)
            os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)
            with contextlib.suppress(FileNotFoundError):  # left by a worker that ended without closing
                os.unlink(self.address)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind(self.address)
                adopt(self.database, self.address)  # root's worker: the database owner's writers ring it
            except BaseException:
                sock.close()
                raise
        except BaseException:
            os.close(lock)
            raise
        self._lock_fd = lock
        return sock

    def _serve(self, sock: socket.socket) -> None:
        try:
            while not self._closing:
                lanes = set(sock.recv(256).decode(errors="replace").split())
                sock.setblocking(False)
                try:  # several rings since the last wake-up are one wake-up
                    while True:
                        lanes.update(sock.recv(256).decode(errors="replace").split())
                except BlockingIOError:
                    pass
                sock.setblocking(True)
                if lanes:  # (none: the poke of _stop)
                    self.wake(lanes)
        except OSError:
            if not self._closing:
                log.exception("outbox doorbell: the socket failed; the worker polls")
        finally:
            sock.close()

    def _stop(self) -> None:
        sock, thread, lock = self._in, self._thread, self._lock_fd
        self._in = self._thread = None
        self._lock_fd = -1
        if sock is None or thread is None:
            return
        self._closing = True
        try:  # unblocks the reader's recv; it sees _closing and closes the socket
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as poke:
                poke.sendto(b"", self.address)
        except OSError:
            sock.shutdown(socket.SHUT_RDWR)
        thread.join(timeout=5)
        with contextlib.suppress(OSError):  # still ours: the lock is held until the next line
            os.unlink(self.address)
        os.close(lock)


class _Postgres(Doorbell):
    """PostgreSQL: NOTIFY in the write transaction, LISTEN on a connection of the worker's own."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        # Weak: the registry's value must not keep its key (the engine) alive.
        self._engine = weakref.ref(engine)
        event.listen(engine, "commit", _forget)
        event.listen(engine, "rollback", _forget)
        # What losing the server looks like: SQLAlchemy's wrapper (connecting), the driver's own
        # errors (psycopg, on the connection we hold), socket errors.
        self._lost: tuple[type[BaseException], ...] = (DBAPIError, engine.dialect.loaded_dbapi.Error, OSError)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = -1, -1

    def ring(self, conn: Connection, lane: str) -> None:
        _known(lane)
        # Once per lane and transaction (or savepoint: its NOTIFY goes if it rolls back).
        current = conn.get_nested_transaction() or conn.get_transaction()
        rung: dict[str, Any] = conn.info.setdefault(_RUNG, {})
        if rung.get(lane) is current:
            return
        conn.execute(_NOTIFY, {"lane": lane})
        rung[lane] = current

    @property
    def listening(self) -> bool:
        return self._thread is not None

    def _start(self) -> bool:
        self._stopping.clear()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="outbox doorbell", daemon=True)
        self._thread.start()
        return True

    def _stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._thread = None
        self._stopping.set()
        os.write(self._wake_w, b"\0")
        thread.join(timeout=5)
        if not thread.is_alive():  # (else it still selects on them: left open)
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _serve(self) -> None:
        pause = 0.5
        while not self._stopping.is_set():
            listened = False
            try:
                pooled, driver = self._connect()
                listened = True
                try:
                    self.wake()  # rows committed while nobody listened
                    self._receive(driver)
                finally:
                    self._close(pooled)
            except self._lost as exc:  # down, restarting, or our backend terminated
                if not self._stopping.is_set():
                    log.warning("outbox doorbell: not listening (%s); the worker polls meanwhile", exc)
            except Exception:  # a bug here must not end the listener: the worker still polls
                log.exception("outbox doorbell failed; the worker polls meanwhile")
            if self._stopping.is_set():
                return
            self.wake()  # a pass now, in case a ring was lost with the connection
            pause = 0.5 if listened else min(RECONNECT_CAP, pause * 2)
            self._stopping.wait(pause)

    def _connect(self) -> tuple[Any, Any]:
        """A connection outside the pool (detached: the pool neither lends nor recycles it), made as
        the engine makes them (same URL, options and search_path), in autocommit. Its
        application_name is the channel: an operator sees who listens where in pg_stat_activity."""
        engine = self._engine()
        if engine is None:
            raise ConnectionError("the engine is gone")
        pooled = engine.raw_connection()
        driver: Any = pooled.driver_connection
        pooled.detach()
        try:
            driver.autocommit = True
            channel = driver.execute(_CHANNEL).fetchone()[0]  # as channel() computes it
            driver.execute(f"SET application_name = '{channel}'")
            driver.execute(f'LISTEN "{channel}"')
            # Notifications read while a query runs (the keepalive) are handed to this handler.
            driver.add_notify_handler(lambda notify: self.wake([notify.payload]))
        except BaseException:
            self._close(pooled)
            raise
        return pooled, driver

    def _close(self, pooled: Any) -> None:
        try:
            pooled.close()
        except self._lost:  # already broken: nothing more to release
            log.debug("outbox doorbell: closing the lost connection failed", exc_info=True)

    def _receive(self, driver: Any) -> None:
        """Wake the waiters on each notification until stopped or the connection fails (raises)."""
        pgconn = driver.pgconn
        fileno = pgconn.socket
        while not self._stopping.is_set():
            ready, _, _ = select.select([fileno, self._wake_r], [], [], KEEPALIVE)
            if self._wake_r in ready:
                return
            if not ready:  # silence: make sure the server is still there (a dead peer sends no FIN)
                driver.execute("SELECT 1")
                continue
            pgconn.consume_input()  # raises when the server closed the connection
            lanes: set[str] = set()
            while (notify := pgconn.notifies()) is not None:
                lanes.add(notify.extra.decode(errors="replace"))
            if lanes:
                self.wake(lanes)
            if pgconn.status != 0:  # libpq CONNECTION_OK
                raise ConnectionError("the listening connection is no longer OK")


_BELLS: weakref.WeakKeyDictionary[Engine, Doorbell] = weakref.WeakKeyDictionary()
_BELLS_LOCK = threading.Lock()


def of(engine: Engine) -> Doorbell:
    """The engine's doorbell (one per engine; make it before the engine's first connection, so that
    its commit events see every transaction: the app does)."""
    with _BELLS_LOCK:
        bell = _BELLS.get(engine)
        if bell is None:
            bell = _make(engine)
            _BELLS[engine] = bell
        return bell


def _make(engine: Engine) -> Doorbell:
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        return _Postgres(engine)  # (its listener reads notifications through psycopg 3's libpq)
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:" and hasattr(socket, "AF_UNIX"):
        return _Socket(engine, database)
    return _Local(engine)


def channel(conn: Connection) -> str:
    """PostgreSQL: the channel the writers of this database and schema notify (the listener's
    connection carries it as its application_name)."""
    return str(conn.execute(text(_CHANNEL)).scalar_one())


def ring(conn: Connection, lane: str) -> None:
    """Wake the worker's ``lane`` once this transaction commits (call it where its rows are added)."""
    of(conn.engine).ring(conn, lane)
