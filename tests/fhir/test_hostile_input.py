"""Bad input never gives a 5xx (issue 16): far-future and edge dates in searches and writes, deep
JSON nesting (400 naming the depth limit), control characters in strings (R4 datatypes.html#string),
forged paging tokens, and caller-supplied FHIRPath regexes that would backtrack for ever."""

from __future__ import annotations

import base64
import itertools
import json
import time
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import Fhir
from tests.factories import consent
from tests.support.auth import practitioner_user, user_token

# -- 1. dates at the edges ------------------------------------------------------------------------

EDGE_DATES = [
    "9999-12-31",
    "9999-12",
    "9999",
    "0001-01-01",
    "0001",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:60Z",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T10:00:00+14:00",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00-14:00",
    "2016-12-31T23:59:60Z",
    "2024-02-29",
]
TERMINOLOGY = "http://terminology.hl7.org/CodeSystem"
PREFIXES = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]


@st.composite
def fhir_dates(draw: st.DrawFn) -> str:
    """Syntactically valid FHIR date/dateTime texts, biased to the edges of the calendar."""
    year = draw(st.sampled_from([1, 2, 1969, 1970, 2000, 2038, 9998, 9999]))
    precision = draw(st.sampled_from(["year", "month", "day", "minute", "second", "fraction"]))
    if precision == "year":
        return f"{year:04d}"
    month = draw(st.sampled_from([1, 2, 12]))
    if precision == "month":
        return f"{year:04d}-{month:02d}"
    day = draw(st.sampled_from([1, 28, 29, 31]) if month != 2 else st.sampled_from([1, 28]))
    if precision == "day":
        return f"{year:04d}-{month:02d}-{day:02d}"
    hour = draw(st.sampled_from([0, 13, 23]))
    minute = draw(st.sampled_from([0, 59]))
    zone = draw(st.sampled_from(["Z", "+14:00", "-14:00", "+05:30", "-12:00"]))
    if precision == "minute":
        return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}{zone}"
    second = draw(st.sampled_from([0, 59, 60]))
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    if precision == "fraction":
        text += "." + draw(st.sampled_from(["0", "999", "999999", "9999999"]))
    return text + zone


# Any digits in the shape of a date: month 13, day 00, hour 24, zone +99:99, 9 fraction digits...
DATE_SHAPED = st.from_regex(
    r"\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?)?)?", fullmatch=True
)


def _q(value: str) -> str:
    return quote(value, safe="")


@pytest.mark.parametrize("value", EDGE_DATES)
def test_edge_dates_in_searches_never_5xx(fhir: Fhir, value: str) -> None:
    fhir.create({"resourceType": "Patient", "birthDate": "2000-01-01"})
    for prefix in PREFIXES:
        for query in (
            f"Patient?birthdate={prefix}{_q(value)}",
            f"Encounter?date={prefix}{_q(value)}",
            f"Observation?date={prefix}{_q(value)}",
            f"Patient?_lastUpdated={prefix}{_q(value)}",
        ):
            response = fhir.request("GET", f"/fhir/{query}")
            assert response.status_code in (200, 400), (query, response.get_json())
    history = fhir.request("GET", f"/fhir/Patient/_history?_since={_q(value)}")
    assert history.status_code in (200, 400), history.get_json()


def test_birthdate_9999_searches(fhir: Fhir) -> None:
    late = fhir.create({"resourceType": "Patient", "birthDate": "9999-12-31"})
    early = fhir.create({"resourceType": "Patient", "birthDate": "0001-01-01"})
    assert fhir.ids("Patient?birthdate=9999-12-31") == {late["id"]}
    assert fhir.ids("Patient?birthdate=gt9999-12-31") == set()
    assert fhir.ids("Patient?birthdate=ge9999-12-31") == {late["id"]}
    assert fhir.ids("Patient?birthdate=lt0001-01-02") == {early["id"]}
    assert fhir.ids("Patient?birthdate=9999") == {late["id"]}


