"""Bad $export input is a 4xx, never a 5xx (review of issue 8, L1: year 9999 in _since and _typeFilter
gave 500 before the date handling of issue 16)."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

H = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def _parameters(parameter: object) -> dict[str, object]:
    return {"resourceType": "Parameters", "parameter": parameter}


CASES = [
    ("GET", "/fhir/$export?_since=9999-12-31T23:59:59Z", None),
    ("GET", "/fhir/$export?_since=0001-01-01T00:00:00Z", None),
    ("GET", "/fhir/$export?_since=2024-13-45T99:99:99Z", None),
    ("GET", "/fhir/$export?_typeFilter=Observation%3Fdate%3Dgt9999-12-31", None),
    ("GET", "/fhir/$export?_typeFilter=Observation%3Fsubject%3APatient.name%3Dx", None),
    ("GET", "/fhir/$export?_typeFilter=Observation%3F_id%3D%00", None),
    ("GET", "/fhir/$export?_type=,,,", None),
    ("GET", "/fhir/Group/%00/$export", None),
    ("GET", "/fhir/Group/" + "a" * 5000 + "/$export", None),
    ("GET", "/fhir/$export-status/" + "a" * 5000, None),
    ("GET", "/fhir/$export-file/abc/" + "%2e%2e%2f" * 5, None),
    ("POST", "/fhir/Patient/$export", {"resourceType": "Parameters", "parameter": ["x"]}),
    (
        "POST",
        "/fhir/Patient/$export",
        {"resourceType": "Parameters", "parameter": [{"name": "patient", "valueReference": "x"}]},
    ),
    (
        "POST",
        "/fhir/Patient/$export",
        {
            "resourceType": "Parameters",
            "parameter": [{"name": "patient", "valueReference": {"reference": 5}}],
        },
    ),
    (
        "POST",
        "/fhir/Patient/$export",
        {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": ["a"]}]},
    ),
    ("POST", "/fhir/Patient/$export", {"resourceType": "Parameters", "parameter": {"name": "x"}}),
    ("POST", "/fhir/Patient/$export", [1, 2]),
    (
        "POST",
        "/fhir/Patient/$export",
        {
            "resourceType": "Parameters",
            "parameter": [{"name": "_since", "valueInstant": "2024-01-01T00:00:00+99:00"}],
        },
    ),
    (
        "POST",
        "/fhir/Patient/$export",
        {"resourceType": "Parameters", "parameter": [{"name": "_since", "valueInteger": 10**30}]},
    ),
]


@pytest.mark.parametrize(("method", "url", "body"), CASES)
def test_bad_export_input_is_never_a_5xx(client: FlaskClient, method: str, url: str, body: object) -> None:
    kw: dict[str, object] = {"headers": {**H, "Content-Type": "application/fhir+json"}}
    if body is not None:
        kw["json"] = body
    r = client.open(url, method=method, **kw)  # type: ignore[arg-type]
    assert r.status_code < 500, (r.status_code, r.get_data(as_text=True)[:400])
    assert r.get_json()["resourceType"] == "OperationOutcome"  # refused (4xx) or accepted (202)
