"""An access that cannot be audited is refused (503 with Retry-After), rendered by the one error
translator: an OperationOutcome on the API, the error page on the coordinators' pages (review 22 noted
the after-request hook built its own JSON, also for the pages)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from tests.conftest import Fhir
from tests.support.pages import build_cpts, sign_in


@contextmanager
def audit_table_away(app: Flask) -> Iterator[None]:
    """The audit trail's table is unreachable (renamed) while the block runs: its inserts fail."""
    engine = app.extensions["coordination"].repo.engine
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_event RENAME TO audit_event_away"))
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_event_away RENAME TO audit_event"))


def test_an_unaudited_access_is_a_503_outcome_on_the_api_and_a_page_on_app(
    app: Flask, client: FlaskClient, fhir: Fhir
) -> None:
    build_cpts(app, fhir)
    coordinator = sign_in(app, "coord")
    assert coordinator.get("/app/").status_code == 200  # positive control: audited, answered
    with audit_table_away(app):
        api = client.get("/fhir/Patient?_count=1")
        page = coordinator.get("/app/")
    assert api.status_code == 503 and api.headers["Retry-After"]
    assert api.get_json()["issue"][0]["code"] == "transient"
    assert page.status_code == 503 and page.mimetype == "text/html" and page.headers["Retry-After"]
    assert "could not be audited" in page.get_data(as_text=True)
