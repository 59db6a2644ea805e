"""create / read / vread / update / delete / history over HTTP (R4 http.html)."""

from __future__ import annotations

from tests.conftest import Fhir

PATIENT = {
    "resourceType": "Patient",
    "name": [{"family": "Dupont", "given": ["Jean"]}],
    "gender": "male",
    "birthDate": "1950-02-03",
}


def test_create_returns_201_with_location_etag_and_server_id(fhir: Fhir) -> None:
    response = fhir.request("POST", "/fhir/Patient", {**PATIENT, "id": "client-chosen"})
    assert response.status_code == 201
    body = response.get_json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Location"].endswith(f"/fhir/Patient/{body['id']}/_history/1")
    assert response.headers["Last-Modified"].endswith("GMT")
    assert response.headers["Content-Type"].startswith("application/fhir+json")


def test_read_serves_what_was_stored(fhir: Fhir) -> None:
    created = fhir.create(PATIENT)
    response = fhir.request("GET", f"/fhir/Patient/{created['id']}")
    assert response.status_code == 200
    assert response.get_json() == created
    assert response.headers["ETag"] == 'W/"1"'


def test_read_unknown_is_404_operation_outcome(fhir: Fhir) -> None:
    response = fhir.request("GET", "/fhir/Patient/nope")
    assert response.status_code == 404
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_update_increments_version_and_vread_returns_old_one(fhir: Fhir) -> None:
    created = fhir.create(PATIENT)
    pid = created["id"]
    changed = {**created, "gender": "female"}
    response = fhir.request("PUT", f"/fhir/Patient/{pid}", changed)
    assert response.status_code == 200
    assert response.get_json()["meta"]["versionId"] == "2"
    assert response.headers["ETag"] == 'W/"2"'
    old = fhir.request("GET", f"/fhir/Patient/{pid}/_history/1").get_json()
    assert old["gender"] == "male"
    assert fhir.request("GET", f"/fhir/Patient/{pid}/_history/3").status_code == 404


def test_update_as_create_returns_201(fhir: Fhir) -> None:
    response = fhir.request("PUT", "/fhir/Patient/chosen-id", {**PATIENT, "id": "chosen-id"})
    assert response.status_code == 201
    assert fhir.request("GET", "/fhir/Patient/chosen-id").status_code == 200


def test_update_with_wrong_if_match_is_412(fhir: Fhir) -> None:
    created = fhir.create(PATIENT)
    pid = created["id"]
    stale = fhir.request("PUT", f"/fhir/Patient/{pid}", created, If_Match='W/"7"')
    assert stale.status_code == 412
    ok = fhir.request("PUT", f"/fhir/Patient/{pid}", created, If_Match='W/"1"')
    assert ok.status_code == 200


def test_update_id_mismatch_and_missing_id_are_400(fhir: Fhir) -> None:
    created = fhir.create(PATIENT)
    assert (
        fhir.request("PUT", f"/fhir/Patient/{created['id']}", {**PATIENT, "id": "other"}).status_code == 400
    )
    assert fhir.request("PUT", f"/fhir/Patient/{created['id']}", PATIENT).status_code == 400


def test_delete_then_read_is_410_and_history_keeps_versions(fhir: Fhir) -> None:
    created = fhir.create(PATIENT)
    pid = created["id"]
    assert fhir.request("DELETE", f"/fhir/Patient/{pid}").status_code == 204
    assert fhir.request("GET", f"/fhir/Patient/{pid}").status_code == 410
    assert fhir.request("DELETE", f"/fhir/Patient/{pid}").status_code == 204
    history = fhir.request("GET", f"/fhir/Patient/{pid}/_history").get_json()
    assert history["type"] == "history"
    assert history["total"] == 2
    assert history["entry"][0]["request"]["method"] == "DELETE"
    assert "resource" not in history["entry"][0]
    assert fhir.ids("Patient") == set()


def test_conditional_read_304(fhir: Fhir) -> None:
    created = fhir.create(PATIENT)
    url = f"/fhir/Patient/{created['id']}"
    assert fhir.request("GET", url, If_None_Match='W/"1"').status_code == 304
    assert fhir.request("GET", url, If_None_Match='W/"0"').status_code == 200
    last_modified = fhir.request("GET", url).headers["Last-Modified"]
    assert fhir.request("GET", url, If_Modified_Since=last_modified).status_code == 304
    assert fhir.request("GET", url, If_Modified_Since="Mon, 01 Jan 2001 00:00:00 GMT").status_code == 200


def test_prefer_return_minimal_and_operation_outcome(fhir: Fhir) -> None:
    minimal = fhir.request("POST", "/fhir/Patient", PATIENT, Prefer="return=minimal")
    assert minimal.status_code == 201
    assert minimal.data == b""
    assert minimal.headers["Location"]
    outcome = fhir.request("POST", "/fhir/Patient", PATIENT, Prefer="return=OperationOutcome")
    assert outcome.get_json()["resourceType"] == "OperationOutcome"


