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


MAIL_ORIGIN = "mailto:"  # every mailto: endpoint goes through the one SMTP relay: one origin
_IPV4_SHORTHAND = re.compile(r"(0[xX][0-9a-fA-F]*|[0-9]+)(\.(0[xX][0-9a-fA-F]*|[0-9]+)){0,3}")


def _canonical(address: IP) -> str:
    return f"[{address.compressed}]" if isinstance(address, ipaddress.IPv6Address) else str(address)


def _literal(host: str) -> IP | None:
    """``host`` as an IP address when it is one in any spelling a resolver accepts: IPv6 (any
    compression, IPv4-mapped), dotted IPv4 and its inet_aton shorthands (``127.1``, ``0x7f.1``,
    ``2130706433``)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if not _IPV4_SHORTHAND.fullmatch(host):
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


ORIGIN_LENGTH = 300  # subscription_state.origin; longer keys (only of refused or "off" endpoints) are cut


def origin_key(url: str, addresses: list[IP] | None = None) -> str:
    """The key the sending pool caps per origin (subscriptions/sending.py), one per endpoint however
    it is spelled (review 20 F4, F6): ``host:port`` with the scheme and host case ignored (RFC 3986
    3.1, 3.2.2), IDNA, the trailing dot stripped, the default port written out, an IP literal in its
    canonical form; with ``addresses`` (the host resolved), the lowest of them, so that two names of one
    host share the key. The scheme is left out: ``http://h:443`` and ``https://h`` are one listener."""
    return _origin_key(url, addresses)[:ORIGIN_LENGTH]


def _origin_key(url: str, addresses: list[IP] | None) -> str:
    if url[: len(MAIL_ORIGIN)].lower() == MAIL_ORIGIN:
        return MAIL_ORIGIN
    try:
        parts = urlsplit(url.strip())
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        return url.strip().lower()
    host = (parts.hostname or "").rstrip(".")
    if not parts.scheme or not host:
        return url.strip().lower()
    if addresses:
        return f"{_canonical(min(addresses, key=lambda a: (a.version, int(a))))}:{port}"
    literal = _literal(host)
    if literal is not None:
        return f"{_canonical(literal)}:{port}"
    try:
        host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        host = host.lower()
    return f"{host}:{port}"


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


def check(url: str, config: SubscriptionSettings) -> str:
    """Raise EndpointError when ``url`` may not receive notifications; else its origin key (by the
    addresses it resolves to now)."""
    if url.lower().startswith("mailto:"):
        check_mailto(url, config)
        return MAIL_ORIGIN
    scheme, host, port = _split(url)
    addresses = checked_addresses(host, port, config)
    if scheme == "http" and not (config.allow_loopback and all(a.is_loopback for a in addresses)):
        raise EndpointError(
            "endpoint must use https:// (plain http is allowed for loopback only, under "
            "COORDINATION_SUBSCRIPTION_ALLOW_LOOPBACK)"
        )
    return origin_key(url, addresses)


def pinned_address(host: str, port: int, config: SubscriptionSettings) -> str:
    """For the delivery session (connectors/http.py PinnedAdapter): resolved at connection time,
    checked, and the address the connection goes to."""
    return str(checked_addresses(host, port, config)[0])


def check_or_422(url: str, config: SubscriptionSettings) -> str:
    """``check`` as a 422; the endpoint's origin key."""
    try:
        return check(url, config)
    except EndpointError as exc:
        raise FhirError(Category.UNPROCESSABLE, str(exc), expression="Subscription.channel.endpoint") from exc
