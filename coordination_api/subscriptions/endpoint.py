"""Endpoint safety: https required, and no server-side request forgery into private networks.

R4 subscription.html#security: the server must not be usable to probe or attack internal systems.
The host is resolved and every address must be globally routable (``ipaddress`` ``is_global``), and
so must every IPv4 address embedded in an IPv6 one: IPv4-mapped (``::ffff:a.b.c.d``), 6to4
(``2002::/16``, RFC 3056), Teredo (``2001::/32``, RFC 4380), NAT64 (``64:ff9b::/96``, RFC 6052) and
ISATAP interface ids (RFC 5214); ``https://[2002:a9fe:a9fe::1]/`` is 169.254.169.254.

The check runs when the Subscription is written and again at every delivery, on the address the
connection then uses: the worker's session is pinned (connectors/http.py PinnedAdapter) to the
address checked at connection time, so DNS rebinding between check and connect cannot redirect it.

Development allowance, explicit: with ``COORDINATION_SUBSCRIPTION_ALLOW_LOOPBACK`` (true by default
for `make run` and the tests; production sets false) loopback addresses are accepted, and plain
http:// only to them. Networks listed in ``COORDINATION_SUBSCRIPTION_ALLOWED_NETWORKS`` (CIDR) are
exempt. ``mailto:`` endpoints (MSSanté) only to the domains of
``COORDINATION_SUBSCRIPTION_MAIL_DOMAINS``: none by default.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from coordination_api.config import SubscriptionSettings
from coordination_api.errors import Category, FhirError

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
_LOW32 = 0xFFFFFFFF
_ISATAP_IIDS = {0x00005EFE, 0x02005EFE}


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
        if address not in out:
            out.append(address)
    return out


def embedded_ipv4(address: IP) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (and would reach through a relay or translator)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    out: list[ipaddress.IPv4Address] = []
    if address.sixtofour is not None:
        out.append(address.sixtofour)
    if address.teredo is not None:
        out.extend(address.teredo)
    low = ipaddress.IPv4Address(int(address) & _LOW32)
    if address in _NAT64 or (int(address) >> 32) & _LOW32 in _ISATAP_IIDS:
        out.append(low)
    return out


def _public(address: IP) -> bool:
    return bool(
        address.is_global
        and not (
            address.is_private
            or address.is_link_local
            or address.is_multicast
            or address.is_reserved
            or address.is_unspecified
            or address.is_loopback
        )
    )


def refusal(address: IP, config: SubscriptionSettings) -> str | None:
    """Why ``address`` may not receive notifications, or None."""
    if any(address in ipaddress.ip_network(n, strict=False) for n in config.allowed_networks):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        if config.allow_loopback:
            return None
        return (
            f"endpoint resolves to loopback address {address}, which is not allowed "
            "(COORDINATION_SUBSCRIPTION_ALLOW_LOOPBACK is off)"
        )
    embedded = embedded_ipv4(address)
    # NAT64 translates to the embedded IPv4 address: that one decides (the prefix is "reserved").
    if not (isinstance(address, ipaddress.IPv6Address) and address in _NAT64) and not _public(address):
        return f"endpoint resolves to non-public address {address}, which is not allowed"
    for inner in embedded:
        if not _public(inner):
            return (
                f"endpoint resolves to {address}, which embeds the non-public IPv4 address {inner}; "
                "not allowed"
            )
    return None


_MAILBOX = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+)")


def check_mailto(url: str, config: SubscriptionSettings) -> str:
    """The one address of a ``mailto:`` endpoint (RFC 6068), in a configured domain; else EndpointError.
    No domain configured: no e-mail endpoint at all (notifications may carry health data; only the
    MSSanté trust space is acceptable, and the operator names it)."""
    address = url[len("mailto:") :]
    found = _MAILBOX.fullmatch(address)
    if not found:
        raise EndpointError(f"endpoint '{url}' must be mailto: followed by one e-mail address")
    domain = found.group(1).lower()
    allowed = [d.lower() for d in config.mail_domains]
    if not allowed:
        raise EndpointError(
            "e-mail endpoints are not accepted: no MSSanté domain is configured "
            "(COORDINATION_SUBSCRIPTION_MAIL_DOMAINS, e.g. '*.mssante.fr')"
        )
    if not any(domain == d or (d.startswith("*.") and domain.endswith(d[1:])) for d in allowed):
        raise EndpointError(
            f"e-mail domain '{domain}' is not allowed here; allowed "
            f"(COORDINATION_SUBSCRIPTION_MAIL_DOMAINS): {', '.join(allowed)}"
        )
    return address


def _split(url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise EndpointError(f"endpoint '{url}' is not a valid URL") from exc
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise EndpointError(f"endpoint '{url}' must be an absolute https:// URL")
    if parts.username or parts.password:
        raise EndpointError("endpoint must not carry credentials in the URL; use channel.header")
    return parts.scheme, parts.hostname, port


def checked_addresses(host: str, port: int, config: SubscriptionSettings) -> list[IP]:
    """Every address ``host`` resolves to, each allowed; else EndpointError."""
    addresses = _resolve(host, port)
    if not addresses:
        raise EndpointError(f"endpoint host '{host}' has no address")
    for address in addresses:
        reason = refusal(address, config)
        if reason is not None:
            raise EndpointError(reason)
    return addresses


def check(url: str, config: SubscriptionSettings) -> None:
    """Raise EndpointError when ``url`` may not receive notifications."""
    if url.lower().startswith("mailto:"):
        check_mailto(url, config)
        return
    scheme, host, port = _split(url)
    addresses = checked_addresses(host, port, config)
    if scheme == "http" and not (config.allow_loopback and all(a.is_loopback for a in addresses)):
        raise EndpointError(
            "endpoint must use https:// (plain http is allowed for loopback only, under "
            "COORDINATION_SUBSCRIPTION_ALLOW_LOOPBACK)"
        )


def pinned_address(host: str, port: int, config: SubscriptionSettings) -> str:
    """For the delivery session (connectors/http.py PinnedAdapter): resolved at connection time,
    checked, and the address the connection goes to."""
    return str(checked_addresses(host, port, config)[0])


def check_or_422(url: str, config: SubscriptionSettings) -> None:
    try:
        check(url, config)
    except EndpointError as exc:
        raise FhirError(Category.UNPROCESSABLE, str(exc), expression="Subscription.channel.endpoint") from exc