def test_far_future_periods_then_a_practitioner_reads(app: Flask, client: FlaskClient, fhir: Fhir) -> None:
    practitioner = practitioner_user(app)
    patient = fhir.create({"resourceType": "Patient", "name": [{"family": "Futur"}]})["id"]
    subject = {"reference": f"Patient/{patient}"}
    for period in ({"end": "9999-12-31"}, {"start": "0001-01-01", "end": "9999-12-31T23:59:59+14:00"}):
        fhir.create(
            {
                "resourceType": "CareTeam",
                "status": "active",
                "subject": subject,
                "period": period,
                "participant": [{"member": {"reference": f"Practitioner/{practitioner}"}, "period": period}],
            }
        )
    fhir.create(consent(subject["reference"], {"type": "permit", "period": {"end": "9999-12-31"}}))
    encounter = fhir.create(
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": subject,
            "period": {"start": "9999-12-30", "end": "9999-12-31T23:59:59Z"},
        }
    )
    token = user_token(app)
    reader = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    for url in (
        f"/fhir/Patient/{patient}",
        f"/fhir/Encounter/{encounter['id']}",
        f"/fhir/Encounter?subject=Patient/{patient}&date=9999-12",
        f"/fhir/CareTeam?patient=Patient/{patient}",
        f"/fhir/Patient/{patient}/$everything",
    ):
        response = reader.get(url, headers=headers)
        assert response.status_code == 200, (url, response.get_json())
    found = reader.get(f"/fhir/Encounter?subject=Patient/{patient}&date=9999-12", headers=headers)
    assert [e["resource"]["id"] for e in found.get_json().get("entry", [])] == [encounter["id"]]


def test_edge_dates_property_search_and_write(fhir: Fhir) -> None:
    counter = itertools.count()

    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(value=fhir_dates() | DATE_SHAPED, prefix=st.sampled_from(PREFIXES))
    @example(value="9999-12-31", prefix="gt")
    @example(value="9999-12-31T23:59:60+14:00", prefix="")
    def check(value: str, prefix: str) -> None:
        searched = fhir.request("GET", f"/fhir/Observation?date={prefix}{_q(value)}")
        assert searched.status_code in (200, 400), (value, searched.get_json())
        n = next(counter)
        written = fhir.request(
            "PUT",
            f"/fhir/Observation/edge{n}",
            {
                "resourceType": "Observation",
                "id": f"edge{n}",
                "status": "final",
                "code": {"text": "edge"},
                "effectivePeriod": {"start": value, "end": value},
                "issued": "9999-12-31T23:59:59.999+14:00",
            },
        )
        # A date the model refuses (e.g. the leap second, or day 31 of a short month) is a 400.
        assert written.status_code in (200, 201, 400), (value, written.get_json())
        if written.status_code in (200, 201):
            read = fhir.request("GET", f"/fhir/Observation/edge{n}")
            assert read.status_code == 200
        # The access rows a CareTeam derives (auth/policy.py) parse its period too.
        team = fhir.request(
            "PUT",
            f"/fhir/CareTeam/edge{n}",
            {
                "resourceType": "CareTeam",
                "id": f"edge{n}",
                "status": "active",
                "subject": {"reference": "Patient/edge"},
                "period": {"end": value},
                "participant": [{"member": {"reference": "Practitioner/edge"}, "period": {"start": value}}],
            },
        )
        assert team.status_code in (200, 201, 400), (value, team.get_json())

    check()


# -- 2. deep nesting ------------------------------------------------------------------------------


def _nested_extension(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"url": "http://example.org/leaf", "valueString": "x"}
    for _ in range(levels):
        node = {"url": "http://example.org/nest", "extension": [node]}
    return node


def _text(body: Any) -> str:
    """JSON text (the stdlib encoder: orjson refuses to write more than 254 levels)."""
    return json.dumps(body)


def _assert_depth_refusal(response: Any) -> None:
    assert response.status_code == 400, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert "maximum depth of 64" in body["issue"][0]["diagnostics"]


