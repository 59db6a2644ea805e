"""A stand-in for the regional e-parcours platform: an HTTPS endpoint that requires our client certificate
(mutual TLS) and records the FHIR messages it accepts. Needs a module-scoped ``pki`` fixture."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from tests.support.pki import Pki


@dataclass
class Platform:
    port: int
    received: list[dict[str, Any]] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    answer: int = 200
    body: bytes = b""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/fhir/$process-message"


@pytest.fixture(scope="module")
def platform(pki: Pki) -> Iterator[Platform]:
    state = Platform(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            cert = self.connection.getpeercert()  # type: ignore[attr-defined]
            subject = dict(x[0] for x in cert["subject"]) if cert else {}
            state.peers.append(str(subject.get("commonName")))
            if state.answer < 300:
                state.received.append(orjson.loads(raw))
            self.send_response(state.answer)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, *_args: Any) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: no client certificate from our CA, no talk
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
