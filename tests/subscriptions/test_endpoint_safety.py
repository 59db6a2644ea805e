"""Outbound endpoint safety (issue 16): only globally routable addresses, IPv4 embedded in IPv6
unwrapped and checked, a re-check at connection time with the connection pinned to the checked
address, and MSSanté mailto: endpoints only to configured domains (none by default)."""

from __future__ import annotations

import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from connectors.http import pinned_session
from coordination_api.config import Settings, SubscriptionSettings
from coordination_api.subscriptions import endpoint
from tests.conftest import Fhir
from tests.subscriptions.conftest import FAST, Receiver
from tests.support.pki import Pki, make_pki
from tests.support.subscriptions import Pump, active, classic, encounter

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"

NON_PUBLIC = [
    "https://[2002:a9fe:a9fe::1]/",  # 6to4 of 169.254.169.254 (cloud metadata)
    "https://[2002:0a00:0001::1]/hook",  # 6to4 of 10.0.0.1
    "https://[2002:7f00:0001::1]/hook",  # 6to4 of 127.0.0.1
    "https://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "https://[64:ff9b::c0a8:0101]/",  # NAT64 of 192.168.1.1
    "https://[64:ff9b:1::a00:1]/",  # local-use NAT64 prefix
    "https://[::ffff:169.254.169.254]/",  # IPv4-mapped
    "https://[::ffff:10.0.0.1]/",
    "https://[::a9fe:a9fe]/",  # IPv4-compatible (deprecated)
    "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
    "https://[2a00:1450:4007::5efe:a9fe:a9fe]/",  # ISATAP interface id embedding 169.254.169.254
    "https://0.0.0.0/",
    "https://0.1.2.3/",
    "https://100.64.0.1/",  # CGNAT (RFC 6598)
    "https://10.0.0.1/",
    "https://172.16.0.1/",
    "https://192.168.1.10/",
    "https://169.254.169.254/latest/meta-data",
    "https://[fe80::1]/",
    "https://[fc00::1]/",
    "https://[::]/",
    "https://224.0.0.1/",
    "https://[ff02::1]/",
    "https://192.0.2.1/",  # documentation (TEST-NET-1)
]


@pytest.mark.parametrize("url", NON_PUBLIC)
def test_non_public_endpoints_are_refused(sub_fhir: Fhir, url: str) -> None:
    response = sub_fhir.request("POST", "/fhir/Subscription", classic(url))
    assert response.status_code == 422, (url, response.get_json())
    issue = response.get_json()["issue"][0]
    assert issue["expression"] == ["Subscription.channel.endpoint"]
    assert "not allowed" in issue["diagnostics"]
    assert sub_fhir.search("Subscription").get("total", 0) == 0


@pytest.mark.parametrize(
    "url",
    [
        "https://[2002:0808:0808::1]/hook",  # 6to4 of a public address
        "https://[64:ff9b::808:808]/hook",  # NAT64 of a public address
        "https://8.8.8.8/hook",
        "https://[2606:4700:4700::1111]/hook",
    ],
)
def test_public_endpoints_are_accepted(sub_fhir: Fhir, url: str) -> None:
    response = sub_fhir.request("POST", "/fhir/Subscription", classic(url))
    assert response.status_code == 201, (url, response.get_json())


def test_embedded_addresses_are_unwrapped() -> None:
    def v4(text: str) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(text)

    assert endpoint.embedded_ipv4(ipaddress.ip_address("2002:a9fe:a9fe::1")) == [v4("169.254.169.254")]
    assert endpoint.embedded_ipv4(ipaddress.ip_address("64:ff9b::a00:1")) == [v4("10.0.0.1")]
    assert endpoint.embedded_ipv4(ipaddress.ip_address("::ffff:127.0.0.1")) == [v4("127.0.0.1")]
    teredo = endpoint.embedded_ipv4(ipaddress.ip_address("2001:0:4136:e378:8000:63bf:3fff:fdd2"))
    assert v4("192.0.2.45") in teredo
    assert endpoint.embedded_ipv4(ipaddress.ip_address("2606:4700:4700::1111")) == []


def test_loopback_allowance_is_explicit(sub_app: Flask, sub_fhir: Fhir, receiver: Receiver) -> None:
    # The development default: loopback (and plain http to it) accepted.
    assert sub_fhir.request("POST", "/fhir/Subscription", classic(receiver.url)).status_code == 201
    sub_app.extensions["subscriptions"].config = replace(FAST, allow_loopback=False)
    for url in (receiver.url, "https://127.0.0.1/hook", "https://[::1]/hook", "https://localhost/hook"):
        response = sub_fhir.request("POST", "/fhir/Subscription", classic(url))
        assert response.status_code == 422, url
        assert "COORDINATION_SUBSCRIPTION_ALLOW_LOOPBACK" in response.get_json()["issue"][0]["diagnostics"]


def test_allowed_networks_are_exempt(sub_app: Flask, sub_fhir: Fhir) -> None:
    sub_app.extensions["subscriptions"].config = replace(FAST, allowed_networks=("10.20.0.0/16",))
    assert (
        sub_fhir.request("POST", "/fhir/Subscription", classic("https://10.20.1.2/hook")).status_code == 201
    )
    assert (
        sub_fhir.request("POST", "/fhir/Subscription", classic("https://10.21.1.2/hook")).status_code == 422
    )


