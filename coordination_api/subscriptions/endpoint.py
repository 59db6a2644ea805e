"""rest-hook endpoint safety: https required, and no server-side request forgery into private networks.

R4 subscription.html#security: the server must not be usable to probe or attack internal systems.
The host is resolved and every address checked; plain http:// and loopback only under
``allow_loopback`` (the `make run` default), other non-global addresses only when allow-listed.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from coordination_api.errors import Category, FhirError
from coordination_api.subscriptions.config import SubscriptionSettings

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class EndpointError(Exception):
    pass


def _resolve(host: str, port: int) -> list[IP]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise EndpointError(f"endpoint host '{host}' cannot be resolved") from exc
    out: list[IP] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        out.append(address)
    return out


_MAILBOX = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+)")


def check_mailto(url: str, config: SubscriptionSettings) -> str:
    """The one address of a ``mailto:`` endpoint (RFC 6068), in an allowed domain; else EndpointError."""
    address = url[len("mailto:") :]
    found = _MAILBOX.fullmatch(address)
    if not found:
        raise EndpointError(f"endpoint '{url}' must be mailto: followed by one e-mail address")
    domain = found.group(1).lower()
    allowed = [d.lower() for d in config.mail_domains]
    if allowed and not any(domain == d or (d.startswith("*.") and domain.endswith(d[1:])) for d in allowed):
        raise EndpointError(f"e-mail domain '{domain}' is not allowed here; allowed: {', '.join(allowed)}")
    return address


def check(url: str, config: SubscriptionSettings) -> None:
    """Raise EndpointError when ``url`` may not receive notifications."""
    if url.lower().startswith("mailto:"):
        check_mailto(url, config)
        return
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise EndpointError(f"endpoint '{url}' is not a valid URL") from exc
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise EndpointError(f"endpoint '{url}' must be an absolute https:// URL")
    if parts.username or parts.password:
        raise EndpointError("endpoint must not carry credentials in the URL; use channel.header")
    addresses = _resolve(parts.hostname, port)
    if not addresses:
        raise EndpointError(f"endpoint host '{parts.hostname}' has no address")
    allowed = [ipaddress.ip_network(n, strict=False) for n in config.allowed_networks]
    loopback = all(a.is_loopback for a in addresses)
    if parts.scheme == "http" and not (config.allow_loopback and loopback):
        raise EndpointError("endpoint must use https:// (plain http is allowed for loopback only)")
    for address in addresses:
        if any(address in network for network in allowed):
            continue
        if address.is_loopback:
            if config.allow_loopback:
                continue
            raise EndpointError(f"endpoint resolves to loopback address {address}, which is not allowed")
        if (
            not address.is_global
            or address.is_private
            or address.is_link_local
            or address.is_multicast
            or address.is_reserved
            or address.is_unspecified
        ):
            raise EndpointError(f"endpoint resolves to non-public address {address}, which is not allowed")


def check_or_422(url: str, config: SubscriptionSettings) -> None:
    try:
        check(url, config)
    except EndpointError as exc:
        raise FhirError(Category.UNPROCESSABLE, str(exc), expression="Subscription.channel.endpoint") from exc
