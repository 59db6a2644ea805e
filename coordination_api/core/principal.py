"""Who acts: the Principal, explicit, and the SMART scope rule on it.

The web layer authenticates a request and ``enter``s its Principal; the domain code a request runs
(an NdE intake, dispatch's take of a Task, a Subscription's owner) reads it with ``authenticated``.
Outside a request (CLI, workers) there is none. A ContextVar, never ``flask.g``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from auth.policy import Principal
from auth.scopes import ScopeSet
from coordination_api.errors import Category, FhirError

# The server acting for itself: the operator's commands, the intake doors that authorise on their own.
UNRESTRICTED = Principal(client_id=None, scopes=ScopeSet((), frozenset()), unrestricted=True)

_authenticated: ContextVar[Principal | None] = ContextVar("coordination_principal", default=None)


def authenticated() -> Principal | None:
    """The caller the web layer authenticated for the current request (None outside one)."""
    return _authenticated.get()


def enter(principal: Principal | None) -> None:
    """Set by the web layer once a request's caller is known; ``leave`` at the request's end."""
    _authenticated.set(principal)


def leave() -> None:
    _authenticated.set(None)


@contextmanager
def acting_as(principal: Principal | None) -> Iterator[None]:
    """``principal`` is the authenticated caller for the duration of the block."""
    token = _authenticated.set(principal)
    try:
        yield
    finally:
        _authenticated.reset(token)


def require(who: Principal, resource_type: str, permission: str) -> None:
    """SMART scopes: may ``who`` do ``permission`` (c r u d s) on ``resource_type``? (403 if not)."""
    if who.unrestricted:
        return
    if resource_type == "AuditEvent":
        # The audit trail needs a scope naming it: a wildcard such as system/*.rs does not open it.
        if not who.scopes.explicitly_allows("AuditEvent", permission):
            raise FhirError(Category.FORBIDDEN, "Reading the audit trail needs an AuditEvent scope")
        return
    contexts = ("user", "patient") if who.is_user else ("system",)
    if not who.scopes.allows(resource_type, permission, contexts):
        raise FhirError(
            Category.FORBIDDEN,
            f"The access token's scopes do not allow '{permission}' on {resource_type}",
        )
