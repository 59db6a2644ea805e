"""The application's Services (core/services.py), as the HTTP layer finds them."""

from __future__ import annotations

from flask import current_app

from coordination_api.core.services import Services, WriteResult

__all__ = ["Services", "WriteResult", "services"]


def services() -> Services:
    svc: Services = current_app.extensions["coordination"]
    return svc
