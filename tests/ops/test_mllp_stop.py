"""Stopping the MLLP listener lets the message being handled get its ACK (graceful shutdown)."""

from __future__ import annotations

import socket
import threading
import time

from connectors.hl7v2.mllp import END, START, MllpServer, read_frame


def _refused(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_stop_answers_the_message_being_handled() -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_handler(raw: bytes) -> bytes:
        entered.set()
        release.wait(10)
        return b"MSH|^~\\&|ACK\rMSA|AA|" + raw[-2:]

    server = MllpServer("127.0.0.1", 0, slow_handler)
    server.start()
    port = server.port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(START + b"MSH|x|M1" + END)
        assert entered.wait(10)
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        deadline = time.monotonic() + 10
        while not _refused(port):  # no longer accepting: stop() is now closing the connections
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)
        release.set()
        assert read_frame(conn).endswith(b"MSA|AA|M1")
        stopper.join(10)
        assert conn.recv(10) == b""  # then the connection is closed
    assert not stopper.is_alive()
