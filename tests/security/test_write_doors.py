"""Every door of a client's write runs the write hooks create_app registers (review 21, F1).

The plain POST [type] ran the create hooks (an NdE CommunicationRequest's intake: the sender check,
the message log, the Patient/Encounter upsert); transaction and batch entries and PUT did not. The
guard below registers a recording hook of each kind on the app and writes through every door; a
new write route, a new kind of hook or a FHIR-layer module that writes below the hooks fails it until
it is covered (or named here with the reason it is not a client's write of a resource).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Connection

from coordination_api.core.services import Hooks, PendingCreate, PendingUpdate, Services
from coordination_api.errors import Category, FhirError
from tests.conftest import Fhir
from tests.coordination.intake.messages import EVENT_TYPE, NOS_R254, as_sender, nde
from tests.factories import post_entry, put_entry, send_bundle

ROOT = Path(__file__).resolve().parents[2]

# -- F1: an NdE CommunicationRequest is an intake at every door ---------------------------------------


def _store_nde(fhir: Fhir, door: str, body: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """Send the NdE CommunicationRequest through ``door``; (status of the write, the stored resource)."""
    if door == "put":
        response = fhir.request("PUT", "/fhir/CommunicationRequest/nde-put", {**body, "id": "nde-put"})
        return response.status_code, response.get_json()
    if door == "transaction-put":
        entry = put_entry({**body, "id": "nde-tx"}, "CommunicationRequest/nde-tx")
    else:
        entry = post_entry(body)
    response = send_bundle(fhir, [entry], "batch" if door == "batch" else "transaction")
    assert response.status_code == 200 or response.status_code >= 400, response.get_json()
    if response.status_code != 200:
        return response.status_code, None
    answer = response.get_json()["entry"][0]
    status = int(answer["response"]["status"].split()[0])
    return status, answer.get("resource")


@pytest.mark.parametrize("door", ["transaction", "batch", "put", "transaction-put"])
def test_nde_communication_request_is_an_intake_at_every_write_door(
    client: FlaskClient, fhir: Fhir, door: str
) -> None:
    """A client registered for another sender only may not store an NdE "from" FINESS 750100125 by any
    door: POST [type] refuses it (403, the intake's sender check), and so do transaction and batch
    POST entries; PUT and a transaction PUT entry cannot be an intake at all (422)."""
    as_sender(client, "some-other-sender")  # this client may not send as FINESS 750100125
    plain = fhir.request("POST", "/fhir/CommunicationRequest", nde(identifier="plain"))
    assert plain.status_code == 403, plain.get_json()  # the POST door checks the sender

    status, stored = _store_nde(fhir, door, nde(identifier=f"via-{door}"))
    assert status == (422 if "put" in door else 403), (
        f"{door}: NdE CommunicationRequest stored without its intake (sender check, message log, "
        f"Patient match) -> {status}, subject {None if stored is None else stored.get('subject')}"
    )
    assert fhir.search("CommunicationRequest").get("entry") is None


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_nde_in_a_bundle_is_the_same_intake_as_post(client: FlaskClient, fhir: Fhir, kind: str) -> None:
    """A registered sender's NdE as a Bundle POST entry: the Patient is matched and the resend, by
    either door, finds the first one (the message log / conditional create of the intake)."""
    as_sender(client)
    response = send_bundle(fhir, [post_entry(nde(identifier="in-bundle"))], kind)
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()["entry"][0]
    assert answer["response"]["status"].startswith("201"), answer
    stored = answer["resource"]
    assert stored["subject"]["reference"].startswith("Patient/")
    assert "contained" not in stored or all(c["resourceType"] != "Patient" for c in stored["contained"])
    again = fhir.request("POST", "/fhir/CommunicationRequest", nde(identifier="in-bundle"))
    assert again.status_code == 200 and again.get_json()["id"] == stored["id"]
    resent = send_bundle(fhir, [post_entry(nde(identifier="in-bundle"))], kind).get_json()["entry"][0]
    assert resent["response"]["status"].startswith("200") and resent["resource"]["id"] == stored["id"]
    assert len(fhir.search("Encounter")["entry"]) == 1


def _json_patch(fhir: Fhir, url: str, document: list[dict[str, Any]]) -> Any:
    headers = {"Content-Type": "application/json-patch+json"}
    return fhir.request("PATCH", url, orjson.dumps(document), **headers)


_EXTENSION = [{"url": EVENT_TYPE, "valueCoding": {"system": NOS_R254, "code": "SOR"}}]


def test_an_update_cannot_make_an_nde(client: FlaskClient, fhir: Fhir) -> None:
    """Adding the event-type to an existing CommunicationRequest would announce a discharge without an
    intake: 422 by PUT, conditional PUT, PATCH and a transaction PUT entry; nothing changes."""
    as_sender(client)
    plain = fhir.create(
        {
            "resourceType": "CommunicationRequest",
            "status": "active",
            "identifier": [{"system": "urn:test", "value": "plain-cr"}],
        }
    )
    turned = {**plain, "extension": _EXTENSION}
    attempts = [
        fhir.request("PUT", f"/fhir/CommunicationRequest/{plain['id']}", turned),
        fhir.request("PUT", "/fhir/CommunicationRequest?identifier=urn:test|plain-cr", turned),
        _json_patch(
            fhir,
            f"/fhir/CommunicationRequest/{plain['id']}",
            [{"op": "add", "path": "/extension", "value": _EXTENSION}],
        ),
        send_bundle(fhir, [put_entry(turned, f"CommunicationRequest/{plain['id']}")]),
    ]
    for response in attempts:
        assert response.status_code == 422, response.get_json()
        outcome = response.get_json()
        assert "an update cannot make it one" in outcome["issue"][0]["diagnostics"], outcome
    batch = send_bundle(fhir, [put_entry(turned, f"CommunicationRequest/{plain['id']}")], "batch")
    assert batch.get_json()["entry"][0]["response"]["status"].startswith("422")
    current = fhir.request("GET", f"/fhir/CommunicationRequest/{plain['id']}").get_json()
    assert current["meta"]["versionId"] == "1" and "extension" not in current


def test_an_nde_update_keeps_what_its_intake_established(client: FlaskClient, fhir: Fhir) -> None:
    """An NdE may be updated (its status completed), but not re-pointed at another patient or sender,
    nor given another event type: that would be a new event without its intake."""
    as_sender(client)
    stored = fhir.create(nde(identifier="to-update"))
    url = f"/fhir/CommunicationRequest/{stored['id']}"
    done = fhir.request("PUT", url, {**stored, "status": "completed"})
    assert done.status_code == 200, done.get_json()
    other = fhir.create({"resourceType": "Patient", "name": [{"family": "Autre"}]})
    admitted = {"url": EVENT_TYPE, "valueCoding": {"system": NOS_R254, "code": "ADM"}}
    for changed, element in [
        ({"subject": {"reference": f"Patient/{other['id']}"}}, "subject"),
        ({"sender": {"reference": "Organization/elsewhere"}}, "sender"),
        ({"extension": [admitted]}, "extension"),
    ]:
        response = fhir.request("PUT", url, {**stored, **changed})
        assert response.status_code == 422, response.get_json()
        issue = response.get_json()["issue"][0]
        assert "keeps what its intake established" in issue["diagnostics"]
        assert issue["expression"] == [f"CommunicationRequest.{element}"]


# -- the guard: every hook on every door ----------------------------------------------------------------

PROBE = "hook-probe"


@dataclasses.dataclass
class Recorder:
    """Real hooks registered on the app for one test: they record what they saw and mark the body
    (a hook may change what is written); ``refuse`` is a name they refuse (422)."""

    calls: list[tuple[str, str | None]] = dataclasses.field(default_factory=list)
    refuse: str = "refuse-me"

    def _see(self, kind: str, res_id: str | None, body: dict[str, Any]) -> None:
        if body.get("name") == self.refuse:
            raise FhirError(Category.UNPROCESSABLE, f"the {kind} hook refuses this write")
        if str(body.get("name", "")).startswith(PROBE):
            self.calls.append((kind, res_id))
            body["alias"] = [f"seen by the {kind} hook"]

    def before_create(self, _conn: Connection, _svc: Services, pending: PendingCreate) -> None:
        self._see("create", pending.res_id, pending.body)

    def before_update(self, _conn: Connection, _svc: Services, pending: PendingUpdate) -> None:
        self._see("update", pending.res_id, pending.body)


# The kinds of write hook the guard registers; any other field of Hooks must say why it is not one.
COVERED_HOOKS = {"before_create", "before_update"}
OTHER_HOOKS = {"new_party": "run by an intake when it meets a new Practitioner or Organization"}


@pytest.fixture
def recorder(app: Flask, client: FlaskClient) -> Iterator[Recorder]:
    hooks: Hooks = app.extensions["coordination"].hooks
    probe = Recorder()
    hooks.before_create.append(probe.before_create)
    hooks.before_update.append(probe.before_update)
    try:
        yield probe
    finally:
        hooks.before_create.remove(probe.before_create)
        hooks.before_update.remove(probe.before_update)


def _org(name: str, res_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Organization", "name": name}
    return {**body, "id": res_id} if res_id else body


def _entries(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.get_json()
    entries: list[dict[str, Any]] = response.get_json()["entry"]
    for entry in entries:
        assert entry["response"]["status"][:3] in {"200", "201"}, entry
    return entries


def _existing(fhir: Fhir, recorder: Recorder, name: str) -> str:
    """An Organization written before the door under test (its own create hook call forgotten)."""
    res_id = str(fhir.create(_org(name))["id"])
    recorder.calls.clear()
    return res_id


# door -> (write through it, the hook kinds it must run). Each write returns the stored resources.
Door = Callable[[Fhir, Recorder], list[dict[str, Any]]]


def _post(fhir: Fhir, _r: Recorder) -> list[dict[str, Any]]:
    return [fhir.create(_org(PROBE))]


def _post_conditional(fhir: Fhir, _r: Recorder) -> list[dict[str, Any]]:
    return [fhir.create(_org(PROBE), If_None_Exist=f"name={PROBE}")]


def _put_new(fhir: Fhir, _r: Recorder) -> list[dict[str, Any]]:
    return [fhir.request("PUT", "/fhir/Organization/probe-new", _org(PROBE, "probe-new")).get_json()]


def _put_existing(fhir: Fhir, r: Recorder) -> list[dict[str, Any]]:
    res_id = _existing(fhir, r, "before")
    return [fhir.request("PUT", f"/fhir/Organization/{res_id}", _org(PROBE, res_id)).get_json()]


def _conditional_put_new(fhir: Fhir, _r: Recorder) -> list[dict[str, Any]]:
    return [fhir.request("PUT", f"/fhir/Organization?name={PROBE}", _org(PROBE)).get_json()]


def _conditional_put_existing(fhir: Fhir, r: Recorder) -> list[dict[str, Any]]:
    _existing(fhir, r, "before")
    return [fhir.request("PUT", "/fhir/Organization?name=before", _org(PROBE)).get_json()]


def _patch(fhir: Fhir, r: Recorder) -> list[dict[str, Any]]:
    res_id = _existing(fhir, r, "before")
    document = [{"op": "replace", "path": "/name", "value": PROBE}]
    return [_json_patch(fhir, f"/fhir/Organization/{res_id}", document).get_json()]


def _bundle(kind: str, make: Callable[[Fhir, Recorder], list[Any]]) -> Door:
    def door(fhir: Fhir, r: Recorder) -> list[dict[str, Any]]:
        return [e["resource"] for e in _entries(send_bundle(fhir, make(fhir, r), kind))]

    return door


def _entry_post(_f: Fhir, _r: Recorder) -> list[Any]:
    return [post_entry(_org(PROBE))]


def _entry_post_conditional(_f: Fhir, _r: Recorder) -> list[Any]:
    return [post_entry(_org(PROBE), if_none_exist=f"name={PROBE}")]


def _entry_put_new(_f: Fhir, _r: Recorder) -> list[Any]:
    return [put_entry(_org(PROBE, "probe-new"), "Organization/probe-new")]


def _entry_put_existing(fhir: Fhir, r: Recorder) -> list[Any]:
    res_id = _existing(fhir, r, "before")
    return [put_entry(_org(PROBE, res_id), f"Organization/{res_id}")]


def _entry_conditional_put(_f: Fhir, _r: Recorder) -> list[Any]:
    return [put_entry(_org(PROBE), f"Organization?name={PROBE}")]


def _entries_bulk(_f: Fhir, _r: Recorder) -> list[Any]:
    """Several plain creates: the transaction writes them in bulk (repository.create_many)."""
    return [
        post_entry(_org(f"{PROBE}-1")),
        post_entry(_org(f"{PROBE}-2")),
        put_entry(_org(f"{PROBE}-3", "probe-3"), "Organization/probe-3"),
        put_entry(_org(f"{PROBE}-4", "probe-4"), "Organization/probe-4"),
    ]


DOORS: dict[str, tuple[Door, list[str]]] = {
    "POST": (_post, ["create"]),
    "POST If-None-Exist": (_post_conditional, ["create"]),
    "PUT new id": (_put_new, ["create"]),
    "PUT existing": (_put_existing, ["update"]),
    "conditional PUT, no match": (_conditional_put_new, ["create"]),
    "conditional PUT, a match": (_conditional_put_existing, ["update"]),
    "PATCH": (_patch, ["update"]),
}
for _kind in ("transaction", "batch"):
    DOORS |= {
        f"{_kind} POST": (_bundle(_kind, _entry_post), ["create"]),
        f"{_kind} POST ifNoneExist": (_bundle(_kind, _entry_post_conditional), ["create"]),
        f"{_kind} PUT new id": (_bundle(_kind, _entry_put_new), ["create"]),
        f"{_kind} PUT existing": (_bundle(_kind, _entry_put_existing), ["update"]),
        f"{_kind} conditional PUT": (_bundle(_kind, _entry_conditional_put), ["create"]),
        f"{_kind} bulk creates": (_bundle(_kind, _entries_bulk), ["create"] * 4),
    }

# Every route taking a write, by (endpoint, method): the doors above that cover it, or why it is not
# a client's write of a resource it sends (an operation whose server-side writes are its own).
ROUTES: dict[tuple[str, str], list[str] | str] = {
    ("fhir.type_level", "POST"): ["POST", "POST If-None-Exist"],
    ("fhir.type_level", "PUT"): ["conditional PUT, no match", "conditional PUT, a match"],
    ("fhir.type_level", "DELETE"): "a delete writes no content",
    ("fhir.instance", "PUT"): ["PUT new id", "PUT existing"],
    ("fhir.instance", "PATCH"): ["PATCH"],
    ("fhir.instance", "DELETE"): "a delete writes no content",
    ("fhir.system", "POST"): [name for name in DOORS if name.startswith(("transaction", "batch"))],
    ("fhir.process_message", "POST"): "is the intake itself (coordination/intake)",
    ("hl7v2.receive", "POST"): "is the intake itself (HL7 v2 ADT)",
    ("fhir.validate_type", "POST"): "writes nothing",
    ("fhir.validate_instance", "POST"): "writes nothing",
    ("fhir.search_post", "POST"): "a search",
    ("fhir.patient_everything", "POST"): "a read",
    ("fhir.encounter_everything", "POST"): "a read",
    ("fhir.subscription_status", "POST"): "a read",
    ("fhir.subscription_status_instance", "POST"): "a read",
    ("fhir.subscription_events", "POST"): "a read",
    ("fhir.plandefinition_apply", "POST"): "builds a CarePlan from a stored PlanDefinition",
    ("fhir.plandefinition_apply_instance", "POST"): "builds a CarePlan from a stored PlanDefinition",
    ("fhir.plandefinition_start", "POST"): "the server writes the protocol's resources",
    ("fhir.bulk_export_system", "POST"): "starts an export job",
    ("fhir.bulk_export_patient", "POST"): "starts an export job",
    ("fhir.bulk_export_group", "POST"): "starts an export job",
    ("fhir.bulk_export_status", "DELETE"): "cancels an export job",
    ("fhir.dmp_push", "POST"): "the server marks the DocumentReference it queues",
    ("pages.accept", "POST"): "updates a Task through core/writes.update, as 'PUT existing' (tests/pages)",
    ("pages.assign", "POST"): "updates a Task through core/writes.update, as 'PUT existing' (tests/pages)",
    ("pages.complete", "POST"): "updates a Task through core/writes.update, as 'PUT existing' (tests/pages)",
    ("pages.cancel", "POST"): "updates a Task through core/writes.update, as 'PUT existing' (tests/pages)",
}


@pytest.mark.parametrize("door", list(DOORS))
def test_every_write_door_runs_the_write_hooks(fhir: Fhir, recorder: Recorder, door: str) -> None:
    write, kinds = DOORS[door]
    stored = write(fhir, recorder)
    assert sorted(kind for kind, _ in recorder.calls) == sorted(kinds), (door, recorder.calls)
    for resource in stored:  # what the hook changed is what was written
        assert resource["alias"] == [f"seen by the {kinds[0]} hook"], (door, resource)
    if door.endswith("PUT new id"):
        assert recorder.calls == [("create", "probe-new")]  # an update-as-create names its id


@pytest.mark.parametrize(
    "door",
    ["POST", "PUT new id", "PUT existing", "PATCH", "transaction POST", "transaction PUT existing"],
)
def test_a_hook_refusal_is_the_write_s_answer(fhir: Fhir, recorder: Recorder, door: str) -> None:
    """A refusal fails the write with the hook's status; in a transaction, the whole Bundle."""
    before = _existing(fhir, recorder, "before")
    refused = _org(recorder.refuse, before if "existing" in door else None)
    if door == "POST":
        response = fhir.request("POST", "/fhir/Organization", refused)
    elif door == "PUT new id":
        response = fhir.request("PUT", "/fhir/Organization/refused", {**refused, "id": "refused"})
    elif door == "PUT existing":
        response = fhir.request("PUT", f"/fhir/Organization/{before}", refused)
    elif door == "PATCH":
        document = [{"op": "replace", "path": "/name", "value": recorder.refuse}]
        response = _json_patch(fhir, f"/fhir/Organization/{before}", document)
    else:
        entry = post_entry(refused) if door.endswith("POST") else put_entry(refused, f"Organization/{before}")
        response = send_bundle(fhir, [post_entry(_org("written-with-it")), entry])
    assert response.status_code == 422, response.get_json()
    assert "hook refuses this write" in response.get_json()["issue"][0]["diagnostics"]
    names = {e["resource"]["name"] for e in fhir.search("Organization")["entry"]}
    assert names == {"before"}  # nothing else written, nothing changed


def test_a_hook_refusal_in_a_batch_fails_that_entry_only(fhir: Fhir, recorder: Recorder) -> None:
    before = _existing(fhir, recorder, "before")
    response = send_bundle(
        fhir,
        [
            post_entry(_org(recorder.refuse)),
            post_entry(_org(PROBE)),
            put_entry(_org(recorder.refuse, before), f"Organization/{before}"),
        ],
        "batch",
    )
    statuses = [e["response"]["status"][:3] for e in response.get_json()["entry"]]
    assert statuses == ["422", "201", "422"]
    assert {e["resource"]["name"] for e in fhir.search("Organization")["entry"]} == {"before", PROBE}


def test_every_write_route_is_a_covered_door(app: Flask) -> None:
    """A new route that takes a write fails here until a door above covers it (or it says why not)."""
    routes = {
        (rule.endpoint, method)
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) & {"POST", "PUT", "PATCH", "DELETE"}
        if not rule.endpoint.startswith(("auth.", "static"))
    }
    assert routes == set(ROUTES), "classify the new write route in ROUTES (a door of DOORS, or why not)"
    for covered in ROUTES.values():
        if isinstance(covered, list):
            assert covered and set(covered) <= set(DOORS)


