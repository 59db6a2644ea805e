"""How pages render: dates as days of the CPTS's time zone (``COORDINATION_TIME_ZONE``), unknown routes
under /app as the pages' 404 page."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flask import Flask

from coordination_api.config import Settings, SettingsError
from coordination_api.pages.render import fr_date


def test_an_instant_is_shown_as_the_day_it_is_in_paris(app: Flask) -> None:
    with app.test_request_context("/app/"):
        assert fr_date("2026-03-09T23:30:00Z") == "10/03/2026"  # 00:30 in Paris (UTC+1)
        assert fr_date("2026-03-10T00:30:00+01:00") == "10/03/2026"
        assert fr_date(datetime(2026, 7, 9, 22, 30, tzinfo=UTC)) == "10/07/2026"  # UTC+2 in summer
        assert fr_date("2026-03-10") == "10/03/2026"  # a FHIR date is shown as written
        assert fr_date("") == "" and fr_date(None) == ""


def test_an_unknown_time_zone_is_refused_at_start() -> None:
    with pytest.raises((SettingsError, ValueError), match="IANA time zone"):
        Settings(time_zone="Mars/Olympus_Mons")


def test_an_unknown_page_route_gets_the_pages_404_page(app: Flask) -> None:
    response = app.test_client().get("/app/nowhere/at-all")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "Introuvable" in response.get_data(as_text=True)
    api = app.test_client().get("/fhir/Nowhere/x/y/z")  # the API keeps its OperationOutcome
    assert api.status_code == 404 and api.get_json()["resourceType"] == "OperationOutcome"
