"""What each outside-service connector is here (issue 19, "connectors say what they are"): ``active``
(configured, with its target host), ``off`` (not configured: its features refuse, never pretend) or
``misconfigured`` (configured in a way that cannot work, or half configured).

Read from the settings only (no network, and nothing of the connectors' application side imported:
``/readyz`` reads it): logged at start-up by ``coordination serve`` and ``coordination worker``,
detailed by ``/readyz``. ``coordination connectors check`` (integrations/checks.py) then makes one
cheap real call to each configured connector.

Rules (docs/operations.md "Connectors"): a URL must be ``https`` (plain ``http`` only to a loopback
host: local development and tests); every certificate, key and CA file named must exist and be readable;
a key needs its certificate; a connector's required companions must be set (MSSanté: the sender
address; Pro Santé Connect: client id and secret; off loopback, the client certificate of the mutual-TLS
services and the directory's API key, and the DMP's own source OID); a companion set while the main
setting is empty is a forgotten setting (misconfigured, and the connector is off).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from coordination_api.config import PREFIX, DmpSettings, Settings

log = logging.getLogger("coordination_api.connectors")
ACTIVE, OFF, MISCONFIGURED = "active", "off", "misconfigured"
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_PLACEHOLDER_OID = DmpSettings().source_oid


@dataclass(frozen=True)
class ConnectorState:
    name: str  # dmp, eparcours, mssante, annuaire, psc (the keys of /readyz "connectors")
    label: str
    main: str  # the setting that turns it on
    configured: bool  # the main setting is set: the real connector is built
    target: str = ""  # host[:port], never credentials
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def state(self) -> str:
        if self.problems:
            return MISCONFIGURED
        return ACTIVE if self.configured else OFF

    def line(self) -> str:
        """One log line: never a credential (hosts, setting names and file paths only)."""
        head = f"connector {self.name} ({self.label}): {self.state}"
        if self.state == ACTIVE:
            return f"{head} -> {self.target}"
        if self.state == OFF:
            return f"{head} (not configured: {self.main} is empty)"
        where = f" -> {self.target}" if self.target else ""
        return f"{head}{where}: {'; '.join(self.problems)}"


def is_loopback(host: str) -> bool:
    """Without DNS: ``localhost`` or a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Findings:
    def __init__(self, prefix: str) -> None:
        self.prefix = PREFIX + prefix
        self.problems: list[str] = []
        self.loopback = False
        self.target = ""

    def var(self, name: str) -> str:
        return self.prefix + name

    def url(self, name: str, value: str) -> None:
        parts = urlsplit(value)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            self.problems.append(f"{self.var(name)} is not an http(s) URL")
            return
        try:
            port = parts.port
        except ValueError:
            self.problems.append(f"{self.var(name)} has an invalid port")
            return
        self.loopback = is_loopback(host)
        self.target = f"{host}:{port}" if port else host
        if parts.scheme != "https" and not self.loopback:
            self.problems.append(f"{self.var(name)} is not https (plain http only to a loopback host)")

    def host(self, name: str, value: str, port: int) -> None:
        self.loopback = is_loopback(value)
        self.target = f"{value}:{port}"
        if not 0 < port < 65536:
            self.problems.append(f"{PREFIX}MSSANTE_SMTP_PORT {port} is not a port")

    def file(self, name: str, path: str) -> None:
        if not path:
            return
        if not os.path.isfile(path):
            self.problems.append(f"{self.var(name)} {path} does not exist")
        elif not os.access(path, os.R_OK):
            self.problems.append(f"{self.var(name)} {path} is not readable")

    def required(self, name: str, value: object, why: str) -> None:
        if not value:
            self.problems.append(f"{self.var(name)} is required ({why})")

    def tls_files(self, cert: str, key: str, ca_file: str) -> None:
        """``CLIENT_CERT``, ``CLIENT_KEY``, ``CA_FILE``: readable files, and no key without its cert."""
        for name, path in (("CLIENT_CERT", cert), ("CLIENT_KEY", key), ("CA_FILE", ca_file)):
            self.file(name, path)
        if key and not cert:
            self.problems.append(f"{self.var('CLIENT_KEY')} without {self.var('CLIENT_CERT')}")

    def forgotten(self, main: str, companions: Mapping[str, object]) -> None:
        """Companions set while the main setting is empty: the connector is off, surely by mistake."""
        named = [self.var(n) for n, v in companions.items() if v]
        if named:
            self.problems.append(
                f"{', '.join(named)} set but {self.var(main)} is empty: the connector is off"
            )