def test_every_kind_of_write_hook_is_registered_by_the_guard() -> None:
    """A new list on Hooks is a new kind of hook: the recorder must register it on every door."""
    kinds = {f.name for f in dataclasses.fields(Hooks)}
    assert kinds == COVERED_HOOKS | set(OTHER_HOOKS)


_LOW_LEVEL = re.compile(r"\b(?:repo\.(?:create|update|create_many)|create_in|update_in)\(")
_HOOKED = re.compile(r"\brun_(?:create|put|update)_hooks\(")
# FHIR-layer modules that write below the client's write (core/writes) and run no write hook, and why.
UNHOOKED = {"dmp.py": "the server's own 'requested' mark on the DocumentReference it queues"}


def test_the_fhir_layer_writes_through_the_hooks() -> None:
    """A module of the FHIR layer that writes with the repository or core's ``*_in`` functions runs
    the write hooks itself (core/writes.run_*_hooks) or says here why its write is not a client's."""
    offenders = []
    for path in sorted((ROOT / "coordination_api" / "fhir").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        if _LOW_LEVEL.search(source) and not _HOOKED.search(source) and path.name not in UNHOOKED:
            offenders.append(path.name)
    assert offenders == []
    assert all((ROOT / "coordination_api" / "fhir" / name).exists() for name in UNHOOKED)
