"""Every kind of bad input: a 4xx OperationOutcome naming the fault, and nothing written.

R4 http.html: 400 for content that cannot be parsed or fails validation, 404 for an unknown
resource type, 405 for a method a URL does not take, 406/415 for formats, 412 for failed
preconditions, 413 for a body over the limit; errors carry an OperationOutcome.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from coordination_api.app import create_app
from coordination_api.config import Settings
from tests.conftest import Fhir, authed, close_app

PATIENT = {"resourceType": "Patient", "name": [{"family": "Moreau"}], "birthDate": "1961-05-06"}


def versions(fhir: Fhir) -> int:
    total: int = fhir.request("GET", "/fhir/_history").get_json()["total"]
    return total


def assert_outcome(
    response: Any, status: int, diagnostics: str, expression: str | list[str] | None = None
) -> dict[str, Any]:
    """A ``status`` OperationOutcome whose first issue is an error saying ``diagnostics``."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["severity"] == "error"
    assert issue["code"]
    assert diagnostics in issue["diagnostics"], issue["diagnostics"]
    if expression is not None:
        expected = [expression] if isinstance(expression, str) else expression
        assert issue["expression"] == expected
    return body


@pytest.fixture
def limited(client: FlaskClient, database_url: str) -> Iterator[Fhir]:
    """An app over the same (emptied) database with small body and Bundle limits."""
    app = create_app(Settings(database_url=database_url, max_body_bytes=2048, max_transaction_entries=3))
    app.config["TESTING"] = True
    yield Fhir(authed(app.test_client()))
    close_app(app)


# -- bodies that are not a FHIR JSON resource ----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "diagnostics"),
    [
        (b'{"resourceType": "Patient",', 400, "not valid JSON"),
        (b"", 400, "empty"),
        (b"[1, 2]", 400, "must be a JSON object"),
        ('"Patient"', 400, "must be a JSON object"),
        (b"null", 400, "must be a JSON object"),
        (b"\xff\xfe", 400, "not valid JSON"),
    ],
    ids=["invalid-json", "empty", "array", "string", "null", "not-utf8"],
)
def test_unparseable_body_is_400(fhir: Fhir, body: bytes | str, status: int, diagnostics: str) -> None:
    for method, url in (("POST", "/fhir/Patient"), ("PUT", "/fhir/Patient/p1"), ("POST", "/fhir")):
        assert_outcome(fhir.request(method, url, body), status, diagnostics)
    assert versions(fhir) == 0


def test_missing_resource_type_is_400(fhir: Fhir) -> None:
    body = {"name": [{"family": "Moreau"}]}
    assert_outcome(fhir.request("POST", "/fhir/Patient", body), 400, "Missing 'resourceType'", "Resource")
    assert versions(fhir) == 0


def test_body_type_other_than_url_type_is_400(fhir: Fhir) -> None:
    response = fhir.request("POST", "/fhir/Observation", PATIENT)
    assert_outcome(response, 400, "does not match the URL type 'Observation'")
    response = fhir.request("PUT", "/fhir/Observation/p1", {**PATIENT, "id": "p1"})
    assert_outcome(response, 400, "does not match the URL type 'Observation'")
    assert versions(fhir) == 0


def test_unknown_resource_type_in_body_is_400(fhir: Fhir) -> None:
    assert_outcome(fhir.request("POST", "/fhir/Patient", {"resourceType": "Alien"}), 400, "'Alien'")
    assert versions(fhir) == 0