def test_conditional_create(fhir: Fhir) -> None:
    body = {**PATIENT, "identifier": [{"system": "urn:test", "value": "A1"}]}
    first = fhir.request("POST", "/fhir/Patient", body, If_None_Exist="identifier=urn:test|A1")
    assert first.status_code == 201
    again = fhir.request("POST", "/fhir/Patient", body, If_None_Exist="identifier=urn:test|A1")
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    fhir.create({**PATIENT, "identifier": [{"system": "urn:test", "value": "A1"}]})
    many = fhir.request("POST", "/fhir/Patient", body, If_None_Exist="identifier=urn:test|A1")
    assert many.status_code == 412


def test_conditional_update_and_delete(fhir: Fhir) -> None:
    body = {**PATIENT, "identifier": [{"system": "urn:test", "value": "B2"}]}
    created = fhir.request("PUT", "/fhir/Patient?identifier=urn:test|B2", body)
    assert created.status_code == 201
    pid = created.get_json()["id"]
    updated = fhir.request("PUT", "/fhir/Patient?identifier=urn:test|B2", {**body, "gender": "female"})
    assert updated.status_code == 200
    assert updated.get_json()["id"] == pid
    assert fhir.request("DELETE", "/fhir/Patient?identifier=urn:test|B2").status_code == 204
    assert fhir.request("GET", f"/fhir/Patient/{pid}").status_code == 410


def test_summary_and_elements_on_read(fhir: Fhir) -> None:
    created = fhir.create(
        {
            **PATIENT,
            "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'},
            "photo": [{"contentType": "image/png"}],
        }
    )
    url = f"/fhir/Patient/{created['id']}"
    summary = fhir.request("GET", url + "?_summary=true").get_json()
    assert "photo" not in summary and "name" in summary
    assert any(t["code"] == "SUBSETTED" for t in summary["meta"]["tag"])
    elements = fhir.request("GET", url + "?_elements=gender").get_json()
    assert set(elements) == {"resourceType", "id", "meta", "gender"}


def test_history_type_and_system_level_with_paging(fhir: Fhir) -> None:
    for _ in range(5):
        fhir.create(PATIENT)
    page = fhir.request("GET", "/fhir/Patient/_history?_count=2").get_json()
    assert page["total"] == 5
    assert len(page["entry"]) == 2
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    fhir.create(PATIENT)  # inserted while paging: not seen by this paging session
    second = fhir.request("GET", next_url.split("localhost", 1)[1]).get_json()
    assert second["total"] == 5
    assert fhir.request("GET", "/fhir/_history").get_json()["total"] == 6


def test_pretty_and_format(fhir: Fhir) -> None:
    created = fhir.create(PATIENT)
    pretty = fhir.request("GET", f"/fhir/Patient/{created['id']}?_pretty=true")
    assert b"\n  " in pretty.data
    assert fhir.request("GET", f"/fhir/Patient/{created['id']}?_format=json").status_code == 200
    assert fhir.request("GET", f"/fhir/Patient/{created['id']}?_format=xml").status_code == 406


def test_delete_with_prefer_operation_outcome_is_200_with_the_outcome(fhir: Fhir) -> None:
    created = fhir.create(PATIENT)
    response = fhir.request("DELETE", f"/fhir/Patient/{created['id']}", Prefer="return=OperationOutcome")
    assert response.status_code == 200
    assert response.get_json()["issue"][0]["code"] == "informational"
    again = fhir.request("DELETE", f"/fhir/Patient/{created['id']}")
    assert again.status_code == 204
    assert again.data == b""


def test_head_is_a_safe_read_and_never_deletes(fhir: Fhir) -> None:
    created = fhir.create(PATIENT)
    url = f"/fhir/Patient/{created['id']}"
    head = fhir.request("HEAD", url)
    assert head.status_code == 200
    assert head.headers["ETag"] == 'W/"1"'
    assert fhir.request("HEAD", f"/fhir/Patient?_id={created['id']}").status_code == 200
    assert fhir.request("GET", url).status_code == 200
    assert fhir.request("GET", f"{url}/_history").get_json()["total"] == 1


def test_empty_responses_carry_no_html_content_type(fhir: Fhir) -> None:
    created = fhir.create(PATIENT)
    deleted = fhir.request("DELETE", f"/fhir/Patient/{created['id']}")
    assert deleted.status_code == 204
    assert "text/html" not in deleted.headers.get("Content-Type", "")
    minimal = fhir.request("POST", "/fhir/Patient", PATIENT, Prefer="return=minimal")
    assert "Content-Type" not in minimal.headers


def test_update_as_create_is_recorded_as_put_in_history(fhir: Fhir) -> None:
    fhir.request("PUT", "/fhir/Patient/chosen-2", {**PATIENT, "id": "chosen-2"})
    entry = fhir.request("GET", "/fhir/Patient/chosen-2/_history").get_json()["entry"][0]
    assert entry["request"] == {"method": "PUT", "url": "Patient/chosen-2"}
    assert entry["response"]["status"] == "201 Created"
