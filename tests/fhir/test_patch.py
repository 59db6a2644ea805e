"""PATCH with JSON Patch (R4 http.html#patch, RFC 6902)."""

from __future__ import annotations

from typing import Any

import orjson

from tests.conftest import Fhir

JSON_PATCH = "application/json-patch+json"


def patch(fhir: Fhir, url: str, operations: Any, **headers: str) -> Any:
    return fhir.request("PATCH", url, orjson.dumps(operations), **{"Content-Type": JSON_PATCH, **headers})


def test_patch_applies_operations_and_creates_a_version(fhir: Fhir) -> None:
    task = fhir.create({"resourceType": "Task", "status": "requested", "intent": "order"})
    url = f"/fhir/Task/{task['id']}"
    response = patch(
        fhir,
        url,
        [
            {"op": "replace", "path": "/status", "value": "accepted"},
            {"op": "add", "path": "/businessStatus", "value": {"text": "IDEL confirmée"}},
        ],
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "accepted" and body["businessStatus"]["text"] == "IDEL confirmée"
    assert body["meta"]["versionId"] == "2"
    assert response.headers["ETag"] == 'W/"2"'
    assert fhir.ids("Task?status=accepted") == {task["id"]}
    history = fhir.request("GET", f"{url}/_history").get_json()
    assert history["entry"][0]["request"]["method"] == "PATCH"


def test_patch_honours_if_match(fhir: Fhir) -> None:
    task = fhir.create({"resourceType": "Task", "status": "requested", "intent": "order"})
    url = f"/fhir/Task/{task['id']}"
    operations = [{"op": "replace", "path": "/status", "value": "accepted"}]
    assert patch(fhir, url, operations, If_Match='W/"9"').status_code == 412
    assert patch(fhir, url, operations, If_Match='W/"1"').status_code == 200


def test_patch_result_is_validated(fhir: Fhir) -> None:
    task = fhir.create({"resourceType": "Task", "status": "requested", "intent": "order"})
    url = f"/fhir/Task/{task['id']}"
    invalid = patch(fhir, url, [{"op": "replace", "path": "/status", "value": 12}])
    assert invalid.status_code == 400
    assert invalid.get_json()["issue"][0]["expression"] == ["Task.status"]
    assert fhir.request("GET", url).get_json()["meta"]["versionId"] == "1"


def test_patch_that_cannot_apply_is_422(fhir: Fhir) -> None:
    task = fhir.create({"resourceType": "Task", "status": "requested", "intent": "order"})
    url = f"/fhir/Task/{task['id']}"
    assert patch(fhir, url, [{"op": "remove", "path": "/note"}]).status_code == 422
    assert patch(fhir, url, [{"op": "test", "path": "/status", "value": "done"}]).status_code == 422
    assert patch(fhir, url, [{"op": "replace", "path": "/id", "value": "other"}]).status_code == 422


def test_patch_bad_requests(fhir: Fhir) -> None:
    task = fhir.create({"resourceType": "Task", "status": "requested", "intent": "order"})
    url = f"/fhir/Task/{task['id']}"
    assert patch(fhir, url, {"op": "replace"}).status_code == 400
    assert patch(fhir, url, [{"op": "frobnicate", "path": "/status"}]).status_code == 400
    wrong_type = fhir.request("PATCH", url, [{"op": "remove", "path": "/status"}])
    assert wrong_type.status_code == 415
    assert patch(fhir, "/fhir/Task/unknown", []).status_code == 404
    fhir.request("DELETE", url)
    assert patch(fhir, url, []).status_code == 410