# -- content that fails FHIR R4 validation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "body", "diagnostics", "expression"),
    [
        (
            "/fhir/Patient",
            {**PATIENT, "favouriteColour": "blue"},
            "Unknown element 'favouriteColour'",
            "Patient.favouriteColour",
        ),
        ("/fhir/Patient", {**PATIENT, "birthDate": "not-a-date"}, '"not-a-date"', "Patient.birthDate"),
        ("/fhir/Patient", {**PATIENT, "gender": 12}, "Invalid value 12", "Patient.gender"),
        ("/fhir/Patient", {**PATIENT, "name": "Moreau"}, "Patient.name", "Patient.name"),
        ("/fhir/Patient", {**PATIENT, "active": "yes"}, '"yes"', "Patient.active"),
        (
            "/fhir/Patient",
            {**PATIENT, "multipleBirthInteger": "3"},
            "whole number",
            "Patient.multipleBirthInteger",
        ),
        (
            "/fhir/Patient",
            {**PATIENT, "multipleBirthInteger": 3.0},
            "whole number",
            "Patient.multipleBirthInteger",
        ),
        (
            "/fhir/Patient",
            {**PATIENT, "extension": [{"url": "http://x.org/e", "valueDecimal": "1.5"}]},
            "a number",
            "Patient.extension[0].valueDecimal",
        ),
        ("/fhir/Patient", {**PATIENT, "gender": None}, "null", "Patient.gender"),
        (
            "/fhir/Patient",
            {**PATIENT, "contact": [{"name": {"family": "X", "nickname": "Y"}}]},
            "Unknown element 'nickname'",
            "Patient.contact[0].name.nickname",
        ),
        (
            "/fhir/Observation",
            {"resourceType": "Observation", "code": {"text": "x"}},
            "Missing required element 'status'",
            "Observation.status",
        ),
    ],
    ids=[
        "unknown-element",
        "bad-date",
        "gender-number",
        "list-expected",
        "boolean-expected",
        "integer-as-string",
        "integer-as-decimal",
        "decimal-as-string",
        "null",
        "nested-unknown",
        "missing-required",
    ],
)
def test_invalid_content_is_400_with_the_element_path(
    fhir: Fhir, url: str, body: dict[str, Any], diagnostics: str, expression: str
) -> None:
    assert_outcome(fhir.request("POST", url, body), 400, diagnostics, expression)
    assert versions(fhir) == 0


def test_r4b_only_element_is_400(fhir: Fhir) -> None:
    plan = {"resourceType": "PlanDefinition", "status": "draft", "subjectCanonical": "http://example.org/x"}
    response = fhir.request("POST", "/fhir/PlanDefinition", plan)
    assert_outcome(response, 400, "not part of FHIR R4", "PlanDefinition.subjectCanonical")
    primitive_extension = {
        "resourceType": "PlanDefinition",
        "status": "draft",
        "_subjectCanonical": {"id": "x"},
    }
    response = fhir.request("POST", "/fhir/PlanDefinition", primitive_extension)
    assert_outcome(response, 400, "not part of FHIR R4", "PlanDefinition.subjectCanonical")
    assert versions(fhir) == 0


def test_r4b_only_element_in_a_nested_backbone_is_400(fhir: Fhir) -> None:
    plan = {
        "resourceType": "PlanDefinition",
        "status": "draft",
        "action": [{"title": "a"}, {"action": [{"action": [{"subjectCanonical": "http://example.org/x"}]}]}],
    }
    response = fhir.request("POST", "/fhir/PlanDefinition", plan)
    assert_outcome(
        response,
        400,
        "PlanDefinition.action.subjectCanonical",
        "PlanDefinition.action[1].action[0].action[0].subjectCanonical",
    )
    assert versions(fhir) == 0


def test_r4b_only_extension_type_is_400_at_any_depth(fhir: Fhir) -> None:
    body = {
        **PATIENT,
        "address": [{"city": "Lyon", "extension": [{"url": "http://example.org/x", "valueRatioRange": {}}]}],
    }
    response = fhir.request("POST", "/fhir/Patient", body)
    assert_outcome(
        response, 400, "Extension.valueRatioRange", "Patient.address[0].extension[0].valueRatioRange"
    )
    assert versions(fhir) == 0


