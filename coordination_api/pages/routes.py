"""Registers the pages: every module with routes on ``bp`` is imported here."""

from __future__ import annotations

from flask import Flask

from coordination_api.pages import blueprint, patient, worklist

__all__ = ["patient", "register", "worklist"]


def register(app: Flask) -> None:
    blueprint.init_app(app)
