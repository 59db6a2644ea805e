"""``GET /app/``: the coordinator's and the professionals' worklist (issue 22)."""

from __future__ import annotations

from flask import Response

from coordination_api.pages.blueprint import bp
from coordination_api.pages.render import show


@bp.get("/")
def worklist() -> Response:
    return show("pages_worklist.html", discharges=[], offers=[], mine=[])
