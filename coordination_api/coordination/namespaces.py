"""The server's reserved identifier namespaces (``urn:coordination:``), guarded at every write.

Intake matches patients and stays by identifiers it mints per sender (connectors/events.py:
``urn:coordination:hl7v2:<sender>:<namespace>``, ``urn:coordination:visit-number:<sender>``); the
directory sync keys roles and services by ``urn:coordination:annuaire-sante:<type>``. A write that added
one of them to a resource it may write would have that sender's next message (or the next sync) filed
on it: a client with write reach on patient X adds hospital B's IPP to X and receives B's next ADT.
So only the owner adds such an identifier (the intake of that sender, the directory sync, the operator's
``coordination import``, each inside ``writing_as``); any other write may keep one already on the
current version (same system and value) or remove it, and adding one is refused (422).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import unquote

from sqlalchemy.engine import Connection

from connectors import events
from coordination_api.errors import Category, FhirError
from coordination_api.storage.repository import Repository

Owner = Callable[[str], bool]  # the reserved systems the current writer may add

_owner: ContextVar[Owner | None] = ContextVar("coordination_namespace_owner", default=None)


@contextmanager
def writing_as(owns: Owner) -> Iterator[None]:
    """The writes of the block may add identifiers of the reserved systems ``owns`` accepts."""
    token = _owner.set(owns)
    try:
        yield
    finally:
        _owner.reset(token)


def intake_for(sender: str) -> Owner:
    """The intake of ``sender``: its own namespaces (events.scoped_system, events.visit_system)."""
    return lambda system: not events.foreign_namespace(system, sender)


def operator(_system: str) -> bool:
    """The operator's own commands (``coordination import`` of an export): every namespace."""
    return True


def reserved(system: str) -> bool:
    """R4 Identifier.system in this server's space (case-insensitive, as events.foreign_namespace)."""
    return system[: len(events.RESERVED_NAMESPACE)].lower() == events.RESERVED_NAMESPACE


def guard(repo: Repository) -> Callable[[Connection, str, str | None, dict[str, Any]], dict[str, Any]]:
    """The repository ``prepare`` hook: refuse a reserved identifier the writer does not own and the
    current version does not carry (422); ``body`` is returned unchanged."""

    def prepare(conn: Connection, res_type: str, res_id: str | None, body: dict[str, Any]) -> dict[str, Any]:
        found = list(_reserved_identifiers(res_type, body))
        if not found:
            return body
        owns = _owner.get()
        found = [f for f in found if owns is None or not owns(f[1])]
        if not found:
            return body
        known: set[tuple[Any, Any]] = set()
        current = repo.current(conn, res_type, res_id) if res_id is not None else None
        if current is not None:
            known = {(s, v) for _where, s, v in _reserved_identifiers(res_type, current.json())}
        for where, system, value in found:
            if (system, value) not in known:
                raise FhirError(
                    Category.UNPROCESSABLE,
                    f"{where}: {system[:120]!r} is a namespace of this server reserved for "
                    f"{_owner_name(system)}; it cannot be added by this write",
                    expression=where,
                )
        return body

    return prepare


def _reserved_identifiers(res_type: str, body: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(element path, system, value) of each top-level identifier in the reserved space: the element
    the ``identifier`` search parameter reads, by which intake and the directory sync match."""
    identifiers = body.get("identifier")
    if isinstance(identifiers, dict):  # 0..1 in some types (e.g. Bundle, QuestionnaireResponse)
        items = [(f"{res_type}.identifier", identifiers)]
    elif isinstance(identifiers, list):
        items = [(f"{res_type}.identifier[{i}]", x) for i, x in enumerate(identifiers)]
    else:
        return
    for where, identifier in items:
        system = identifier.get("system") if isinstance(identifier, dict) else None
        if isinstance(system, str) and reserved(system):
            yield f"{where}.system", system, identifier.get("value")


def _owner_name(system: str) -> str:
    """Whose namespace ``system`` is, for the refusal."""
    rest = system[len(events.RESERVED_NAMESPACE) :]
    for kind in ("hl7v2:", "visit-number:"):
        if rest.lower().startswith(kind):
            sender = unquote(rest[len(kind) :].split(":")[0])
            return f"the messages of sender {sender[:120]!r} (intake)"
    return "the server's own use"