def test_deep_extension_nesting_is_a_400(fhir: Fhir) -> None:
    patient = {"resourceType": "Patient", "extension": [_nested_extension(150)]}
    _assert_depth_refusal(fhir.request("POST", "/fhir/Patient", _text(patient)))
    _assert_depth_refusal(fhir.request("PUT", "/fhir/Patient/deep", _text({**patient, "id": "deep"})))
    _assert_depth_refusal(fhir.request("POST", "/fhir/Patient/$validate", _text(patient)))


@pytest.mark.parametrize("depth", [200, 1100, 5000])
def test_deep_arrays_and_objects_are_a_400(fhir: Fhir, depth: int) -> None:
    text = '{"resourceType":"Patient","x":' + "[" * depth + "]" * depth + "}"
    _assert_depth_refusal(fhir.request("POST", "/fhir/Patient", text))
    objects = '{"resourceType":"Patient","x":' + '{"a":' * depth + "1" + "}" * depth + "}"
    _assert_depth_refusal(fhir.request("POST", "/fhir/Patient", objects))


def test_deep_nesting_in_bundles_and_messages(fhir: Fhir) -> None:
    deep = {"resourceType": "Patient", "extension": [_nested_extension(150)]}
    for kind in ("transaction", "batch"):
        bundle = {
            "resourceType": "Bundle",
            "type": kind,
            "entry": [{"resource": deep, "request": {"method": "POST", "url": "Patient"}}],
        }
        _assert_depth_refusal(fhir.request("POST", "/fhir", _text(bundle)))
    message = {
        "resourceType": "Bundle",
        "type": "message",
        "entry": [
            {
                "fullUrl": "urn:uuid:9b3c1e8e-8d7a-4b7e-9a57-0f6f3c7f1a01",
                "resource": {
                    "resourceType": "MessageHeader",
                    "eventCoding": {"system": "http://example.org", "code": "x"},
                    "source": {"endpoint": "urn:x"},
                },
            },
            {"resource": deep},
        ],
    }
    _assert_depth_refusal(fhir.request("POST", "/fhir/$process-message", _text(message)))
    patch = [{"op": "add", "path": "/extension", "value": [_nested_extension(150)]}]
    created = fhir.create({"resourceType": "Patient"})
    _assert_depth_refusal(_patch(fhir, f"/fhir/Patient/{created['id']}", _text(patch)))


def _patch(fhir: Fhir, url: str, data: str | bytes) -> Any:
    return fhir.client.patch(url, data=data, headers={"Content-Type": "application/json-patch+json"})


def test_moderate_nesting_still_works(fhir: Fhir) -> None:
    fhir.create({"resourceType": "Patient", "extension": [_nested_extension(20)]})


# -- 3. R4 string rule ------------------------------------------------------------------------------

CONTROLS = ["\x1b", "\x00", "\x07", "\x0b", "\x0c", "\x7f\x1f"]


@pytest.mark.parametrize("control", CONTROLS)
def test_control_characters_are_refused_on_create_and_update(fhir: Fhir, control: str) -> None:
    patient = {"resourceType": "Patient", "name": [{"family": f"Dupont{control}[2J", "given": ["Jean"]}]}
    response = fhir.request("POST", "/fhir/Patient", patient)
    assert response.status_code == 400, response.get_json()
    issue = response.get_json()["issue"][0]
    assert issue["expression"] == ["Patient.name[0].family"]
    assert "control character" in issue["diagnostics"]
    response = fhir.request("PUT", "/fhir/Patient/ctl", {**patient, "id": "ctl"})
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["Patient.name[0].family"]


def test_tab_cr_lf_are_allowed(fhir: Fhir) -> None:
    created = fhir.create({"resourceType": "Patient", "name": [{"text": "ligne 1\r\nligne\t2"}]})
    assert created["name"][0]["text"] == "ligne 1\r\nligne\t2"