def _dmp(settings: Settings) -> ConnectorState:
    c, f = settings.dmp, _Findings("DMP_")
    if c.recipient_url:
        f.url("RECIPIENT_URL", c.recipient_url)
        f.tls_files(c.client_cert, c.client_key, c.ca_file)
        if not _OID.fullmatch(c.source_oid):
            f.problems.append(f"{f.var('SOURCE_OID')} is not an OID")
        elif c.source_oid == _PLACEHOLDER_OID and not f.loopback:
            f.problems.append(
                f"{f.var('SOURCE_OID')} is the placeholder {_PLACEHOLDER_OID}: set this system's OID"
            )
    forgotten = {"CLIENT_CERT": c.client_cert, "CLIENT_KEY": c.client_key, "CA_FILE": c.ca_file}
    return _state("dmp", "DMP (PDSm, IHE MHD ITI-65)", f, "RECIPIENT_URL", c.recipient_url, forgotten)


def _eparcours(settings: Settings) -> ConnectorState:
    c, f = settings.eparcours, _Findings("EPARCOURS_")
    if c.url:
        f.url("URL", c.url)
        f.tls_files(c.client_cert, c.client_key, c.ca_file)
        if not f.loopback:
            f.required("CLIENT_CERT", c.client_cert, "the platform takes mutual TLS only")
    forgotten = {
        "CLIENT_CERT": c.client_cert,
        "CLIENT_KEY": c.client_key,
        "CA_FILE": c.ca_file,
        "SENDER": c.sender,
    }
    return _state("eparcours", "e-parcours platform", f, "URL", c.url, forgotten)


def _mssante(settings: Settings) -> ConnectorState:
    c, f = settings.mssante, _Findings("MSSANTE_")
    if c.smtp_host:
        f.host("SMTP_HOST", c.smtp_host, c.smtp_port)
        f.tls_files(c.client_cert, c.client_key, c.ca_file)
        f.required("FROM", c.from_address, "the CPTS's MSSanté address, the mails' sender")
        if c.from_address and "@" not in c.from_address:
            f.problems.append(f"{f.var('FROM')} is not a mail address")
        if c.username and not c.password:
            f.problems.append(f"{f.var('SMTP_USERNAME')} without {f.var('SMTP_PASSWORD')}")
        if not f.loopback:
            f.required("CLIENT_CERT", c.client_cert, "MSSanté operators authenticate the sending system")
    forgotten = {"FROM": c.from_address, "CLIENT_CERT": c.client_cert, "SMTP_USERNAME": c.username}
    return _state("mssante", "MSSanté", f, "SMTP_HOST", c.smtp_host, forgotten)


def _annuaire(settings: Settings) -> ConnectorState:
    c, f = settings.annuaire, _Findings("ANNUAIRE_")
    if c.base_url:
        f.url("BASE_URL", c.base_url)
        f.file("CA_BUNDLE", c.ca_bundle)
        if not f.loopback:
            f.required("API_KEY", c.api_key, "the ANS gateway wants its ESANTE-API-KEY")
    forgotten = {"API_KEY": c.api_key, "CA_BUNDLE": c.ca_bundle}
    return _state("annuaire", "Annuaire Santé directory", f, "BASE_URL", c.base_url, forgotten)


def _psc(settings: Settings) -> ConnectorState:
    c, f = settings.psc, _Findings("PSC_")
    if c.discovery_url:
        f.url("DISCOVERY_URL", c.discovery_url)
        f.file("CA_FILE", c.ca_file)
        f.required("CLIENT_ID", c.client_id, "registered with Pro Santé Connect")
        f.required("CLIENT_SECRET", c.client_secret, "client_secret_basic at the token endpoint")
        if c.redirect_uri:
            host = urlsplit(c.redirect_uri).hostname or ""
            if not c.redirect_uri.startswith("https://") and not is_loopback(host):
                f.problems.append(f"{f.var('REDIRECT_URI')} is not https")
    forgotten = {"CLIENT_ID": c.client_id, "CLIENT_SECRET": c.client_secret}
    return _state("psc", "Pro Santé Connect", f, "DISCOVERY_URL", c.discovery_url, forgotten)


def _state(
    name: str, label: str, f: _Findings, main: str, value: str, companions: Mapping[str, object]
) -> ConnectorState:
    """On when the main setting ``value`` is set (``f`` holds its checks); off otherwise, and then
    companions set anyway are forgotten settings."""
    if not value:
        f.forgotten(main, companions)
    return ConnectorState(name, label, f.var(main), bool(value), f.target, tuple(f.problems))


def describe(settings: Settings) -> list[ConnectorState]:
    """Every connector, in a fixed order."""
    return [_dmp(settings), _eparcours(settings), _mssante(settings), _annuaire(settings), _psc(settings)]


def log_states(settings: Settings) -> list[ConnectorState]:
    """One line per connector: active and off at INFO, misconfigured at WARNING."""
    states = describe(settings)
    for s in states:
        log.log(logging.WARNING if s.state == MISCONFIGURED else logging.INFO, "%s", s.line())
    return states
