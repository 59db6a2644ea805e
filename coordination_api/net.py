"""Network address helpers shared by the CLI and the MLLP listener."""

from __future__ import annotations

import ipaddress
import socket


def is_loopback(host: str) -> bool:
    """``host`` (an address or a name, resolved) reaches this machine only; empty is not loopback."""
    if host in {"localhost", ""}:
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            addresses = socket.getaddrinfo(host, None)
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in addresses)
        except OSError:
            return False
