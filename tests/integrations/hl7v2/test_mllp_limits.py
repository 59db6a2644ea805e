"""MLLP hardening (issue 16) over real sockets: per-peer connection cap, frame deadline, listener senders,
loopback-only plain MLLP, MLLP over TLS with client certificates mapped to registered clients."""

from __future__ import annotations

import hashlib
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from connectors.events import EncounterEvent
from connectors.hl7v2 import handle
from connectors.hl7v2.mllp import END, START, MllpServer, read_frame
from coordination_api.cli import main
from coordination_api.config import Hl7v2Settings, Settings
from coordination_api.integrations.hl7v2 import mllp_server
from coordination_api.storage.schema import message_log
from tests.support.hl7v2 import adt
from tests.support.messages import HL7_SENDER
from tests.support.pki import Pki, make_pki


def accept_all(event: EncounterEvent) -> None:
    return None


def _closed(conn: socket.socket, within: float) -> bool:
    """True once the server has closed ``conn`` (EOF or reset) within ``within`` seconds."""
    deadline = time.monotonic() + within
    conn.settimeout(0.1)
    while time.monotonic() < deadline:
        try:
            if conn.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def _exchange(conn: socket.socket, raw: bytes) -> bytes:
    conn.sendall(START + raw + END)
    return read_frame(conn)


def test_64_slow_connections_from_one_peer_do_not_lock_out_another() -> None:
    srv = MllpServer(
        "127.0.0.1",
        0,
        lambda raw: handle(raw, accept_all),
        max_connections=64,
        max_connections_per_peer=8,
        idle_timeout=30,
        frame_deadline=30,
    )
    srv.start()
    slow: list[socket.socket] = []
    try:
        for _ in range(64):  # each starts a frame and never finishes it
            conn = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            conn.sendall(START + b"M")
            slow.append(conn)
        time.sleep(0.3)
        still_open = [c for c in slow if not _closed(c, 0.05)]
        assert len(still_open) == 8  # the per-peer cap: the other 56 were closed at once
        with socket.create_connection(
            ("127.0.0.1", srv.port), timeout=5, source_address=("127.0.0.2", 0)
        ) as other_peer:
            assert b"MSA|AA|P2" in _exchange(other_peer, adt("A01", control_id="P2"))
    finally:
        for conn in slow:
            conn.close()
        srv.stop()


@pytest.fixture
def deadline_server() -> Iterator[MllpServer]:
    srv = MllpServer("127.0.0.1", 0, lambda raw: handle(raw, accept_all), idle_timeout=10, frame_deadline=1.0)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize("opening", [START, b"noise"], ids=["frame", "noise"])
def test_a_dribbling_frame_is_cut_at_the_deadline(deadline_server: MllpServer, opening: bytes) -> None:
    with socket.create_connection(("127.0.0.1", deadline_server.port), timeout=5) as conn:
        started = time.monotonic()
        conn.sendall(opening)
        closed = False
        while time.monotonic() - started < 5:
            try:
                conn.sendall(b"x")  # one byte every 0.3 s: the idle timeout (10 s) never fires
            except OSError:
                closed = True
                break
            if _closed(conn, 0.3):
                closed = True
                break
        elapsed = time.monotonic() - started
    assert closed and 0.9 <= elapsed < 4.0  # the idle timeout (10 s) would be far later


def test_the_deadline_is_per_frame_not_per_connection(deadline_server: MllpServer) -> None:
    with socket.create_connection(("127.0.0.1", deadline_server.port), timeout=5) as conn:
        for n in range(3):  # quick frames with idle pauses: 2.4 s in all, over the 1 s deadline
            assert f"MSA|AA|Q{n}".encode() in _exchange(conn, adt("A01", control_id=f"Q{n}"))
            time.sleep(0.8)


def test_plain_mllp_listens_on_loopback_only_unless_allowed(app: Flask) -> None:
    everywhere = "0.0.0.0"  # noqa: S104 - the bind under test (refused, then allowed, never started)
    with pytest.raises(ValueError, match="COORDINATION_MLLP_ALLOW_REMOTE_PLAIN"):
        mllp_server(app, everywhere, 0, max_message_bytes=65_536)
    allowed = replace(app.config["SETTINGS"].hl7v2, allow_remote_plain=True)
    assert mllp_server(app, everywhere, 0, max_message_bytes=65_536, config=allowed).host == everywhere
    assert Settings.from_env({"COORDINATION_MLLP_ALLOW_REMOTE_PLAIN": "1"}).hl7v2.allow_remote_plain
    # `serve` refuses before starting anything (its MLLP child would bind the same address).
    refused = app.test_cli_runner().invoke(main, args=["serve", "--host", everywhere, "--port", "1"])
    assert refused.exit_code != 0 and "Refusing to start plain MLLP" in refused.output


def _listener(app: Flask, config: Hl7v2Settings) -> MllpServer:
    srv = mllp_server(app, "127.0.0.1", 0, max_message_bytes=1_048_576, config=config)
    srv.start()
    return srv


def _log(app: Flask) -> list[tuple[str, str, str]]:
    with app.extensions["coordination"].repo.engine.connect() as conn:
        rows = conn.execute(select(message_log.c.client, message_log.c.sender, message_log.c.message_id))
        return sorted((r[0], r[1], r[2]) for r in rows)


def _other_sender(control_id: str) -> bytes:
    return adt("A01", control_id=control_id).replace(b"SIH-PASTEL", b"ROGUE-APP", 1)


