"""MLLP transport (HL7 v2.5 Implementation Guide C.4, Minimal Lower Layer Protocol; IHE ITI TF-2x C.2.1).

Frame: ``0x0B`` message ``0x1C 0x0D``. One thread per connection (at most ``max_connections``, and at
most ``max_connections_per_peer`` from one peer address; extra connections are closed at once), several
messages per connection answered in order. Bytes outside a frame are discarded; a new ``0x0B`` inside an
unfinished frame restarts the frame (resynchronisation). A frame over ``max_message_bytes`` gets an AR and
the connection is closed; a connection with no byte received for ``idle_timeout`` seconds is closed, and
so is one whose frame (counted from its first byte, noise included) is not complete ``frame_deadline``
seconds later: a peer dribbling bytes cannot hold a connection (issue 16). With an ``ssl_context`` the
listener speaks TLS (IHE ITI TF-2 3.19 ATNA secure node: mutual authentication when the context requires
client certificates); the handshake runs in the connection's thread, within the frame deadline.
``session(peer)`` gives each connection its handler (None: the connection is closed), e.g. from the
client certificate. Handler failures become an AE 207 built here: the listener never stops.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors.events import EventError
from connectors.hl7v2.ack import ack

START, END = b"\x0b", b"\x1c\x0d"
log = logging.getLogger(__name__)


Handler = Callable[[bytes], bytes]


@dataclass(frozen=True)
class Peer:
    """The other end of one connection: its address and, over TLS, its verified certificate."""

    address: str
    certificate: dict[str, Any] | None = None  # ssl.SSLSocket.getpeercert()
    certificate_der: bytes | None = None


class MllpServer:
    """A threaded MLLP listener calling ``handler(message) -> ack bytes`` for every frame."""

    def __init__(
        self,
        host: str,
        port: int,
        handler: Handler | None = None,
        *,
        max_message_bytes: int = 1_048_576,
        idle_timeout: float = 60.0,
        max_connections: int = 64,
        max_connections_per_peer: int = 8,
        frame_deadline: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        session: Callable[[Peer], Handler | None] | None = None,
    ) -> None:
        if handler is None and session is None:
            raise ValueError("MllpServer needs a handler or a session")
        self.host = host
        self.requested_port = port
        self.handler = handler
        self.session = session
        self.max_message_bytes = max_message_bytes
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_connections_per_peer = max_connections_per_peer
        self.frame_deadline = frame_deadline
        self.ssl_context = ssl_context
        self._per_peer: dict[str, int] = {}
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._accept_thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._listener is None:
            return self.requested_port
        return int(self._listener.getsockname()[1])

    def start(self) -> None:
        """Bind, listen and accept in a background thread; returns once listening."""
        if self._listener is not None:
            return
        self._stopping.clear()
        self._listener = socket.create_server((self.host, self.requested_port), backlog=128)
        self._listener.settimeout(0.05)  # accept() wakes up regularly to notice stop()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="mllp-accept", daemon=True)
        self._accept_thread.start()

    def serve_forever(self) -> None:
        """Start (if needed) and block until :meth:`stop` is called from another thread."""
        self.start()
        self._stopping.wait()

    def stop(self) -> None:
        """Stop accepting and reading, let the messages being handled be answered, then wait briefly
        for the connection threads."""
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
            self._accept_thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            connections, threads = list(self._connections), list(self._threads)
        for conn in connections:
            # Stop reading only: a message being handled still gets its ACK, then the thread ends.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RD)
        for thread in threads:
            thread.join(timeout=5)

    def __enter__(self) -> MllpServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- internals

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                conn, address = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                continue  # e.g. EMFILE, ECONNABORTED: keep listening
            peer = str(address[0])
            with self._lock:
                full = len(self._connections) >= self.max_connections
                peer_full = self._per_peer.get(peer, 0) >= self.max_connections_per_peer
                if not full and not peer_full:
                    self._connections.add(conn)
                    self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
            if full or peer_full:
                # The accept loop only closes here: a flood from one peer never blocks the others.
                if full:
                    log.warning("MLLP: connection refused, %d connections open", self.max_connections)
                else:
                    log.warning(
                        "MLLP: connection refused, %d open from one peer", self.max_connections_per_peer
                    )
                with contextlib.suppress(OSError):
                    conn.close()
                continue
            thread = threading.Thread(
                target=self._serve_connection, args=(conn, peer), name="mllp-conn", daemon=True
            )
            with self._lock:
                self._threads.add(thread)
            thread.start()

    def _serve_connection(self, conn: socket.socket, peer: str) -> None:
        tcp = conn
        try:
            conn, handler = self._open(conn, peer)
            if handler is None:
                log.warning("MLLP: connection from an unauthorised peer closed")
                return
            conn.settimeout(self.idle_timeout)
            self._read_frames(conn, handler)
        except (TimeoutError, OSError):
            pass  # idle timeout, frame deadline, reset by peer, shutdown by stop(), TLS failure
        except Exception as exc:  # noqa: BLE001 - a connection failure never reaches the listener
            log.error("MLLP: connection failed (%s)", type(exc).__name__)
        finally:
            for sock in {tcp, conn}:
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._connections.discard(tcp)
                self._connections.discard(conn)
                left = self._per_peer.get(peer, 1) - 1
                if left > 0:
                    self._per_peer[peer] = left
                else:
                    self._per_peer.pop(peer, None)
                self._threads.discard(threading.current_thread())

    def _open(self, conn: socket.socket, peer: str) -> tuple[socket.socket, Handler | None]:
        """TLS handshake (if any) and the connection's handler (None: close the connection)."""
        info = Peer(peer)
        if self.ssl_context is not None:
            conn.settimeout(self.frame_deadline)
            try:
                wrapped = self.ssl_context.wrap_socket(conn, server_side=True)
            except ssl.SSLError as exc:  # no or untrusted client certificate, protocol mismatch
                log.warning("MLLP: TLS handshake from %s failed (%s)", peer, exc.reason)
                raise
            with self._lock:  # stop() must reach the TLS socket (the TCP one is detached now)
                self._connections.discard(conn)
                self._connections.add(wrapped)
            conn = wrapped
            info = Peer(peer, wrapped.getpeercert() or None, wrapped.getpeercert(binary_form=True))
        handler = self.session(info) if self.session is not None else self.handler
        return conn, handler

    def _receive(self, conn: socket.socket, frame_started: float | None) -> bytes:
        """One recv within the idle timeout and, inside a frame, within what is left of its deadline."""
        if frame_started is None:
            conn.settimeout(self.idle_timeout)
        else:
            left = frame_started + self.frame_deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("MLLP frame deadline")
            conn.settimeout(min(self.idle_timeout, left))
        return conn.recv(65536)

    def _read_frames(self, conn: socket.socket, handler: Handler) -> None:
        buffer = bytearray()
        in_frame = False
        scanned = 0  # bytes of the current frame already searched for the end block
        started: float | None = None  # when the first byte after the last complete frame arrived
        while not self._stopping.is_set():
            try:
                chunk = self._receive(conn, started)
            except TimeoutError:
                if started is not None:
                    log.warning(
                        "MLLP: frame not complete within %.0f s, connection closed", self.frame_deadline
                    )
                raise
            if not chunk:
                return  # peer closed (possibly mid-frame: the partial message is dropped)
            if started is None:
                started = time.monotonic()
            buffer += chunk
            while True:
                if not in_frame:
                    start = buffer.find(START)
                    if start < 0:
                        buffer.clear()  # noise between frames
                        break
                    del buffer[: start + 1]
                    in_frame, scanned = True, 0
                restart = buffer.find(START, scanned)
                end = buffer.find(END, max(scanned - 1, 0))
                if restart >= 0 and (end < 0 or restart < end):
                    del buffer[: restart + 1]  # a new start block: the unfinished frame is abandoned
                    scanned = 0
                    continue
                if end < 0:
                    scanned = len(buffer)
                    if len(buffer) > self.max_message_bytes:
                        self._send(conn, self._too_large(bytes(buffer[:4096])))
                        _linger(conn)
                        return
                    break
                message = bytes(buffer[:end])
                del buffer[: end + 2]
                in_frame, scanned = False, 0
                if len(message) > self.max_message_bytes:
                    self._send(conn, self._too_large(message[:4096]))
                    _linger(conn)
                    return
                self._send(conn, self._answer(handler, message))
                # The next frame's clock starts with its first byte (already here, or to come).
                started = time.monotonic() if buffer else None

    def _answer(self, handler: Handler, message: bytes) -> bytes:
        try:
            response = handler(message)
            if not isinstance(response, bytes):
                raise TypeError("the handler must return bytes")
            return response
        except Exception as exc:  # noqa: BLE001 - the sender gets an AE, the listener keeps running
            log.error("MLLP: handler failed (%s)", type(exc).__name__)
            return ack(None, "AE", EventError("Application internal error", code="207"), raw=message[:4096])

    def _too_large(self, head: bytes) -> bytes:
        error = EventError(
            f"Message larger than {self.max_message_bytes} bytes", code="100", location="MSH", rejected=True
        )
        return ack(None, "AR", error, raw=head)

    def _send(self, conn: socket.socket, payload: bytes) -> None:
        conn.sendall(START + payload + END)