def test_control_characters_refused_in_patch_transaction_batch_and_messages(fhir: Fhir) -> None:
    created = fhir.create({"resourceType": "Patient"})
    patch = [{"op": "add", "path": "/name", "value": [{"family": "A\x1bB"}]}]
    response = _patch(fhir, f"/fhir/Patient/{created['id']}", orjson.dumps(patch))
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["issue"][0]["expression"] == ["Patient.name[0].family"]

    bad = {"resourceType": "Patient", "name": [{"given": ["ok", "x\x00y"]}]}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": bad, "request": {"method": "POST", "url": "Patient"}}],
    }
    response = fhir.request("POST", "/fhir", bundle)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["issue"][0]["expression"] == ["Bundle.entry[0].resource.name[0].given[1]"]

    bundle["type"] = "batch"
    response = fhir.request("POST", "/fhir", bundle)
    assert response.status_code == 200, response.get_json()
    entry = response.get_json()["entry"][0]["response"]
    assert entry["status"].startswith("400")
    assert "control character" in entry["outcome"]["issue"][0]["diagnostics"]

    message = {
        "resourceType": "Bundle",
        "type": "message",
        "entry": [
            {
                "fullUrl": "urn:uuid:9b3c1e8e-8d7a-4b7e-9a57-0f6f3c7f1a02",
                "resource": {
                    "resourceType": "MessageHeader",
                    "eventCoding": {"system": "http://example.org", "code": "x\x1b"},
                    "source": {"endpoint": "urn:x"},
                },
            }
        ],
    }
    response = fhir.request("POST", "/fhir/$process-message", message)
    assert response.status_code == 400, response.get_json()
    assert "control character" in response.get_data(as_text=True)
    assert fhir.ids("Patient") == {created["id"]}


# -- 4. paging tokens -------------------------------------------------------------------------------


def _next(bundle: dict[str, Any]) -> str | None:
    return next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)


def _page_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["_page"][0]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_paging_round_trip_and_forged_tokens(fhir: Fhir) -> None:
    created = {
        fhir.create({"resourceType": "Patient", "name": [{"family": f"P{i}"}]})["id"] for i in range(7)
    }
    seen: list[str] = []
    url: str | None = "/fhir/Patient?_count=2"
    pages = 0
    while url is not None:
        bundle = fhir.search(url.split("/fhir/", 1)[1])
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        assert len(bundle.get("entry", [])) <= 2
        url = _next(bundle)
        pages += 1
    assert sorted(seen) == sorted(created) and pages == 4  # an honest round trip

    first = fhir.search("Patient?_count=2")
    token = _page_of(_next(first) or "")
    payload, _, mac = token.partition(".")
    data = orjson.loads(_unb64(payload))
    forged_tokens = [
        _b64(orjson.dumps({**data, "c": 100_000})) + "." + mac,  # page size past the cap, old signature
        _b64(orjson.dumps({**data, "c": 100_000})),  # unsigned
        _b64(orjson.dumps({**data, "p": [["family", "P1"]]})) + "." + mac,  # another query
        _b64(orjson.dumps({**data, "o": 0, "k": None})) + "." + mac,  # another position
        payload + "." + mac[::-1],
        payload + "." + _b64(b"\0" * 20),
        payload,
    ]
    for forged in forged_tokens:
        response = fhir.request("GET", f"/fhir/Patient?_page={forged}")
        assert response.status_code == 400, (forged, response.get_json())
        assert "_page token" in response.get_json()["issue"][0]["diagnostics"]
    # A token of a Patient search is valid only where it was issued as a whole: its query is signed.
    response = fhir.request("GET", f"/fhir/Patient?_page={token}")
    assert response.status_code == 200


