"""Review rev2: a Task's date-only deadline (restriction.period.end "2026-03-10") on the worklist, in a
CPTS west of UTC (COORDINATION_TIME_ZONE=America/Cayenne, the setting's own example): worklist rows
carry render.instant's midnight UTC, which fr_date then converts to the zone: the day before."""

from __future__ import annotations

from coordination_api.app import create_app
from coordination_api.config import Settings
from coordination_api.pages.render import fr_date, instant


def test_a_date_only_deadline_is_its_own_day_west_of_utc(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url, time_zone="America/Cayenne"))
    try:
        with app.test_request_context("/app/"):
            # pages/worklist._deadline(task) is instant(period.end): a datetime, not the string.
            assert fr_date(instant("2026-03-10")) == "10/03/2026"
    finally:
        app.extensions["coordination"].repo.engine.dispose()
