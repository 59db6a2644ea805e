"""MLLP listener over real sockets on 127.0.0.1 (framing 0x0B … 0x1C 0x0D)."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
from collections.abc import Iterator

import hl7
import pytest

from connectors.events import EncounterEvent
from connectors.hl7v2 import handle
from connectors.hl7v2.mllp import END, START, MllpServer, read_frame, send

MESSAGE = (
    "MSH|^~\\&|SIH|CHU^440000289^M|CPTS|CPTS44|20240315103000||ADT^A01^ADT_A01|{id}|P|2.5|||||FRA|"
    "UNICODE UTF-8\r"
    "EVN||20240315102500\r"
    "PID|1||IPP1^^^CHU&1.2.250.1.999.1.1&ISO^PI||LÉGER^Hélène^^^^^L||19840524|F\r"
    "PV1|1|I|CARDIO" + "|" * 16 + "NDA1^^^CHU&1.2.250.1.999.1.2&ISO^AN\r"
)


def message(control_id: str = "M1") -> bytes:
    return MESSAGE.format(id=control_id).encode("utf-8")


def msa(answer: bytes) -> tuple[str, str]:
    parsed = hl7.parse(answer.decode("utf-8"))
    return str(parsed.segment("MSA")[1]), str(parsed.segment("MSA")[2])


def accept_all(event: EncounterEvent) -> None:
    return None


@pytest.fixture
def server() -> Iterator[MllpServer]:
    srv = MllpServer(
        "127.0.0.1",
        0,
        lambda raw: handle(raw, accept_all),
        max_message_bytes=64_000,
        idle_timeout=2.0,
        max_connections_per_peer=32,  # test_concurrent_connections opens 20 at once
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def connect(srv: MllpServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=5)


def test_send_helper(server: MllpServer) -> None:
    assert server.port > 0
    assert msa(send("127.0.0.1", server.port, message("ONE"), 5)) == ("AA", "ONE")


def test_two_messages_on_one_connection(server: MllpServer) -> None:
    with connect(server) as conn:
        pending = bytearray()  # both answers may arrive in one recv
        conn.sendall(START + message("A") + END + START + message("B") + END)
        assert msa(read_frame(conn, pending)) == ("AA", "A")
        assert msa(read_frame(conn, pending)) == ("AA", "B")
        conn.sendall(START + message("C") + END)
        assert msa(read_frame(conn, pending)) == ("AA", "C")


def test_junk_before_start_block_is_discarded(server: MllpServer) -> None:
    with connect(server) as conn:
        conn.sendall(b"\r\nGET / HTTP/1.1\r\n\x1c\r junk" + START + message("J") + END)
        assert msa(read_frame(conn)) == ("AA", "J")


def test_frame_split_across_many_sends(server: MllpServer) -> None:
    data = START + message("SPLIT") + END
    with connect(server) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(data), 7):
            conn.sendall(data[i : i + 7])
        assert msa(read_frame(conn)) == ("AA", "SPLIT")


def test_end_block_split_between_sends(server: MllpServer) -> None:
    with connect(server) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(START + message("E") + b"\x1c")
        time.sleep(0.05)
        conn.sendall(b"\x0d")
        assert msa(read_frame(conn)) == ("AA", "E")


def test_oversized_frame_gets_ar_then_close(server: MllpServer) -> None:
    big = message("BIG") + b"NTE|1||" + b"x" * 100_000 + b"\r"
    with connect(server) as conn:
        with contextlib.suppress(OSError):  # the server may close while we are still sending
            conn.sendall(START + big + END)
        code, control_id = msa(read_frame(conn))
        assert code == "AR"
        assert control_id == "BIG"
        conn.settimeout(3)
        with pytest.raises((ConnectionError, OSError)):
            while True:
                if not conn.recv(65536):
                    raise ConnectionError("closed")
    assert msa(send("127.0.0.1", server.port, message("AFTER"), 5)) == ("AA", "AFTER")


def test_idle_timeout_closes() -> None:
    srv = MllpServer("127.0.0.1", 0, lambda raw: handle(raw, accept_all), idle_timeout=0.3)
    srv.start()
    try:
        with connect(srv) as conn:
            conn.settimeout(3)
            started = time.monotonic()
            assert conn.recv(10) == b""
            assert time.monotonic() - started < 2
    finally:
        srv.stop()


def test_client_disconnects_mid_frame(server: MllpServer) -> None:
    for _ in range(5):
        with connect(server) as conn:
            conn.sendall(START + message("HALF")[:50])
    with connect(server) as conn:
        conn.sendall(START + message("HALF")[:50])
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    assert msa(send("127.0.0.1", server.port, message("NEXT"), 5)) == ("AA", "NEXT")


def test_restart_block_inside_unfinished_frame(server: MllpServer) -> None:
    with connect(server) as conn:
        conn.sendall(START + b"MSH|^~\\&|broken" + START + message("RESYNC") + END)
        assert msa(read_frame(conn)) == ("AA", "RESYNC")


def test_garbage_frames_get_ar(server: MllpServer) -> None:
    with connect(server) as conn:
        # one frame at a time: each answer is read before the next frame is sent
        for payload in (b"", b"hello", b"\xff\xfe\x00", b"MSH|"):
            conn.sendall(START + payload + END)
            assert msa(read_frame(conn))[0] == "AR"


def test_random_fuzz_then_valid_message(server: MllpServer) -> None:
    rng = random.Random(1234)
    for i in range(50):
        with connect(server) as conn:
            chunk = os.urandom(rng.randint(1, 3000))
            if i % 3 == 0:
                chunk = START + chunk + END
            elif i % 3 == 1:
                chunk = START + b"MSH|^~\\&|" + chunk + END
            with contextlib.suppress(OSError):
                conn.sendall(chunk)
    assert msa(send("127.0.0.1", server.port, message("SURVIVOR"), 5)) == ("AA", "SURVIVOR")


def test_handler_exception_becomes_ae() -> None:
    def broken(raw: bytes) -> bytes:
        raise RuntimeError("secret patient data")

    srv = MllpServer("127.0.0.1", 0, broken)
    srv.start()
    try:
        answer = send("127.0.0.1", srv.port, message("H"), 5)
        assert msa(answer) == ("AE", "H")
        assert b"secret" not in answer
        assert msa(send("127.0.0.1", srv.port, message("H2"), 5)) == ("AE", "H2")
    finally:
        srv.stop()


def test_concurrent_connections(server: MllpServer) -> None:
    results: dict[int, tuple[str, str]] = {}
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            with connect(server) as conn:
                for k in range(3):
                    conn.sendall(START + message(f"C{n}-{k}") + END)
                    results[n * 10 + k] = msa(read_frame(conn))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not errors
    assert len(results) == 60
    assert all(code == "AA" and cid == f"C{key // 10}-{key % 10}" for key, (code, cid) in results.items())


def test_max_connections_refuses_extra_but_keeps_serving() -> None:
    srv = MllpServer("127.0.0.1", 0, lambda raw: handle(raw, accept_all), max_connections=2, idle_timeout=2)
    srv.start()
    try:
        with connect(srv) as first, connect(srv) as second:
            first.sendall(START + message("F1") + END)
            second.sendall(START + message("F2") + END)
            assert msa(read_frame(first)) == ("AA", "F1")
            assert msa(read_frame(second)) == ("AA", "F2")
            with connect(srv) as third:
                third.settimeout(3)
                with pytest.raises((ConnectionError, OSError)):
                    third.sendall(START + message("F3") + END)
                    read_frame(third)
        time.sleep(0.1)
        assert msa(send("127.0.0.1", srv.port, message("F4"), 5)) == ("AA", "F4")
    finally:
        srv.stop()


def test_stop_closes_open_connections() -> None:
    srv = MllpServer("127.0.0.1", 0, lambda raw: handle(raw, accept_all))
    srv.start()
    with connect(srv) as conn:
        conn.sendall(START + b"partial")
        time.sleep(0.05)
        srv.stop()
        conn.settimeout(3)
        assert conn.recv(10) == b""
