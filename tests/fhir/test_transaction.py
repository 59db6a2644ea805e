"""transaction and batch Bundles over HTTP (R4 http.html#transaction, #trules, #brules)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import Fhir
from tests.factories import bundle_ok, delete_entry, get_entry, patient, post_entry, put_entry, send_bundle

DATA = Path(__file__).resolve().parent.parent / "data"
INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def mrn(value: str = "P1") -> dict[str, str]:
    """A medical record number: the identifier the conditional entries below search by."""
    return {"system": "urn:test:mrn", "value": value}


def observation(subject: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
        "subject": {"reference": subject},
        **extra,
    }


def read(fhir: Fhir, reference: str) -> dict[str, Any]:
    response = fhir.request("GET", f"/fhir/{reference}")
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def versions(fhir: Fhir) -> int:
    """Every version ever written (system history): unchanged means nothing was written."""
    total: int = fhir.request("GET", "/fhir/_history").get_json()["total"]
    return total


def ref_of(entry: dict[str, Any]) -> str:
    """Type/id from a response entry's location."""
    location: str = entry["response"]["location"]
    return "/".join(location.split("/fhir/", 1)[1].split("/")[:2])


def assert_outcome(response: Any, status: int, expression: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_json()
    body: dict[str, Any] = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["severity"] == "error"
    assert issue["diagnostics"]
    if expression is not None:
        assert expression in issue["expression"], issue
    return body


# -- transaction: response ---------------------------------------------------------------------


def test_transaction_response_has_one_entry_per_request_entry_in_request_order(fhir: Fhir) -> None:
    existing = fhir.create(patient(identifier=[mrn("OLD")]))
    pid = urn()
    body = bundle_ok(
        fhir,
        [
            get_entry(f"Patient/{existing['id']}"),
            put_entry({**existing, "gender": "female"}, f"Patient/{existing['id']}"),
            post_entry(observation(pid)),
            post_entry(patient(identifier=[mrn("NEW")]), pid),
            delete_entry("Patient/never-existed"),
        ],
    )
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["200 OK", "200 OK", "201 Created", "201 Created", "204 No Content"]
    assert body["entry"][0]["resource"]["id"] == existing["id"]
    assert body["entry"][1]["resource"]["gender"] == "female"
    assert body["entry"][2]["resource"]["resourceType"] == "Observation"
    assert body["entry"][3]["resource"]["resourceType"] == "Patient"


def test_transaction_response_entries_carry_location_etag_and_last_modified(fhir: Fhir) -> None:
    body = bundle_ok(fhir, [post_entry(patient(identifier=[mrn()]))])
    entry = body["entry"][0]
    created = entry["resource"]
    response = entry["response"]
    assert response["location"] == f"http://localhost/fhir/Patient/{created['id']}/_history/1"
    assert response["etag"] == 'W/"1"'
    assert INSTANT.match(response["lastModified"])
    assert response["lastModified"] == created["meta"]["lastUpdated"]
    assert entry["fullUrl"] == f"http://localhost/fhir/Patient/{created['id']}"
    assert read(fhir, f"Patient/{created['id']}") == created


def test_transaction_update_entry_reports_new_version(fhir: Fhir) -> None:
    existing = fhir.create(patient(identifier=[mrn()]))
    body = bundle_ok(
        fhir, [put_entry({**existing, "gender": "male"}, f"Patient/{existing['id']}", if_match='W/"1"')]
    )
    response = body["entry"][0]["response"]
    assert response["status"] == "200 OK"
    assert response["etag"] == 'W/"2"'
    assert response["location"].endswith(f"/Patient/{existing['id']}/_history/2")


def test_transaction_delete_entry_reports_outcome(fhir: Fhir) -> None:
    existing = fhir.create(patient(identifier=[mrn()]))
    body = bundle_ok(fhir, [delete_entry(f"Patient/{existing['id']}")])
    response = body["entry"][0]["response"]
    assert response["status"] == "200 OK"
    assert response["etag"] == 'W/"2"'
    assert response["outcome"]["resourceType"] == "OperationOutcome"
    assert "resource" not in body["entry"][0]
    assert fhir.request("GET", f"/fhir/Patient/{existing['id']}").status_code == 410


def test_empty_transaction_is_not_an_error(fhir: Fhir) -> None:
    body = bundle_ok(fhir, [])
    assert body["entry"] == []


def test_prefer_return_minimal_omits_resources(fhir: Fhir) -> None:
    existing = fhir.create(patient(identifier=[mrn("OLD")]))
    body = bundle_ok(
        fhir,
        [
            post_entry(patient(identifier=[mrn()])),
            put_entry({**existing, "active": True}, f"Patient/{existing['id']}"),
            get_entry(f"Patient/{existing['id']}"),
        ],
        Prefer="return=minimal",
    )
    for entry in body["entry"]:
        assert "resource" not in entry
        assert entry["response"]["etag"]
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created", "200 OK", "200 OK"]
    assert body["entry"][0]["response"]["location"]
    assert body["entry"][1]["response"]["location"].endswith("/_history/2")


def test_prefer_return_operation_outcome_gives_an_outcome_per_entry(fhir: Fhir) -> None:
    body = bundle_ok(fhir, [post_entry(patient(identifier=[mrn()]))], Prefer="return=OperationOutcome")
    entry = body["entry"][0]
    assert "resource" not in entry
    assert entry["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert entry["response"]["outcome"]["issue"][0]["severity"] == "information"


# -- transaction: processing order DELETE, POST, PUT, GET --------------------------------------


def test_get_in_the_same_transaction_sees_the_posted_resource(fhir: Fhir) -> None:
    body = bundle_ok(
        fhir,
        [get_entry("Patient?identifier=urn:test:mrn|SEEN"), post_entry(patient(identifier=[mrn("SEEN")]))],
    )
    searchset = body["entry"][0]["resource"]
    assert searchset["type"] == "searchset"
    assert searchset["total"] == 1
    assert searchset["entry"][0]["resource"]["id"] == body["entry"][1]["resource"]["id"]


def test_get_in_the_same_transaction_sees_the_updated_version(fhir: Fhir) -> None:
    existing = fhir.create(patient(identifier=[mrn()]))
    body = bundle_ok(
        fhir,
        [
            get_entry(f"Patient/{existing['id']}"),
            put_entry({**existing, "gender": "other"}, f"Patient/{existing['id']}"),
        ],
    )
    assert body["entry"][0]["resource"]["meta"]["versionId"] == "2"
    assert body["entry"][0]["resource"]["gender"] == "other"


def test_delete_runs_before_post_whatever_the_entry_order(fhir: Fhir) -> None:
    old = fhir.create(patient(identifier=[mrn("SAME")]))
    body = bundle_ok(
        fhir,
        [post_entry(patient(identifier=[mrn("SAME")])), delete_entry("Patient?identifier=urn:test:mrn|SAME")],
    )
    new_id = body["entry"][0]["resource"]["id"]
    assert body["entry"][1]["response"]["status"] == "200 OK"
    assert fhir.request("GET", f"/fhir/Patient/{old['id']}").status_code == 410
    assert fhir.ids("Patient?identifier=urn:test:mrn|SAME") == {new_id}


def test_delete_runs_before_a_conditional_create_of_the_same_identifier(fhir: Fhir) -> None:
    old = fhir.create(patient(identifier=[mrn("AGAIN")]))
    body = bundle_ok(
        fhir,
        [
            post_entry(patient(identifier=[mrn("AGAIN")]), if_none_exist="identifier=urn:test:mrn|AGAIN"),
            delete_entry(f"Patient/{old['id']}"),
        ],
    )
    assert body["entry"][0]["response"]["status"] == "201 Created"
    assert body["entry"][0]["resource"]["id"] != old["id"]


# -- transaction: all or nothing ---------------------------------------------------------------


def _failing_entry(kind: str, fhir: Fhir) -> tuple[Any, int, str]:
    """(entry, status, FHIRPath of the faulty element) for each way an entry can fail."""
    if kind == "invalid-resource":
        return post_entry(patient(identifier=[mrn("X")], gender=12)), 400, "Bundle.entry[3].resource.gender"
    if kind == "if-match-mismatch":
        target = fhir.create(patient(identifier=[mrn("IFM")]))
        return (
            put_entry({**target, "active": False}, f"Patient/{target['id']}", if_match='W/"9"'),
            412,
            "Bundle.entry[3]",
        )
    if kind == "unknown-urn-reference":
        return post_entry(observation(urn())), 400, "Bundle.entry[3].resource.subject.reference"
    if kind == "conditional-reference-no-match":
        return (
            post_entry(observation("Patient?identifier=urn:test:mrn|NOBODY")),
            412,
            "Bundle.entry[3].resource.subject.reference",
        )
    if kind == "conditional-reference-two-matches":
        fhir.create(patient(identifier=[mrn("TWIN")]))
        fhir.create(patient(identifier=[mrn("TWIN")]))
        return (
            post_entry(observation("Patient?identifier=urn:test:mrn|TWIN")),
            412,
            "Bundle.entry[3].resource.subject.reference",
        )
    if kind == "conditional-update-two-matches":
        fhir.create(patient(identifier=[mrn("DUP")]))
        fhir.create(patient(identifier=[mrn("DUP")]))
        return (
            put_entry(patient(identifier=[mrn("DUP")]), "Patient?identifier=urn:test:mrn|DUP"),
            412,
            "Bundle.entry[3]",
        )
    assert kind == "unknown-resource-read"
    return get_entry("Patient/does-not-exist"), 404, "Bundle.entry[3]"


@pytest.mark.parametrize(
    "kind",
    [
        "invalid-resource",
        "if-match-mismatch",
        "unknown-urn-reference",
        "conditional-reference-no-match",
        "conditional-reference-two-matches",
        "conditional-update-two-matches",
        "unknown-resource-read",
    ],
)
def test_a_failing_entry_rolls_back_every_other_entry(fhir: Fhir, kind: str) -> None:
    doomed = fhir.create(patient(identifier=[mrn("DOOMED")]))
    kept = fhir.create(patient(identifier=[mrn("KEPT")]))
    failing, status, expression = _failing_entry(kind, fhir)
    before = versions(fhir)
    pid = urn()
    response = send_bundle(
        fhir,
        [
            delete_entry(f"Patient/{doomed['id']}"),
            put_entry({**kept, "gender": "female"}, f"Patient/{kept['id']}"),
            post_entry(patient(identifier=[mrn("ROLLED-BACK")]), pid),
            failing,
            post_entry(observation(pid)),
        ],
    )
    assert_outcome(response, status, expression)
    assert versions(fhir) == before
    assert read(fhir, f"Patient/{doomed['id']}")["meta"]["versionId"] == "1"
    assert "gender" not in read(fhir, f"Patient/{kept['id']}")
    assert fhir.ids("Patient?identifier=urn:test:mrn|ROLLED-BACK") == set()
    assert fhir.ids("Observation") == set()


def test_failure_names_the_entry_in_the_diagnostics(fhir: Fhir) -> None:
    response = send_bundle(
        fhir,
        [
            post_entry(patient(identifier=[mrn()])),
            post_entry(observation("urn:uuid:0a0a0a0a-0000-0000-0000-000000000000")),
        ],
    )
    outcome = assert_outcome(response, 400, "Bundle.entry[1].resource.subject.reference")
    assert "Bundle.entry[1]" in outcome["issue"][0]["diagnostics"]
    assert "urn:uuid:0a0a0a0a-0000-0000-0000-000000000000" in outcome["issue"][0]["diagnostics"]


def test_a_resource_may_appear_only_once(fhir: Fhir) -> None:
    existing = fhir.create(patient(identifier=[mrn()]))
    before = versions(fhir)
    response = send_bundle(
        fhir,
        [
            delete_entry(f"Patient/{existing['id']}"),
            put_entry({**existing, "active": True}, f"Patient/{existing['id']}"),
        ],
    )
    assert_outcome(response, 400, "Bundle.entry[1]")
    assert versions(fhir) == before


def test_an_identity_resolved_by_a_conditional_update_may_appear_only_once(fhir: Fhir) -> None:
    existing = fhir.create(patient(identifier=[mrn("BOTH")]))
    before = versions(fhir)
    response = send_bundle(
        fhir,
        [
            put_entry(patient(identifier=[mrn("BOTH")], active=True), "Patient?identifier=urn:test:mrn|BOTH"),
            put_entry({**existing, "active": False}, f"Patient/{existing['id']}"),
        ],
    )
    outcome = assert_outcome(response, 400, "Bundle.entry[1]")
    assert f"Patient/{existing['id']}" in outcome["issue"][0]["diagnostics"]
    assert versions(fhir) == before


def test_two_conditional_creates_of_the_same_resource_fail(fhir: Fhir) -> None:
    criteria = "identifier=urn:test:mrn|TWICE"
    response = send_bundle(
        fhir,
        [
            post_entry(patient(identifier=[mrn("TWICE")]), if_none_exist=criteria),
            post_entry(patient(identifier=[mrn("TWICE")]), if_none_exist=criteria),
        ],
    )
    assert_outcome(response, 400, "Bundle.entry[1].request.ifNoneExist")
    assert versions(fhir) == 0


# -- transaction: urn:uuid and other links -----------------------------------------------------


def test_urn_uuid_references_are_rewritten_at_every_depth(fhir: Fhir) -> None:
    pid, eid, oid, sid, cid = urn(), urn(), urn(), urn(), urn()
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": pid},
        "diagnosis": [{"condition": {"reference": cid}}],  # circular with Condition.encounter
    }
    condition = {
        "resourceType": "Condition",
        "code": {"text": "hypertension"},
        "subject": {"reference": pid},
        "encounter": {"reference": eid},
    }
    obs = observation(
        pid,
        encounter={"reference": eid},
        extension=[
            {
                "url": "http://example.org/fhir/StructureDefinition/origin",
                "valueReference": {"reference": eid},
            },
            {
                "url": "http://example.org/fhir/StructureDefinition/nested",
                "extension": [{"url": "about", "valueReference": {"reference": pid}}],
            },
        ],
    )
    service_request = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": pid},
    }
    care_plan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": pid},
        "encounter": {"reference": eid},
        "activity": [{"reference": {"reference": sid}}],
        "supportingInfo": [{"reference": oid}],
    }
    body = bundle_ok(
        fhir,
        [
            post_entry(care_plan),
            post_entry(obs, oid),
            post_entry(condition, cid),
            post_entry(service_request, sid),
            post_entry(encounter, eid),
            post_entry(patient(identifier=[mrn()]), pid),
        ],
    )
    ids = {e["resource"]["resourceType"]: e["resource"]["id"] for e in body["entry"]}
    p, e, o, s, c = (
        f"Patient/{ids['Patient']}",
        f"Encounter/{ids['Encounter']}",
        f"Observation/{ids['Observation']}",
        f"ServiceRequest/{ids['ServiceRequest']}",
        f"Condition/{ids['Condition']}",
    )
    stored_encounter = read(fhir, e)
    assert stored_encounter["subject"]["reference"] == p
    assert stored_encounter["diagnosis"][0]["condition"]["reference"] == c
    stored_condition = read(fhir, c)
    assert stored_condition["encounter"]["reference"] == e
    stored_obs = read(fhir, o)
    assert stored_obs["subject"]["reference"] == p
    assert stored_obs["encounter"]["reference"] == e
    assert stored_obs["extension"][0]["valueReference"]["reference"] == e
    assert stored_obs["extension"][1]["extension"][0]["valueReference"]["reference"] == p
    stored_plan = read(fhir, f"CarePlan/{ids['CarePlan']}")
    assert stored_plan["activity"][0]["reference"]["reference"] == s
    assert stored_plan["supportingInfo"][0]["reference"] == o
    assert stored_plan["encounter"]["reference"] == e
    # the rewritten references are indexed: searches follow them
    assert fhir.ids(f"Observation?encounter={e}") == {ids["Observation"]}
    assert fhir.ids(f"Encounter?subject={p}") == {ids["Encounter"]}