@pytest.mark.parametrize(
    ("url", "body", "diagnostics", "expression"),
    [
        (
            "/fhir/Patient",
            {**PATIENT, "contained": [{"resourceType": "Alien", "id": "a"}]},
            "'Alien'",
            "Patient.contained[0]",
        ),
        (
            "/fhir/Bundle",
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": {"resourceType": "Alien"}}],
            },
            "'Alien'",
            "Bundle.entry[0].resource",
        ),
        (
            "/fhir/Bundle",
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [
                    {"resource": {"resourceType": "SubscriptionTopic", "url": "http://x", "status": "draft"}}
                ],
            },
            "not part of FHIR R4",
            "Bundle.entry[0].resource",
        ),
        (
            "/fhir/Patient",
            {**PATIENT, "contained": [{"resourceType": "Ingredient", "id": "i", "role": {"text": "x"}}]},
            "not part of FHIR R4",
            "Patient.contained[0]",
        ),
        (
            "/fhir/Bundle",
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": {**PATIENT, "contained": [{"resourceType": "Alien"}]}}],
            },
            "'Alien'",
            "Bundle.entry[0].resource.contained[0]",
        ),
    ],
    ids=["contained-unknown", "bundle-entry-unknown", "bundle-entry-r4b", "contained-r4b", "deeply-nested"],
)
def test_unknown_or_r4b_type_inside_a_resource_is_400(
    fhir: Fhir, url: str, body: dict[str, Any], diagnostics: str, expression: str
) -> None:
    outcome = assert_outcome(fhir.request("POST", url, body), 400, diagnostics, expression)
    assert "R4." not in outcome["issue"][0]["diagnostics"]  # no library internals
    assert versions(fhir) == 0


# -- resource types in the URL -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
def test_unknown_resource_type_in_url_is_404(fhir: Fhir, method: str) -> None:
    body = {"resourceType": "Alien", "id": "a1"} if method in {"POST", "PUT"} else None
    url = "/fhir/Alien/a1" if method in {"PUT", "DELETE"} else "/fhir/Alien"
    assert_outcome(fhir.request(method, url, body), 404, "'Alien'")
    assert versions(fhir) == 0


@pytest.mark.parametrize("resource_type", ["SubscriptionTopic", "Citation", "MedicinalProduct", "Evidence"])
def test_types_outside_the_r4_registry_are_404(fhir: Fhir, resource_type: str) -> None:
    assert_outcome(fhir.request("GET", f"/fhir/{resource_type}"), 404, resource_type)
    body = {"resourceType": resource_type}
    assert_outcome(fhir.request("POST", f"/fhir/{resource_type}", body), 404, resource_type)
    assert versions(fhir) == 0


def test_r4b_only_type_is_named_as_such(fhir: Fhir) -> None:
    assert_outcome(fhir.request("GET", "/fhir/SubscriptionTopic/x"), 404, "not part of FHIR R4")


# -- ids -------------------------------------------------------------------------------------------


def test_update_id_mismatch_is_400(fhir: Fhir) -> None:
    response = fhir.request("PUT", "/fhir/Patient/p1", {**PATIENT, "id": "p2"})
    assert_outcome(response, 400, "Body id 'p2' does not match the URL id 'p1'", "Resource.id")
    response = fhir.request("PUT", "/fhir/Patient/p1", PATIENT)
    assert_outcome(response, 400, "must carry an id", "Resource.id")
    assert versions(fhir) == 0


@pytest.mark.parametrize("bad_id", ["bad!id", "with space", "x" * 65, "under_score"])
def test_invalid_id_is_400(fhir: Fhir, bad_id: str) -> None:
    response = fhir.request("PUT", f"/fhir/Patient/{bad_id}", {**PATIENT, "id": bad_id})
    assert_outcome(response, 400, bad_id[:20])
    assert versions(fhir) == 0


# -- formats ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/fhir+xml", "application/xml", "application/fhir+json; fhirVersion=3.0"],
)
def test_unsupported_content_type_is_415(fhir: Fhir, content_type: str) -> None:
    for method, url in (("POST", "/fhir/Patient"), ("PUT", "/fhir/Patient/p1"), ("POST", "/fhir")):
        response = fhir.request(method, url, {**PATIENT, "id": "p1"}, **{"Content-Type": content_type})
        assert_outcome(response, 415, content_type)
    assert versions(fhir) == 0


def test_missing_content_type_is_415(fhir: Fhir) -> None:
    response = fhir.client.post("/fhir/Patient", data=b'{"resourceType": "Patient"}')
    assert_outcome(response, 415, "Missing Content-Type")
    assert versions(fhir) == 0


def test_json_content_types_with_parameters_are_accepted(fhir: Fhir) -> None:
    for content_type in (
        "application/fhir+json; charset=utf-8",
        "application/json",
        "application/fhir+json; fhirVersion=4.0",
    ):
        response = fhir.request("POST", "/fhir/Patient", PATIENT, **{"Content-Type": content_type})
        assert response.status_code == 201, response.get_json()


