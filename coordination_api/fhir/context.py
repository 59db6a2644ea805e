"""The objects every interaction works with, built once per application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app

from coordination_api.config import Settings
from coordination_api.search.compiler import SearchCompiler
from coordination_api.storage.repository import Repository, Stored


@dataclass(frozen=True)
class Services:
    settings: Settings
    repo: Repository
    compiler: SearchCompiler


def services() -> Services:
    svc: Services = current_app.extensions["coordination"]
    return svc


@dataclass
class WriteResult:
    """What a write interaction did, for the HTTP layer or a transaction-response entry."""

    status: int
    stored: Stored | None = None
    outcome: dict[str, Any] | None = None

    def location(self, base: str) -> str | None:
        if self.stored is None:
            return None
        s = self.stored
        return f"{base}/{s.res_type}/{s.res_id}/_history/{s.version}"