def test_urn_uuid_is_replaced_in_uri_elements_and_narrative_but_not_canonical_or_string(fhir: Fhir) -> None:
    pid = urn()
    document = {
        "resourceType": "DocumentReference",
        "status": "current",
        "text": {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{pid}">patient</a></div>',
        },
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": pid},  # a string: not a link
        "subject": {"reference": pid},
        "content": [{"attachment": {"contentType": "application/fhir+json", "url": pid}}],
        "context": {"related": [{"reference": "#prov"}]},  # dom-3: a contained resource is referenced
        "contained": [
            {
                "resourceType": "Provenance",
                "id": "prov",
                "target": [{"reference": pid}],
                "recorded": "2024-01-02T03:04:05Z",
                "policy": [pid],
                "agent": [{"who": {"reference": pid}}],
            }
        ],
    }
    plan = {
        "resourceType": "CarePlan",
        "status": "draft",
        "intent": "proposal",
        "subject": {"reference": pid},
        "instantiatesCanonical": [pid],  # canonical: never replaced
        "instantiatesUri": [pid],
    }
    body = bundle_ok(
        fhir, [post_entry(document), post_entry(plan), post_entry(patient(identifier=[mrn()]), pid)]
    )
    p = f"Patient/{body['entry'][2]['resource']['id']}"
    stored = read(fhir, f"DocumentReference/{body['entry'][0]['resource']['id']}")
    assert f'href="{p}"' in stored["text"]["div"]
    assert stored["content"][0]["attachment"]["url"] == p
    assert stored["masterIdentifier"]["value"] == pid
    assert stored["contained"][0]["target"][0]["reference"] == p
    assert stored["contained"][0]["policy"] == [p]
    assert stored["contained"][0]["agent"][0]["who"]["reference"] == p
    stored_plan = read(fhir, f"CarePlan/{body['entry'][1]['resource']['id']}")
    assert stored_plan["instantiatesCanonical"] == [pid]
    assert stored_plan["instantiatesUri"] == [p]


