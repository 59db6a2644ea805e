"""A UTF-8 byte order mark before a JSON body is ignored (RFC 8259 section 8.1), on every JSON entry point."""

from __future__ import annotations

import orjson

from tests.conftest import Fhir

BOM = b"\xef\xbb\xbf"


def with_bom(body: object) -> bytes:
    return BOM + orjson.dumps(body)


def test_create_and_update_accept_a_bom(fhir: Fhir) -> None:
    created = fhir.request("POST", "/fhir/Patient", with_bom({"resourceType": "Patient", "gender": "male"}))
    assert created.status_code == 201, created.get_json()
    res_id = created.get_json()["id"]
    body = {"resourceType": "Patient", "id": res_id, "gender": "female"}
    assert fhir.request("PUT", f"/fhir/Patient/{res_id}", with_bom(body)).status_code == 200


def test_json_patch_accepts_a_bom(fhir: Fhir) -> None:
    created = fhir.create({"resourceType": "Patient", "gender": "male"})
    patch = [{"op": "replace", "path": "/gender", "value": "female"}]
    response = fhir.client.patch(
        f"/fhir/Patient/{created['id']}",
        data=with_bom(patch),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["gender"] == "female"


def test_transaction_accepts_a_bom(fhir: Fhir) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}],
    }
    response = fhir.request("POST", "/fhir", with_bom(bundle))
    assert response.status_code == 200, response.get_json()


def test_validate_accepts_a_bom(fhir: Fhir) -> None:
    response = fhir.request("POST", "/fhir/Patient/$validate", with_bom({"resourceType": "Patient"}))
    assert response.status_code == 200
    assert response.get_json()["issue"][0]["severity"] == "information"


def test_a_bom_alone_is_an_empty_body(fhir: Fhir) -> None:
    response = fhir.request("POST", "/fhir/Patient", BOM)
    assert response.status_code == 400
    assert "empty" in response.get_json()["issue"][0]["diagnostics"]


def test_a_bom_in_the_middle_is_still_invalid_json(fhir: Fhir) -> None:
    response = fhir.request("POST", "/fhir/Patient", b'{"resourceType":' + BOM + b'"Patient"}')
    assert response.status_code == 400