def test_delivery_rechecks_at_connection_time(
    sub_app: Flask, sub_fhir: Fhir, receiver: Receiver, pump: Pump
) -> None:
    """What the name resolves to when the notification leaves decides (DNS may have changed since the
    Subscription was accepted): here the same loopback address, no longer allowed."""
    sub_id = active(sub_fhir, pump, receiver, classic(receiver.url))
    sub_app.extensions["subscriptions"].config = replace(FAST, allow_loopback=False, retry_period=0.0)
    sub_fhir.create(encounter())
    pump(lambda: sub_fhir.request("GET", f"/fhir/Subscription/{sub_id}").get_json()["status"] == "error")
    assert receiver.of_kind("event-notification") == []


# -- the pinned connection (connectors/http.py PinnedAdapter) ----------------------------------------


class _Seen(BaseHTTPRequestHandler):
    hosts: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        _Seen.hosts.append(self.headers.get("Host", ""))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(context: ssl.SSLContext | None = None) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Seen)
    server.daemon_threads = True
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def http_port() -> Iterator[int]:
    _Seen.hosts = []
    yield from _serve()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pin-pki"))


@pytest.fixture
def https_port(pki: Pki) -> Iterator[int]:
    _Seen.hosts = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    yield from _serve(context)


def test_pinned_session_connects_to_the_resolved_address_with_the_name_as_host(http_port: int) -> None:
    asked: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> str:
        asked.append((host, port))
        return "127.0.0.1"

    with pinned_session(resolve) as session:
        response = session.post(f"http://receiver.invalid:{http_port}/hook", data=b"{}", timeout=5)
    assert response.status_code == 204
    assert asked == [("receiver.invalid", http_port)]
    assert _Seen.hosts == [f"receiver.invalid:{http_port}"]


def test_pinned_session_refusal_sends_nothing(http_port: int) -> None:
    def resolve(host: str, port: int) -> str:
        raise endpoint.EndpointError("refused at connection time")

    with pinned_session(resolve) as session, pytest.raises(endpoint.EndpointError):
        session.post(f"http://receiver.invalid:{http_port}/hook", data=b"{}", timeout=5)
    assert _Seen.hosts == []


def test_pinned_tls_verifies_the_name_not_the_address(pki: Pki, https_port: int) -> None:
    """SNI and the certificate check use the URL's name: the certificate names localhost and
    127.0.0.1, so a name it does not carry fails even though the pinned address is 127.0.0.1."""
    with pinned_session(lambda host, port: "127.0.0.1") as session:
        ok = session.post(f"https://localhost:{https_port}/hook", data=b"{}", timeout=5, verify=str(pki.ca))
        assert ok.status_code == 204
        assert _Seen.hosts == [f"localhost:{https_port}"]
        with pytest.raises(requests.exceptions.SSLError):
            session.post(
                f"https://receiver.invalid:{https_port}/hook", data=b"{}", timeout=5, verify=str(pki.ca)
            )


# -- MSSanté mailto: endpoints ------------------------------------------------------------------------


def _email(address: str) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "lettres de sortie",
        "criteria": "DocumentReference?status=current",
        "channel": {"type": "email", "endpoint": f"mailto:{address}", "payload": "application/fhir+json"},
    }


def test_mailto_refused_without_configured_domains(sub_app: Flask, sub_fhir: Fhir) -> None:
    assert SubscriptionSettings().mail_domains == ()
    response = sub_fhir.request("POST", "/fhir/Subscription", _email("dr.house@hopital.mssante.fr"))
    assert response.status_code == 422
    diagnostics = response.get_json()["issue"][0]["diagnostics"]
    assert "COORDINATION_SUBSCRIPTION_MAIL_DOMAINS" in diagnostics and "no MSSanté domain" in diagnostics


def test_mailto_only_to_configured_domains(sub_app: Flask, sub_fhir: Fhir) -> None:
    sub_app.extensions["subscriptions"].config = replace(FAST, mail_domains=("*.mssante.fr", "cpts.example"))
    for good in ("dr.house@hopital.mssante.fr", "secretariat@cpts.example"):
        assert sub_fhir.request("POST", "/fhir/Subscription", _email(good)).status_code == 201, good
    for bad in ("someone@gmail.com", "x@mssante.fr.evil.example", "x@evilmssante.fr", "x@sub.cpts.example"):
        response = sub_fhir.request("POST", "/fhir/Subscription", _email(bad))
        assert response.status_code == 422, bad
        assert "not allowed" in response.get_json()["issue"][0]["diagnostics"]


def test_settings_read_mail_domains(tmp_path: Path) -> None:

    assert Settings.from_env({}).subscriptions.mail_domains == ()
    found = Settings.from_env({"COORDINATION_SUBSCRIPTION_MAIL_DOMAINS": "*.mssante.fr a.example"})
    assert found.subscriptions.mail_domains == ("*.mssante.fr", "a.example")
