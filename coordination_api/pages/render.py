"""Pages as responses: the template with its CSP, and the small formatting helpers templates share."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from typing import Any
from zoneinfo import ZoneInfo

from flask import Response, current_app

from auth.browser import csrf_token, page
from coordination_api.config import Settings
from coordination_api.pages.blueprint import bp, current_user
from coordination_api.security import human_name


def show(template: str, status: int = 200, **context: Any) -> Response:
    """``template`` (extending pages_base.html) with the CSRF token and the signed-in user's name."""
    user = current_user()
    return page(template, status, assets=True, csrf_token=csrf_token(), username=user.username, **context)


def instant(text: Any) -> datetime | None:
    """A FHIR date, dateTime or instant as an aware datetime (a date: its midnight UTC), else None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        if len(text) <= 10:
            parts = [int(p) for p in text.split("-")] + [1, 1]
            return datetime(parts[0], parts[1], parts[2], tzinfo=UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@bp.app_template_filter("fr_date")
def fr_date(value: Any) -> str:
    """dd/mm/yyyy, the way French forms write a date ("" when unknown); an instant as the day it is
    in the CPTS's time zone (``COORDINATION_TIME_ZONE``): a deadline of 00:30 Paris time is that
    day, not the day before in UTC. A FHIR date (no time) is shown as written."""
    moment = value if isinstance(value, datetime | date) else instant(value)
    if isinstance(moment, datetime) and moment.tzinfo is not None and not _a_day(moment):
        moment = moment.astimezone(_zone())
    return moment.strftime("%d/%m/%Y") if moment is not None else ""


def _a_day(moment: datetime) -> bool:
    """Midnight UTC: how a FHIR date (a day, no time) reads once parsed (``instant``, the index's low
    bound), shown as written whatever the zone (in Cayenne it would be the evening before)."""
    return moment.utcoffset() == timedelta(0) and moment.time() == time_of_day()


def _zone() -> ZoneInfo:
    settings: Settings = current_app.extensions["coordination"].settings
    return ZoneInfo(settings.time_zone)


def age(birth_date: Any, today: date) -> int | None:
    born = instant(birth_date)
    if born is None:
        return None
    years = today.year - born.year
    return years - 1 if (today.month, today.day) < (born.month, born.day) else years


def name_of(resource: dict[str, Any] | None) -> str | None:
    """A Patient's or a Practitioner's name on one line (``security.human_name``)."""
    return human_name((resource or {}).get("name"))