def test_a_plain_listener_accepts_only_its_configured_senders(anonymous_client: FlaskClient) -> None:
    app = anonymous_client.application
    base = app.config["SETTINGS"].hl7v2
    srv = _listener(app, replace(base, senders=(HL7_SENDER,)))
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as conn:
            assert b"MSA|AA|L1" in _exchange(conn, adt("A01", control_id="L1"))
            refused = _exchange(conn, _other_sender("L2"))
            assert b"MSA|AR|L2|" in refused and b"not accepted by this listener" in refused
    finally:
        srv.stop()
    assert _log(app) == [("mllp", HL7_SENDER, "L1")]
    nobody = _listener(app, base)  # no COORDINATION_MLLP_SENDERS: no sender at all
    try:
        with socket.create_connection(("127.0.0.1", nobody.port), timeout=10) as conn:
            assert b"MSA|AR|L3|" in _exchange(conn, adt("A01", control_id="L3"))
    finally:
        nobody.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("mllp-pki"))


def _tls_config(base: Hl7v2Settings, pki: Pki, clients: tuple[tuple[str, str], ...]) -> Hl7v2Settings:
    return replace(
        base,
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_ca_file=str(pki.ca),
        tls_clients=clients,
        frame_deadline=5,
    )


def _tls_connect(port: int, pki: Pki, cert: Path | None, key: Path | None) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def _registered(app: Flask, *senders: str) -> str:
    store = app.extensions["auth"].store
    client_id, _secret = store.create_client(
        "CHU TLS", "system/*.cruds", "client_secret_basic", [], None, None
    )
    store.add_senders(client_id, list(senders))
    return str(client_id)


def test_tls_maps_the_client_certificate_to_a_registered_client(
    anonymous_client: FlaskClient, pki: Pki
) -> None:
    app = anonymous_client.application
    client_id = _registered(app, HL7_SENDER)
    config = _tls_config(app.config["SETTINGS"].hl7v2, pki, (("cn:coordination-cpts-test", client_id),))
    srv = _listener(app, config)
    try:
        with _tls_connect(srv.port, pki, pki.client_cert, pki.client_key) as conn:
            assert b"MSA|AA|T1" in _exchange(conn, adt("A01", control_id="T1"))
            refused = _exchange(conn, _other_sender("T2"))  # a sender not registered to that client
            assert b"MSA|AR|T2|" in refused and b"not registered to this client" in refused
        for cert, key in ((None, None), (pki.stranger_cert, pki.stranger_key)):
            # No certificate, or one from another CA: the handshake fails, nothing is processed.
            with (
                pytest.raises((ssl.SSLError, ConnectionError, OSError)),
                _tls_connect(srv.port, pki, cert, key) as conn,
            ):
                _exchange(conn, adt("A01", control_id="T3"))
    finally:
        srv.stop()
    assert _log(app) == [(client_id, HL7_SENDER, "T1")]


def test_tls_fingerprint_mapping_and_unmapped_or_revoked_certificates(
    anonymous_client: FlaskClient, pki: Pki
) -> None:
    app = anonymous_client.application
    client_id = _registered(app, HL7_SENDER)
    der = x509.load_pem_x509_certificate(pki.client_cert.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    digest = hashlib.sha256(der).hexdigest().upper()
    colons = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    base = app.config["SETTINGS"].hl7v2
    srv = _listener(app, _tls_config(base, pki, ((f"sha256:{colons}", client_id),)))
    try:
        with _tls_connect(srv.port, pki, pki.client_cert, pki.client_key) as conn:
            assert b"MSA|AA|F1" in _exchange(conn, adt("A01", control_id="F1"))
    finally:
        srv.stop()
    unmapped = _listener(app, _tls_config(base, pki, (("cn:someone-else", client_id),)))
    try:
        with (
            pytest.raises((ConnectionError, OSError)),
            _tls_connect(unmapped.port, pki, pki.client_cert, pki.client_key) as conn,
        ):
            _exchange(conn, adt("A01", control_id="F2"))
    finally:
        unmapped.stop()
    app.extensions["auth"].store.revoke_client(client_id)
    revoked = _listener(app, _tls_config(base, pki, (("cn:coordination-cpts-test", client_id),)))
    try:
        with (
            pytest.raises((ConnectionError, OSError)),
            _tls_connect(revoked.port, pki, pki.client_cert, pki.client_key) as conn,
        ):
            _exchange(conn, adt("A01", control_id="F3"))
    finally:
        revoked.stop()
    assert _log(app) == [(client_id, HL7_SENDER, "F1")]


def test_mllp_settings_from_the_environment() -> None:
    config = Settings.from_env(
        {
            "COORDINATION_MLLP_SENDERS": "SIH^CHU  LAB^CHU",
            "COORDINATION_MLLP_FRAME_DEADLINE": "12.5",
            "COORDINATION_MLLP_MAX_CONNECTIONS_PER_PEER": "3",
            "COORDINATION_MLLP_TLS_CLIENTS": "cn:chu-nord=abc sha256:AA:BB=def",
        }
    ).hl7v2
    assert config.senders == ("SIH^CHU", "LAB^CHU")
    assert (config.frame_deadline, config.max_connections_per_peer) == (12.5, 3)
    assert config.tls_clients == (("cn:chu-nord", "abc"), ("sha256:AA:BB", "def"))
    defaults = Hl7v2Settings()
    assert (defaults.host, defaults.allow_remote_plain, defaults.senders) == ("127.0.0.1", False, ())
