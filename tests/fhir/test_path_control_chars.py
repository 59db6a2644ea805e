"""Control characters in a URL's path segments are a 400 on every FHIR route, never a database error
(PostgreSQL refuses NUL in text: the read of `Patient/%00` was a 500)."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

PATHS = [
    "/fhir/Patient/{x}",
    "/fhir/Patient/{x}/_history",
    "/fhir/Patient/{x}/_history/1",
    "/fhir/Patient/1/_history/{x}",
    "/fhir/Patient/{x}/$everything",
    "/fhir/Group/{x}/$export",
    "/fhir/Subscription/{x}/$status",
    "/fhir/Subscription/{x}/$events",
    "/fhir/DocumentReference/{x}/$dmp-push",
    "/fhir/AuditEvent/{x}",
    "/fhir/$export-status/{x}",
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bad", ["%00", "a%00b", "%1B", "%7F"])
def test_control_characters_in_the_path_are_a_4xx(client: FlaskClient, path: str, bad: str) -> None:
    url = path.format(x=bad)
    for method in ("GET", "PUT", "DELETE", "POST"):
        response = client.open(
            url, method=method, json={"resourceType": "Patient"}, headers={"Prefer": "respond-async"}
        )
        assert 400 <= response.status_code < 500, (method, url, response.status_code)
        assert response.get_json()["resourceType"] == "OperationOutcome"