def test_put_full_url_maps_to_the_updated_resource(fhir: Fhir) -> None:
    full_url = "http://other.example.org/fhir/Patient/kept-id"
    body = bundle_ok(
        fhir,
        [
            post_entry(observation(full_url)),
            put_entry(patient(identifier=[mrn()], id="kept-id"), "Patient/kept-id", full_url),
        ],
    )
    assert body["entry"][1]["response"]["status"] == "201 Created"
    assert body["entry"][0]["resource"]["subject"]["reference"] == "Patient/kept-id"


def test_relative_reference_is_resolved_against_the_entry_full_url(fhir: Fhir) -> None:
    body = bundle_ok(
        fhir,
        [
            post_entry(observation("Patient/temp-1"), "http://example.org/fhir/Observation/temp-2"),
            post_entry(patient(identifier=[mrn()], id="temp-1"), "http://example.org/fhir/Patient/temp-1"),
        ],
    )
    new_id = body["entry"][1]["resource"]["id"]
    assert new_id != "temp-1"  # POST ignores the client's id
    assert body["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{new_id}"


def test_references_outside_the_bundle_are_left_untouched(fhir: Fhir) -> None:
    body = bundle_ok(
        fhir,
        [post_entry(observation("Patient/elsewhere", focus=[{"reference": "http://x.org/fhir/Group/1"}]))],
    )
    resource = body["entry"][0]["resource"]
    assert resource["subject"]["reference"] == "Patient/elsewhere"
    assert resource["focus"][0]["reference"] == "http://x.org/fhir/Group/1"


# -- transaction: conditional create, update and references ------------------------------------


def test_if_none_exist_with_a_match_returns_200_and_references_point_to_it(fhir: Fhir) -> None:
    existing = fhir.create(
        {"resourceType": "Organization", "identifier": [{"system": "urn:org", "value": "CH"}]}
    )
    oid = urn()
    body = bundle_ok(
        fhir,
        [
            post_entry(
                {
                    "resourceType": "Organization",
                    "identifier": [{"system": "urn:org", "value": "CH"}],
                    "name": "new",
                },
                oid,
                if_none_exist="Organization?identifier=urn:org|CH",
            ),
            post_entry(patient(identifier=[mrn()], managingOrganization={"reference": oid})),
        ],
    )
    org_entry = body["entry"][0]
    assert org_entry["response"]["status"] == "200 OK"
    assert org_entry["resource"]["id"] == existing["id"]
    assert "name" not in org_entry["resource"]  # the existing resource is not modified
    assert (
        body["entry"][1]["resource"]["managingOrganization"]["reference"] == f"Organization/{existing['id']}"
    )
    assert fhir.ids("Organization") == {existing["id"]}


def test_if_none_exist_without_a_match_creates(fhir: Fhir) -> None:
    body = bundle_ok(
        fhir, [post_entry(patient(identifier=[mrn("FRESH")]), if_none_exist="identifier=urn:test:mrn|FRESH")]
    )
    assert body["entry"][0]["response"]["status"] == "201 Created"
    assert fhir.ids("Patient?identifier=urn:test:mrn|FRESH") == {body["entry"][0]["resource"]["id"]}


def test_if_none_exist_with_two_matches_fails(fhir: Fhir) -> None:
    fhir.create(patient(identifier=[mrn("MANY")]))
    fhir.create(patient(identifier=[mrn("MANY")]))
    before = versions(fhir)
    response = send_bundle(
        fhir,
        [
            post_entry(patient(identifier=[mrn()])),
            post_entry(patient("MANY"), if_none_exist="identifier=urn:test:mrn|MANY"),
        ],
    )
    assert_outcome(response, 412, "Bundle.entry[1].request.ifNoneExist")
    assert versions(fhir) == before


def test_conditional_put_updates_the_match_and_maps_its_full_url(fhir: Fhir) -> None:
    existing = fhir.create(patient(identifier=[mrn("COND")]))
    pid = urn()
    body = bundle_ok(
        fhir,
        [
            put_entry(
                patient(identifier=[mrn("COND")], gender="female"),
                "Patient?identifier=urn:test:mrn|COND",
                pid,
            ),
            post_entry(observation(pid)),
        ],
    )
    assert body["entry"][0]["response"]["status"] == "200 OK"
    assert body["entry"][0]["resource"]["id"] == existing["id"]
    assert body["entry"][0]["resource"]["meta"]["versionId"] == "2"
    assert body["entry"][1]["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"


def test_conditional_put_without_a_match_creates(fhir: Fhir) -> None:
    body = bundle_ok(
        fhir, [put_entry(patient(identifier=[mrn("NONE-YET")]), "Patient?identifier=urn:test:mrn|NONE-YET")]
    )
    assert body["entry"][0]["response"]["status"] == "201 Created"
    assert fhir.ids("Patient?identifier=urn:test:mrn|NONE-YET") == {body["entry"][0]["resource"]["id"]}


def test_conditional_put_with_a_different_body_id_fails(fhir: Fhir) -> None:
    fhir.create(patient(identifier=[mrn("IDS")]))
    before = versions(fhir)
    response = send_bundle(
        fhir, [put_entry(patient(identifier=[mrn("IDS")], id="other"), "Patient?identifier=urn:test:mrn|IDS")]
    )
    assert_outcome(response, 400, "Bundle.entry[0].resource.id")
    assert versions(fhir) == before


def test_conditional_reference_is_resolved(fhir: Fhir) -> None:
    practitioner = fhir.create(
        {
            "resourceType": "Practitioner",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "42"}],
        }
    )
    reference = "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|42"
    body = bundle_ok(fhir, [post_entry(observation("Patient/x", performer=[{"reference": reference}]))])
    assert body["entry"][0]["resource"]["performer"][0]["reference"] == f"Practitioner/{practitioner['id']}"


