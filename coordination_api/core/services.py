"""The objects every write works with, built once per application by create_app: settings, the
repository, the search compiler, the access rule on what a write reads, and the write hooks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.engine import Connection

from auth.policy import Principal
from coordination_api.config import Settings
from coordination_api.search.compiler import HopGuard, SearchCompiler, SearchQuery
from coordination_api.storage.repository import Repository, Stored
from coordination_api.storage.stats import TableStats


def _sees_all(_query: SearchQuery) -> None:
    return None


def _no_hop_rule(_resource_type: str, _pk: ColumnElement[Any]) -> list[ColumnElement[bool]]:
    return []


def _reaches_all(_conn: Connection, _stored: Stored) -> None:
    return None


@dataclass(frozen=True)
class Access:
    """The care-team rule on what a write reads before writing (conditional matches, the resource a
    conditional create returns), as the caller's layer enforces it: create_app gives the web layer's
    (per request); ``OPEN`` sees everything, as the operator's commands and workers do. What is
    written is judged by the repository's guard hook, inside the transaction."""

    secure: Callable[[SearchQuery], None] = _sees_all
    hop_guard: HopGuard = _no_hop_rule
    check_stored: Callable[[Connection, Stored], None] = _reaches_all


OPEN = Access()


@dataclass
class PendingCreate:
    """A client's create as the create hooks see it, in its transaction: they may change the body
    and, on a POST, the conditional-create criteria before the write. ``res_id`` is the id a PUT
    names (update-as-create, a transaction PUT entry); None on a POST, whose id the server assigns."""

    resource_type: str
    body: dict[str, Any]
    if_none_exist: str | None
    principal: Principal
    res_id: str | None = None


@dataclass
class PendingUpdate:
    """A client's update of an existing resource as the update hooks see it, in its transaction:
    they may change the body before the write; ``current`` is the version it replaces."""

    resource_type: str
    res_id: str
    body: dict[str, Any]
    current: Stored
    principal: Principal


# (conn, svc, pending): runs inside the write's transaction, before the resource is written. Every
# door of a client's write runs them: POST, PUT, conditional PUT, transaction and batch entries.
CreateHook = Callable[[Connection, "Services", PendingCreate], None]
UpdateHook = Callable[[Connection, "Services", PendingUpdate], None]
# (conn, svc, resource_type, number): an intake created a Practitioner (RPPS) or an Organization
# (FINESS) this server did not know; e.g. the directory completes it later.
PartyHook = Callable[[Connection, "Services", str, str], None]


@dataclass
class Hooks:
    """What create_app registers; core runs them and never imports the modules behind them."""

    before_create: list[CreateHook] = field(default_factory=list)
    before_update: list[UpdateHook] = field(default_factory=list)
    new_party: list[PartyHook] = field(default_factory=list)


@dataclass(frozen=True)
class Services:
    settings: Settings
    repo: Repository
    compiler: SearchCompiler
    # Not part of the identity (hash, equality) callers cache on: settings, repository, compiler.
    access: Access = field(default=OPEN, compare=False)
    hooks: Hooks = field(default_factory=Hooks, compare=False)
    # The planner statistics of the tables writes grow (storage/stats.py); None: left to autovacuum.
    stats: TableStats | None = field(default=None, compare=False)


@dataclass
class WriteResult:
    """What a write did, for the HTTP layer or a transaction-response entry."""

    status: int
    stored: Stored | None = None
    outcome: dict[str, Any] | None = None

    def location(self, base: str) -> str | None:
        if self.stored is None:
            return None
        s = self.stored
        return f"{base}/{s.res_type}/{s.res_id}/_history/{s.version}"
