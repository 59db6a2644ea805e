"""The professional PSC vouches for: ``SubjectNameID`` = idNatPs = "8" + RPPS (ANS PSC interface)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from connectors.psc.errors import refused

_IDNATPS = re.compile(r"8([0-9]{11})")


@dataclass(frozen=True)
class PscIdentity:
    rpps: str
    given: str | None = None
    family: str | None = None


def identity(info: dict[str, Any]) -> PscIdentity:
    """The professional named by the ID token's claims merged with the UserInfo answer."""
    found = _IDNATPS.fullmatch(str(info.get("SubjectNameID") or ""))
    if found is None:
        raise refused("the professional's SubjectNameID is not an idNatPs of an RPPS (8 + 11 digits)")
    return PscIdentity(
        rpps=found.group(1),
        given=str(info["given_name"]) if info.get("given_name") else None,
        family=str(info["family_name"]) if info.get("family_name") else None,
    )