def _linger(conn: socket.socket, seconds: float = 1.0) -> None:
    """Half-close, then drain what the peer is still sending for a moment, so that closing does not
    reset the connection before the peer has read our answer."""
    if isinstance(conn, ssl.SSLSocket):
        return  # a TLS half-close would drop the TLS layer; the close_notify comes with close()
    conn.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + seconds
    conn.settimeout(0.1)
    while time.monotonic() < deadline:
        try:
            if not conn.recv(65536):
                return
        except TimeoutError:
            continue


def send(host: str, port: int, message: bytes, timeout: float = 10.0) -> bytes:
    """Send one framed message and return the unframed answer (a tiny MLLP client for tests/bench)."""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(START + message + END)
        return read_frame(conn)


def read_frame(conn: socket.socket, pending: bytearray | None = None) -> bytes:
    """Read one MLLP frame from ``conn``; ConnectionError if the peer closes first. Pass the same
    ``pending`` buffer to successive calls on one connection: bytes after the frame are kept there."""
    buffer = pending if pending is not None else bytearray()
    while True:
        start = buffer.find(START)
        if start >= 0:
            end = buffer.find(END, start)
            if end >= 0:
                frame = bytes(buffer[start + 1 : end])
                del buffer[: end + 2]
                return frame
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before a complete MLLP frame")
        buffer += chunk