@pytest.mark.parametrize(
    "accept",
    ["application/fhir+xml", "application/xml", "text/html", "application/fhir+json; fhirVersion=3.0"],
)
def test_unsupported_accept_is_406(fhir: Fhir, accept: str) -> None:
    assert_outcome(fhir.request("GET", "/fhir/Patient", Accept=accept), 406, "Accept")
    assert_outcome(fhir.request("POST", "/fhir/Patient", PATIENT, Accept=accept), 406, "Accept")
    assert versions(fhir) == 0


@pytest.mark.parametrize("fmt", ["xml", "application/fhir+xml", "text/xml", "ttl", "html"])
def test_unsupported_format_parameter_is_406(fhir: Fhir, fmt: str) -> None:
    assert_outcome(fhir.request("GET", f"/fhir/Patient?_format={fmt}"), 406, "_format")
    assert_outcome(fhir.request("POST", f"/fhir/Patient?_format={fmt}", PATIENT), 406, "_format")
    assert versions(fhir) == 0


def test_accept_with_a_json_alternative_is_served(fhir: Fhir) -> None:
    response = fhir.request(
        "GET", "/fhir/metadata", Accept="application/fhir+xml;q=0.9, application/fhir+json"
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/fhir+json")


def test_generic_json_accept_is_answered_with_that_type(fhir: Fhir) -> None:
    response = fhir.request("GET", "/fhir/metadata", Accept="application/json")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")


# -- body size -------------------------------------------------------------------------------------


def test_body_over_the_limit_is_413(limited: Fhir) -> None:
    big = {**PATIENT, "text": {"status": "generated", "div": "<div>" + "x" * 4000 + "</div>"}}
    assert_outcome(limited.request("POST", "/fhir/Patient", big), 413, "maximum")
    assert_outcome(limited.request("PUT", "/fhir/Patient/p1", {**big, "id": "p1"}), 413, "maximum")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": big, "request": {"method": "POST", "url": "Patient"}}],
    }
    assert_outcome(limited.request("POST", "/fhir", bundle), 413, "maximum")
    assert versions(limited) == 0