def test_conditional_reference_finds_a_resource_created_by_the_same_transaction(fhir: Fhir) -> None:
    organization = {"resourceType": "Organization", "identifier": [{"system": "urn:org", "value": "NEW"}]}
    body = bundle_ok(
        fhir,
        [
            post_entry(
                patient(
                    identifier=[mrn()],
                    managingOrganization={"reference": "Organization?identifier=urn:org|NEW"},
                )
            ),
            post_entry(organization, if_none_exist="identifier=urn:org|NEW"),
        ],
    )
    org_id = body["entry"][1]["resource"]["id"]
    assert body["entry"][0]["resource"]["managingOrganization"]["reference"] == f"Organization/{org_id}"


# -- batch --------------------------------------------------------------------------------------


def test_batch_entries_succeed_or_fail_on_their_own(fhir: Fhir) -> None:
    stale = fhir.create(patient(identifier=[mrn("STALE")]))
    gone = fhir.create(patient(identifier=[mrn("GONE")]))
    body = bundle_ok(
        fhir,
        [
            post_entry(patient(identifier=[mrn("GOOD")])),
            post_entry(patient(identifier=[mrn("BAD")], gender=12)),
            put_entry({**stale, "active": True}, f"Patient/{stale['id']}", if_match='W/"5"'),
            get_entry("Patient/nope"),
            delete_entry(f"Patient/{gone['id']}"),
            {"request": {"method": "FETCH", "url": "Patient"}},
        ],
        kind="batch",
    )
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == [
        "201 Created",
        "400 Bad Request",
        "412 Precondition Failed",
        "404 Not Found",
        "200 OK",
        "400 Bad Request",
    ]
    for index in (1, 2, 3, 5):
        outcome = body["entry"][index]["response"]["outcome"]
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["severity"] == "error"
        assert f"Bundle.entry[{index}]" in outcome["issue"][0]["diagnostics"]
        assert "resource" not in body["entry"][index]
    assert body["entry"][1]["response"]["outcome"]["issue"][0]["expression"] == [
        "Bundle.entry[1].resource.gender"
    ]
    assert body["entry"][5]["response"]["outcome"]["issue"][0]["expression"] == [
        "Bundle.entry[5].request.method"
    ]
    assert fhir.ids("Patient?identifier=urn:test:mrn|GOOD") == {body["entry"][0]["resource"]["id"]}
    assert fhir.ids("Patient?identifier=urn:test:mrn|BAD") == set()
    assert "active" not in read(fhir, f"Patient/{stale['id']}")
    assert fhir.request("GET", f"/fhir/Patient/{gone['id']}").status_code == 410


