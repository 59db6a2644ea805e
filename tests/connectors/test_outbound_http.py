"""Outbound HTTP that is not a connector's own (rest-hook deliveries, client JWKS fetches) goes through
connectors/http.py too: explicit timeouts, never redirected, against real local servers."""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from connectors import http as outbound

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_URL = "http://localhost/auth/token"


@dataclass
class Server:
    """One local HTTP server: ``answer(path) -> (status, headers, body)``; hits by path."""

    answer: Any
    hits: list[str] = field(default_factory=list)
    delay: float = 0.0
    url: str = ""


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[http.server.ThreadingHTTPServer] = []

    def start(server: Server) -> Server:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._reply()

            def do_POST(self) -> None:
                self._reply()

            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                server.hits.append(self.path)
                time.sleep(server.delay)
                status, headers, body = server.answer(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                """Quiet."""

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        server.url = f"http://127.0.0.1:{httpd.server_port}"
        return server

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def _pinned() -> requests.Session:
    return outbound.pinned_session(lambda host, port: "127.0.0.1")


# -- rest-hook deliveries: send_once ---------------------------------------------------------------


def test_send_once_returns_the_status_and_never_follows_a_redirect(serve: Any) -> None:
    target = serve(Server(lambda path: (200, {}, b"")))
    hook = serve(Server(lambda path: (307, {"Location": f"{target.url}/elsewhere"}, b"")))
    with _pinned() as s:
        status = outbound.send_once(s, "POST", f"{hook.url}/hook", data=b"{}", timeout=(2.0, 2.0))
        assert status == 307
        assert hook.hits == ["/hook"] and target.hits == []
        # Positive control: the same call straight to the target is answered by it.
        assert outbound.send_once(s, "POST", f"{target.url}/hook", data=b"{}", timeout=(2.0, 2.0)) == 200
        assert target.hits == ["/hook"]


def test_send_once_keeps_the_read_timeout(serve: Any) -> None:
    slow = serve(Server(lambda path: (200, {}, b""), delay=1.5))
    with _pinned() as s:
        started = time.monotonic()
        with pytest.raises(requests.ReadTimeout):
            outbound.send_once(s, "POST", f"{slow.url}/hook", data=b"{}", timeout=(2.0, 0.3))
        assert time.monotonic() - started < 1.4  # gave up at the read timeout, sent once
        assert slow.hits == ["/hook"]


# -- private_key_jwt: the client's JWKS URL ---------------------------------------------------------


def _token(client: FlaskClient, client_id: str, key: RSAKey) -> Any:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": now + 240}
    claims["jti"] = str(uuid.uuid4())
    assertion = jwt.encode({"alg": "RS384", "kid": key.kid}, claims, key, algorithms=["RS384"])
    return client.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "scope": "system/Patient.rs",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        },
    )


def test_a_jwks_url_that_redirects_is_not_followed(
    anonymous_client: FlaskClient, app: Flask, serve: Any
) -> None:
    key = RSAKey.generate_key(2048, private=True, auto_kid=True)
    body = json.dumps(KeySet([key]).as_dict(private=False)).encode()
    keys = serve(Server(lambda path: (200, {"Content-Type": "application/json"}, body)))
    moved = serve(Server(lambda path: (302, {"Location": f"{keys.url}/jwks.json"}, b"")))
    store = app.extensions["auth"].store
    asymmetric: tuple[str, str, list[str], None] = ("system/*.rs", "private_key_jwt", [], None)
    redirected, _ = store.create_client("jwks-moved", *asymmetric, f"{moved.url}/jwks.json")
    direct, _ = store.create_client("jwks-direct", *asymmetric, f"{keys.url}/jwks.json")

    refused = _token(anonymous_client, redirected, key)
    assert refused.status_code == 400, refused.get_json()
    assert refused.get_json()["error"] == "invalid_client"
    assert moved.hits == ["/jwks.json"] and keys.hits == []
    # Positive control: the same key set at its own URL signs the client in.
    accepted = _token(anonymous_client, direct, key)
    assert accepted.status_code == 200, accepted.get_json()
    assert keys.hits == ["/jwks.json"]