def test_signed_history_and_everything_tokens(fhir: Fhir) -> None:
    patient = fhir.create({"resourceType": "Patient"})["id"]
    for i in range(3):
        fhir.request(
            "PUT",
            f"/fhir/Patient/{patient}",
            {"resourceType": "Patient", "id": patient, "gender": "male" if i % 2 else "female"},
        )
    history = fhir.search(f"Patient/{patient}/_history?_count=1")
    token = _page_of(_next(history) or "")
    assert fhir.request("GET", f"/fhir/Patient/{patient}/_history?_page={token}").status_code == 200
    payload, _, mac = token.partition(".")
    data = orjson.loads(_unb64(payload))
    forged = _b64(orjson.dumps({**data, "c": 10_000})) + "." + mac
    assert fhir.request("GET", f"/fhir/Patient/{patient}/_history?_page={forged}").status_code == 400


# -- 6. caller-supplied FHIRPath: regexes and time bounded ----------------------------------------------


def _plan(expression: str, *, dynamic: bool = False) -> dict[str, Any]:
    fhirpath = {"language": "text/fhirpath", "expression": expression}
    action: dict[str, Any] = {"title": "Hostile"}
    if dynamic:
        action["dynamicValue"] = [{"path": "description", "expression": fhirpath}]
    else:
        action["condition"] = [{"kind": "applicability", "expression": fhirpath}]
    return {"resourceType": "PlanDefinition", "status": "active", "action": [action]}


PATHOLOGICAL = [
    "'{s}'.matches('(a|a)+$')",
    "'{s}'.matches('(a|aa)+$')",
    "'{s}'.replaceMatches('(a|a)+$', 'x') = 'x'",
]


@pytest.mark.parametrize("template", PATHOLOGICAL)
def test_catastrophic_regex_in_apply_is_stopped(fhir: Fhir, template: str) -> None:
    patient = fhir.create({"resourceType": "Patient"})["id"]
    text = "a" * 34 + "!"
    expression = template.format(s=text)
    for plan in (_plan(expression), _plan(expression, dynamic=True)):
        definition = fhir.create(plan)
        started = time.monotonic()
        response = fhir.request(
            "GET", f"/fhir/PlanDefinition/{definition['id']}/$apply?subject=Patient/{patient}"
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 422, response.get_json()
        diagnostics = response.get_json()["issue"][0]["diagnostics"]
        assert "COORDINATION_EXPRESSION_REGEX_TIMEOUT" in diagnostics
        assert elapsed < 10, elapsed  # unbounded, 35 characters of (a|a)+$ take hours


def test_catastrophic_regex_in_an_inline_plan_definition(fhir: Fhir) -> None:
    patient = fhir.create({"resourceType": "Patient"})["id"]
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "subject", "valueString": f"Patient/{patient}"},
            {"name": "planDefinition", "resource": _plan("'" + "a" * 40 + "!'.matches('(a|a)+$')")},
        ],
    }
    response = fhir.request("POST", "/fhir/PlanDefinition/$apply", body)
    assert response.status_code == 422, response.get_json()
    assert "regular expression" in response.get_json()["issue"][0]["diagnostics"]


def test_honest_regexes_still_work(fhir: Fhir) -> None:
    patient = fhir.create({"resourceType": "Patient", "name": [{"family": "Durand"}]})["id"]
    expression = (
        "%patient.name.family.first().matches('^Dur[a-z]+$')"
        " and 'a-b'.replaceMatches('(a)-(b)', '$2$1') = 'ba'"
    )
    definition = fhir.create(_plan(expression))
    response = fhir.request(
        "GET", f"/fhir/PlanDefinition/{definition['id']}/$apply?subject=Patient/{patient}"
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["resourceType"] == "CarePlan"


def test_long_expressions_are_refused(fhir: Fhir) -> None:
    patient = fhir.create({"resourceType": "Patient"})["id"]
    definition = fhir.create(_plan(" or ".join(["true"] * 1200)))
    response = fhir.request(
        "GET", f"/fhir/PlanDefinition/{definition['id']}/$apply?subject=Patient/{patient}"
    )
    assert response.status_code == 422
    assert "longer than the limit of 4000 characters" in response.get_json()["issue"][0]["diagnostics"]
