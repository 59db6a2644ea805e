"""SMART App Launch 2 scopes (scopes-and-launch-context.html): parse, compare, check.

``patient/Observation.rs``, ``user/*.cruds``, ``system/Patient.read`` (v1 alias of ``.rs``),
``.write`` (``.cud``) and ``.*`` (``.cruds``). Finer-grained scopes with search parameters
(``?category=…``) are not supported and never granted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_PATTERN = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]{1,63})\.(\*|read|write|c?r?u?d?s?)$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
# Scopes that are not resource scopes but that we understand.
OTHER_SCOPES = frozenset(
    {"openid", "fhirUser", "profile", "launch", "launch/patient", "offline_access", "online_access"}
)
CONTEXTS = ("patient", "user", "system")


@dataclass(frozen=True)
class ResourceScope:
    context: str  # patient | user | system
    resource_type: str  # a type or "*"
    permissions: frozenset[str]  # subset of c r u d s

    def covers(self, other: ResourceScope) -> bool:
        """True when every access ``other`` allows is also allowed by this scope."""
        return (
            self.context == other.context
            and self.resource_type in {"*", other.resource_type}
            and other.permissions <= self.permissions
        )

    def allows(self, resource_type: str, permission: str) -> bool:
        return self.resource_type in {"*", resource_type} and permission in self.permissions

    def __str__(self) -> str:
        perms = "".join(p for p in "cruds" if p in self.permissions)
        return f"{self.context}/{self.resource_type}.{perms}"


def parse_resource_scope(text: str) -> ResourceScope | None:
    match = _PATTERN.match(text)
    if match is None:
        return None
    context, resource_type, perms = match.groups()
    perms = _V1.get(perms, perms)
    if not perms:
        return None
    return ResourceScope(context, resource_type, frozenset(perms))


def split(scope: str | None) -> list[str]:
    return [s for s in (scope or "").split() if s]


def is_known(scope: str) -> bool:
    return scope in OTHER_SCOPES or parse_resource_scope(scope) is not None


def granted(requested: Iterable[str], allowed: Iterable[str]) -> list[str]:
    """The requested scopes that the client's registered scopes cover (RFC 6749 3.3: may be fewer)."""
    allowed_list = list(allowed)
    allowed_resource = [s for s in (parse_resource_scope(a) for a in allowed_list) if s is not None]
    out: list[str] = []
    for scope in requested:
        wanted = parse_resource_scope(scope)
        if wanted is None:
            if scope in OTHER_SCOPES and scope in allowed_list:
                out.append(scope)
        elif any(a.covers(wanted) for a in allowed_resource):
            out.append(scope)
    return list(dict.fromkeys(out))


# Why a requested scope is not granted on a user launch (shown on the consent page).
UNKNOWN = "unknown"  # not a scope this server knows
NOT_REGISTERED = "not-registered"  # the client is not registered for it
NEEDS_PATIENT = "needs-patient"  # patient/ scope without launch/patient
SYSTEM_ONLY = "system-only"  # system/ scopes are for SMART Backend Services only
IDENTITY_SCOPES = ("openid", "fhirUser")


@dataclass(frozen=True)
class Decision:
    """What a user launch (authorization code) grants of the requested scopes, and why the rest is not."""

    granted: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]  # (scope, reason)

    def refused_names(self) -> list[str]:
        return [s for s, _reason in self.refused]


def decide_user_launch(requested: Iterable[str], registered: Iterable[str]) -> Decision:
    """The rule of docs/integration.md section 1 (RFC 6749 3.3: the server may grant fewer scopes
    than asked and then lists what it granted). ``patient/`` scopes are about the patient in context
    (SMART App Launch 2, scopes-and-launch-context), which a standalone launch gets only with
    ``launch/patient``; ``system/`` scopes are for Backend Services, never on a user's behalf."""
    names = list(dict.fromkeys(requested))
    allowed = set(granted(names, registered))
    with_patient = "launch/patient" in allowed
    kept: list[str] = []
    refused: list[tuple[str, str]] = []
    for name in names:
        parsed = parse_resource_scope(name)
        if not is_known(name):
            refused.append((name, UNKNOWN))
        elif parsed is not None and parsed.context == "system":
            refused.append((name, SYSTEM_ONLY))
        elif name not in allowed:
            refused.append((name, NOT_REGISTERED))
        elif parsed is not None and parsed.context == "patient" and not with_patient:
            refused.append((name, NEEDS_PATIENT))
        else:
            kept.append(name)
    return Decision(tuple(kept), tuple(refused))


@dataclass(frozen=True)
class ScopeSet:
    """The resource scopes of one token, for per-interaction checks."""

    scopes: tuple[ResourceScope, ...]
    raw: frozenset[str]

    @classmethod
    def parse(cls, scope: str | None) -> ScopeSet:
        names = split(scope)
        parsed = tuple(s for s in (parse_resource_scope(n) for n in names) if s is not None)
        return cls(parsed, frozenset(names))

    def allows(self, resource_type: str, permission: str, contexts: Iterable[str] = CONTEXTS) -> bool:
        wanted = set(contexts)
        return any(s.context in wanted and s.allows(resource_type, permission) for s in self.scopes)

    def explicitly_allows(self, resource_type: str, permission: str) -> bool:
        """Access granted by a scope naming this type (a wildcard is not enough, e.g. for AuditEvent)."""
        return any(s.resource_type == resource_type and permission in s.permissions for s in self.scopes)

    def contexts(self) -> set[str]:
        return {s.context for s in self.scopes}

    def has(self, name: str) -> bool:
        return name in self.raw