def test_body_over_the_limit_without_content_length_is_413(limited: Fhir) -> None:
    payload = b'{"resourceType": "Patient", "name": [{"family": "' + b"x" * 4000 + b'"}]}'
    response = limited.client.post(
        "/fhir/Patient",
        input_stream=io.BytesIO(payload),
        headers={"Content-Type": "application/fhir+json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert_outcome(response, 413, "maximum")
    assert versions(limited) == 0


def test_bundle_with_too_many_entries_is_403(limited: Fhir) -> None:
    entries = [{"resource": PATIENT, "request": {"method": "POST", "url": "Patient"}}] * 4
    response = limited.request(
        "POST", "/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    )
    assert_outcome(response, 403, "limit is 3")
    assert versions(limited) == 0


# -- routes and methods ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/nope", "/fhir/Patient/p1/_history/1/extra", "/fhir/Patient/p1/notes"])
def test_unknown_route_is_404(fhir: Fhir, url: str) -> None:
    assert_outcome(fhir.request("GET", url), 404, "Unknown route")


@pytest.mark.parametrize(
    ("method", "url", "allowed"),
    [
        ("PATCH", "/fhir/Patient/_history", "GET"),
        ("POST", "/fhir/Patient/p1", "GET"),
        ("DELETE", "/fhir/metadata", "GET"),
        ("POST", "/fhir/_history", "GET"),
        ("PUT", "/fhir/Patient/_history", "GET"),
        ("DELETE", "/fhir/Patient/_search", "POST"),
        ("GET", "/fhir/Patient/_search", "POST"),
        ("DELETE", "/fhir/Patient/p1/_history/1", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow(fhir: Fhir, method: str, url: str, allowed: str) -> None:
    body = {**PATIENT, "id": "p1"} if method in {"POST", "PUT", "PATCH"} else None
    response = fhir.request(method, url, body)
    assert_outcome(response, 405, f"Method {method} is not allowed")
    assert allowed in response.headers["Allow"]
    assert versions(fhir) == 0


# -- headers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["garbage", 'W/"abc"', "*1"])
def test_invalid_if_match_is_400(fhir: Fhir, value: str) -> None:
    created = fhir.create(PATIENT)
    url = f"/fhir/Patient/{created['id']}"
    assert_outcome(fhir.request("PUT", url, created, If_Match=value), 400, "If-Match")
    assert_outcome(fhir.request("DELETE", url, If_Match=value), 400, "If-Match")
    assert fhir.request("GET", url).get_json()["meta"]["versionId"] == "1"


def test_stale_if_match_is_412(fhir: Fhir) -> None:
    created = fhir.create(PATIENT)
    url = f"/fhir/Patient/{created['id']}"
    assert_outcome(fhir.request("PUT", url, created, If_Match='W/"2"'), 412, "is not the current version")
    assert_outcome(fhir.request("DELETE", url, If_Match='W/"2"'), 412, "is not the current version")
    assert fhir.request("GET", url).status_code == 200


def test_if_match_on_absent_resource_is_412(fhir: Fhir) -> None:
    response = fhir.request("PUT", "/fhir/Patient/p1", {**PATIENT, "id": "p1"}, If_Match='W/"1"')
    assert_outcome(response, 412, "does not exist")
    assert versions(fhir) == 0


# -- conditional interactions ----------------------------------------------------------------------


def test_conditional_update_with_two_matches_is_412(fhir: Fhir) -> None:
    body = {**PATIENT, "identifier": [{"system": "urn:t", "value": "1"}]}
    fhir.create(body)
    fhir.create(body)
    before = versions(fhir)
    assert_outcome(fhir.request("PUT", "/fhir/Patient?identifier=urn:t|1", body), 412, "match 2 resources")
    assert versions(fhir) == before


def test_conditional_update_with_another_body_id_is_400(fhir: Fhir) -> None:
    body = {**PATIENT, "identifier": [{"system": "urn:t", "value": "1"}]}
    fhir.create(body)
    before = versions(fhir)
    response = fhir.request("PUT", "/fhir/Patient?identifier=urn:t|1", {**body, "id": "other"})
    assert_outcome(response, 400, "differs from the matching resource", "Resource.id")
    assert versions(fhir) == before


def test_conditional_update_without_match_on_an_existing_id_is_409(fhir: Fhir) -> None:
    fhir.request("PUT", "/fhir/Patient/taken", {**PATIENT, "id": "taken"})
    before = versions(fhir)
    response = fhir.request("PUT", "/fhir/Patient?identifier=urn:t|nobody", {**PATIENT, "id": "taken"})
    assert_outcome(response, 409, "Patient/taken exists", "Resource.id")
    assert versions(fhir) == before
    assert fhir.request("GET", "/fhir/Patient/taken").get_json()["meta"]["versionId"] == "1"


def test_conditional_operations_with_unknown_parameters_are_400(fhir: Fhir) -> None:
    assert_outcome(fhir.request("PUT", "/fhir/Patient?shoe-size=42", PATIENT), 400, "shoe-size")
    assert_outcome(fhir.request("DELETE", "/fhir/Patient?shoe-size=42"), 400, "shoe-size")
    response = fhir.request("POST", "/fhir/Patient", PATIENT, If_None_Exist="shoe-size=42")
    assert_outcome(response, 400, "shoe-size")
    assert versions(fhir) == 0


# -- transaction and batch envelopes ---------------------------------------------------------------

GOOD_ENTRY = {"resource": PATIENT, "request": {"method": "POST", "url": "Patient"}}


def _bundle(entries: Any, kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


@pytest.mark.parametrize(
    ("body", "status", "diagnostics", "expression"),
    [
        (_bundle([GOOD_ENTRY], "collection"), 400, "Bundle.type must be", "Bundle.type"),
        (_bundle([GOOD_ENTRY], "document"), 400, "Bundle.type must be", "Bundle.type"),
        ({"resourceType": "Bundle", "entry": [GOOD_ENTRY]}, 400, "Bundle.type must be", "Bundle.type"),
        (PATIENT, 400, "expects a Bundle", None),
        ({"type": "transaction", "entry": []}, 400, "Missing 'resourceType'", "Resource"),
        (_bundle({"resource": PATIENT}), 400, "Bundle.entry must be an array", "Bundle.entry"),
        (_bundle({}), 400, "Bundle.entry must be an array", "Bundle.entry"),
        (_bundle("entries"), 400, "Bundle.entry must be an array", "Bundle.entry"),
        (_bundle([GOOD_ENTRY, {"resource": PATIENT}]), 400, "request is required", "Bundle.entry[1].request"),
        (
            _bundle([GOOD_ENTRY, {"resource": PATIENT, "request": {"method": "FETCH", "url": "Patient"}}]),
            400,
            '"FETCH"',
            "Bundle.entry[1].request.method",
        ),
        (
            _bundle([GOOD_ENTRY, {"resource": PATIENT, "request": {"method": "PATCH", "url": "Patient/p1"}}]),
            400,
            "PATCH is not supported",
            "Bundle.entry[1].request.method",
        ),
        (
            _bundle([GOOD_ENTRY, {"resource": PATIENT, "request": {"method": "POST"}}]),
            400,
            "request.url",
            "Bundle.entry[1].request.url",
        ),
        (
            _bundle([GOOD_ENTRY, {"request": {"method": "POST", "url": "Patient"}}]),
            400,
            "resource is required for POST",
            "Bundle.entry[1].resource",
        ),
        (
            _bundle([GOOD_ENTRY, {"resource": PATIENT, "request": {"method": "POST", "url": "Patient/p1"}}]),
            400,
            "a POST (create) url is '[type]'",
            "Bundle.entry[1].request.url",
        ),
        (
            _bundle([GOOD_ENTRY, {"resource": PATIENT, "request": {"method": "PUT", "url": "Patient"}}]),
            400,
            "'[type]/[id]' or '[type]?[criteria]'",
            "Bundle.entry[1].request.url",
        ),
        (
            _bundle([GOOD_ENTRY, {"request": {"method": "GET", "url": "Patient/p1/$everything"}}]),
            400,
            "not supported inside a Bundle",
            "Bundle.entry[1].request.url",
        ),
        (
            _bundle([GOOD_ENTRY, {"resource": PATIENT, "request": {"method": "POST", "url": "Alien"}}]),
            404,
            "'Alien'",
            "Bundle.entry[1].request.url",
        ),
        (
            _bundle([GOOD_ENTRY, {"resource": PATIENT, "request": {"method": "POST", "url": "Observation"}}]),
            400,
            "does not match the URL type 'Observation'",
            "Bundle.entry[1].resource",
        ),
        (
            _bundle(
                [
                    GOOD_ENTRY,
                    {"resource": {"resourceType": "Alien"}, "request": {"method": "POST", "url": "Patient"}},
                ]
            ),
            400,
            "'Alien'",
            "Bundle.entry[1].resource",
        ),
        (
            _bundle(
                [
                    GOOD_ENTRY,
                    {"resource": PATIENT, "request": {"method": "POST", "url": "Patient"}, "note": "x"},
                ]
            ),
            400,
            "Unknown element 'note'",
            "Bundle.entry[1].note",
        ),
        (
            _bundle(
                [
                    GOOD_ENTRY,
                    {"fullUrl": 7, "resource": PATIENT, "request": {"method": "POST", "url": "Patient"}},
                ]
            ),
            400,
            "Bundle.entry[1].fullUrl",
            "Bundle.entry[1].fullUrl",
        ),
        (_bundle([GOOD_ENTRY, "entry"]), 400, "Bundle.entry[1]", "Bundle.entry[1]"),
        (
            _bundle(
                [
                    GOOD_ENTRY,
                    {
                        "resource": {**PATIENT, "id": "p1"},
                        "request": {"method": "PUT", "url": "Patient/p1", "ifMatch": "soon"},
                    },
                ]
            ),
            400,
            "ifMatch 'soon'",
            "Bundle.entry[1].request.ifMatch",
        ),
        (
            _bundle(
                [
                    GOOD_ENTRY,
                    {"resource": {**PATIENT, "id": "p2"}, "request": {"method": "PUT", "url": "Patient/p1"}},
                ]
            ),
            400,
            "does not match the URL id",
            "Bundle.entry[1].resource.id",
        ),
    ],
    ids=[
        "collection",
        "document",
        "no-type",
        "not-a-bundle",
        "no-resource-type",
        "entry-object",
        "entry-empty-object",
        "entry-string",
        "no-request",
        "bad-method",
        "patch",
        "no-url",
        "post-without-resource",
        "post-with-id-url",
        "put-without-id",
        "operation",
        "unknown-type-url",
        "type-mismatch",
        "unknown-type-body",
        "unknown-entry-element",
        "full-url-number",
        "entry-not-object",
        "bad-if-match",
        "put-id-mismatch",
    ],
)
def test_bad_transaction_is_rejected_whole(
    fhir: Fhir, body: dict[str, Any], status: int, diagnostics: str, expression: str | None
) -> None:
    assert_outcome(fhir.request("POST", "/fhir", body), status, diagnostics, expression)
    assert versions(fhir) == 0


def test_bad_batch_envelope_is_rejected_whole(fhir: Fhir) -> None:
    assert_outcome(fhir.request("POST", "/fhir", _bundle({}, "batch")), 400, "Bundle.entry must be an array")
    response = fhir.request("POST", "/fhir", _bundle([GOOD_ENTRY, {**GOOD_ENTRY, "oops": 1}], "batch"))
    assert_outcome(response, 400, "Unknown element 'oops'", "Bundle.entry[1].oops")
    assert versions(fhir) == 0


# -- unexpected failures ---------------------------------------------------------------------------


def test_unexpected_exception_is_500_without_internals(client: FlaskClient, database_url: str) -> None:
    app = create_app(Settings(database_url=database_url))
    app.config["TESTING"] = True

    def explode() -> None:
        raise RuntimeError("connection string postgresql://admin:hunter2@db")

    app.add_url_rule("/fhir-explode", "explode", explode)
    try:
        response = app.test_client().get("/fhir-explode", headers={"X-Request-ID": "req-4242"})
        outcome = assert_outcome(response, 500, "req-4242")
        text = response.get_data(as_text=True)
        assert "hunter2" not in text
        assert "RuntimeError" not in text
        assert "Traceback" not in text
        assert outcome["issue"][0]["code"] == "exception"
        assert response.headers["X-Request-ID"] == "req-4242"
        generated = app.test_client().get("/fhir-explode")
        assert generated.headers["X-Request-ID"] in generated.get_json()["issue"][0]["diagnostics"]
    finally:
        close_app(app)


def test_nul_character_in_a_string_is_400_on_both_databases(fhir: Fhir) -> None:
    body = b'{"resourceType": "Patient", "name": [{"family": "Nu\\u0000l"}]}'
    response = fhir.request("POST", "/fhir/Patient", body)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["Patient.name[0].family"]
    assert fhir.ids("Patient") == set()


def test_code_outside_a_complete_base_r4_required_binding_is_400(fhir: Fhir) -> None:
    response = fhir.request("POST", "/fhir/Patient", {"resourceType": "Patient", "gender": "nope"})
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["Patient.gender"]
    validated = fhir.request("POST", "/fhir/Patient/$validate", {"resourceType": "Patient", "gender": "nope"})
    assert validated.status_code == 200
    assert validated.get_json()["issue"][0]["severity"] == "error"
    assert fhir.ids("Patient") == set()


def test_abbreviated_model_code_lists_are_completed_for_r4(fhir: Fhir) -> None:
    task = {"resourceType": "Task", "intent": "order"}
    assert fhir.request("POST", "/fhir/Task", {**task, "status": "in-progress"}).status_code == 201
    refused = fhir.request("POST", "/fhir/Task", {**task, "status": "doing"})
    assert refused.status_code == 400
    assert refused.get_json()["issue"][0]["expression"] == ["Task.status"]
    encounter = {"resourceType": "Encounter", "class": {"code": "AMB"}}
    assert (
        fhir.request("POST", "/fhir/Encounter", {**encounter, "status": "entered-in-error"}).status_code
        == 201
    )
    assert fhir.request("POST", "/fhir/Encounter", {**encounter, "status": "discharged"}).status_code == 400