def test_batch_entries_may_not_reference_each_other(fhir: Fhir) -> None:
    pid = urn()
    body = bundle_ok(
        fhir, [post_entry(patient(identifier=[mrn()]), pid), post_entry(observation(pid))], kind="batch"
    )
    assert body["entry"][0]["response"]["status"] == "201 Created"
    failed = body["entry"][1]["response"]
    assert failed["status"] == "400 Bad Request"
    assert failed["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1].resource.subject.reference"]
    assert fhir.ids("Observation") == set()


def test_batch_refuses_conditional_references(fhir: Fhir) -> None:
    fhir.create(patient(identifier=[mrn("ONLY")]))
    body = bundle_ok(fhir, [post_entry(observation("Patient?identifier=urn:test:mrn|ONLY"))], kind="batch")
    assert body["entry"][0]["response"]["status"] == "400 Bad Request"
    assert "only in a transaction" in body["entry"][0]["response"]["outcome"]["issue"][0]["diagnostics"]


def test_batch_prefer_return_minimal_omits_resources(fhir: Fhir) -> None:
    body = bundle_ok(
        fhir,
        [post_entry(patient(identifier=[mrn()])), post_entry(patient("OTHER"))],
        kind="batch",
        Prefer="return=minimal",
    )
    assert all("resource" not in e for e in body["entry"])
    assert all(e["response"]["status"] == "201 Created" for e in body["entry"])


# -- a Synthea transaction bundle --------------------------------------------------------------


def _synthea() -> dict[str, Any]:
    bundle: dict[str, Any] = orjson.loads((DATA / "synthea_transaction.json").read_bytes())
    return bundle


def test_synthea_bundle_loads_with_every_reference_resolved(fhir: Fhir) -> None:
    response = fhir.request("POST", "/fhir", _synthea())
    assert response.status_code == 200, response.get_json()
    entries = response.get_json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["201 Created"] * 7
    refs = {e["resource"]["resourceType"]: ref_of(e) for e in entries}
    encounter = read(fhir, refs["Encounter"])
    assert encounter["subject"]["reference"] == refs["Patient"]
    assert encounter["serviceProvider"]["reference"] == refs["Organization"]
    assert encounter["participant"][0]["individual"]["reference"] == refs["Practitioner"]
    condition = read(fhir, refs["Condition"])
    assert condition["encounter"]["reference"] == refs["Encounter"]
    observation_ = read(fhir, refs["Observation"])
    assert observation_["performer"][0]["reference"] == refs["Practitioner"]
    provenance = read(fhir, refs["Provenance"])
    assert [t["reference"] for t in provenance["target"]] == [
        refs["Patient"],
        refs["Encounter"],
        refs["Condition"],
        refs["Observation"],
    ]
    assert provenance["agent"][0]["onBehalfOf"]["reference"] == refs["Organization"]
    assert read(fhir, refs["Patient"])["id"] != "b426b062-8273-4b93-a907-de3176c0567d"  # server-assigned
    patient_id = refs["Patient"].split("/")[1]
    assert len(fhir.ids(f"Observation?subject=Patient/{patient_id}&code=http://loinc.org|8302-2")) == 1
    assert len(fhir.ids(f"Encounter?service-provider={refs['Organization']}")) == 1


def test_synthea_bundle_loaded_twice_reuses_organization_and_practitioner(fhir: Fhir) -> None:
    first = fhir.request("POST", "/fhir", _synthea()).get_json()["entry"]
    second_response = fhir.request("POST", "/fhir", _synthea())
    assert second_response.status_code == 200, second_response.get_json()
    second = second_response.get_json()["entry"]
    assert [e["response"]["status"] for e in second[:2]] == ["200 OK", "200 OK"]
    assert [ref_of(e) for e in second[:2]] == [ref_of(e) for e in first[:2]]
    assert [e["response"]["status"] for e in second[2:]] == ["201 Created"] * 5
    encounter = read(fhir, ref_of(second[3]))
    assert encounter["serviceProvider"]["reference"] == ref_of(first[0])
    assert encounter["participant"][0]["individual"]["reference"] == ref_of(first[1])
    assert len(fhir.ids("Organization")) == 1
    assert len(fhir.ids("Practitioner")) == 1
    assert len(fhir.ids("Patient")) == 2
