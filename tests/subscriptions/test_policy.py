"""Subscribers hear only of what they may read at delivery: the care-team rule for
practitioner-owned subscriptions, the SMART scopes for backend clients (Backport IG "Payload Types":
a server may send less than asked; here, an event about a resource the owner may not read is not sent
at all, not even its id — issue 16)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from coordination_api.storage.schema import subscription_outbox
from tests.conftest import Fhir, system_token
from tests.factories import create_care_team, create_patient
from tests.subscriptions.conftest import Receiver
from tests.support.auth import practitioner_user, user_token
from tests.support.subscriptions import classic, encounter

Pump = Callable[..., None]


def _as(app: Flask, token: str) -> Fhir:
    client: FlaskClient = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return Fhir(client)


def _subscribe(fhir: Fhir, sys_fhir: Fhir, pump: Pump, body: dict[str, Any]) -> str:
    response = fhir.request("POST", "/fhir/Subscription", body)
    assert response.status_code == 201, response.get_json()
    sub_id: str = response.get_json()["id"]
    pump(lambda: fhir.request("GET", f"/fhir/Subscription/{sub_id}").get_json()["status"] == "active")
    return sub_id


def _by_focus(receiver: Receiver) -> dict[str, dict[str, Any]]:
    """Event-notification entries by focus reference ("Encounter/id")."""
    out = {}
    for note in receiver.of_kind("event-notification"):
        for entry in note.body["entry"][1:]:
            out["/".join(entry["fullUrl"].split("/")[-2:])] = entry
    return out


def _settled(app: Flask) -> bool:
    """Every outbox row has been handled (delivered, or withheld as delivered)."""
    with app.extensions["coordination"].repo.engine.connect() as conn:
        left = conn.execute(
            select(func.count())
            .select_from(subscription_outbox)
            .where(subscription_outbox.c.status != "delivered")
        ).scalar_one()
    return int(left) == 0


def test_practitioner_hears_only_of_care_team_patients(
    sub_app: Flask, sub_fhir: Fhir, receiver: Receiver, pump: Pump
) -> None:
    """Issue 16: nothing, not even an id, about a resource the owner may not read at delivery."""
    sub_app.test_client().get("/fhir/.well-known/smart-configuration")  # loads the session key
    practitioner = practitioner_user(sub_app)
    mine, other = create_patient(sub_fhir.client, "Martin"), create_patient(sub_fhir.client, "Martin")
    create_care_team(sub_fhir.client, mine, f"Practitioner/{practitioner}")
    doctor = _as(sub_app, user_token(sub_app, "user/*.cruds"))
    body = classic(receiver.url, payload="application/fhir+json")
    sub_id = _subscribe(doctor, sub_fhir, pump, body)

    outside = sub_fhir.create(encounter(patient=other))["id"]
    in_team = sub_fhir.create(encounter(patient=mine))["id"]
    pump(lambda: f"Encounter/{in_team}" in _by_focus(receiver) and _settled(sub_app))
    entries = _by_focus(receiver)
    assert entries[f"Encounter/{in_team}"]["resource"]["id"] == in_team
    assert f"Encounter/{outside}" not in entries  # withheld, not even id-only
    assert all(outside not in str(note.body) for note in receiver.of_kind("event-notification"))

    # $events applies the same rule to its caller: the practitioner's replay leaves the other out.
    replay = doctor.request("GET", f"/fhir/Subscription/{sub_id}/$events").get_json()
    replayed = {"/".join(e["fullUrl"].split("/")[-2:]): e for e in replay["entry"][1:]}
    assert replayed[f"Encounter/{in_team}"]["resource"]["id"] == in_team
    assert f"Encounter/{outside}" not in replayed

    # "Now": once the practitioner leaves the care team, that patient's events are withheld too.
    team = sub_fhir.search(f"CareTeam?subject=Patient/{mine}")["entry"][0]["resource"]
    response = sub_fhir.request("PUT", f"/fhir/CareTeam/{team['id']}", {**team, "status": "inactive"})
    assert response.status_code == 200, response.get_json()
    later = sub_fhir.create(encounter(patient=mine))["id"]
    pump(lambda: _settled(sub_app))
    assert f"Encounter/{later}" not in _by_focus(receiver)


def test_backend_client_hears_only_of_types_it_may_read(
    sub_app: Flask, sub_fhir: Fhir, receiver: Receiver, pump: Pump
) -> None:
    client = sub_app.test_client()
    reader = _as(sub_app, system_token(client, "system/Subscription.cruds system/Encounter.rs"))
    blind = _as(sub_app, system_token(client, "system/Subscription.cruds system/Patient.rs"))
    full = _subscribe(reader, sub_fhir, pump, classic(receiver.url, payload="application/fhir+json"))
    limited = _subscribe(blind, sub_fhir, pump, classic(receiver.url, payload="application/fhir+json"))
    enc_id = sub_fhir.create(encounter())["id"]
    pump(lambda: len(receiver.of_kind("event-notification")) >= 1 and _settled(sub_app))
    by_sub = {
        note.status["subscription"]["reference"].rsplit("/", 1)[-1]: note
        for note in receiver.of_kind("event-notification")
    }
    assert by_sub[full].body["entry"][1]["resource"]["id"] == enc_id
    assert limited not in by_sub  # nothing about an Encounter to a client that may not read one

    # $events: the caller's scopes decide, whatever the content asked for.
    replay = blind.request("GET", f"/fhir/Subscription/{limited}/$events?content=full-resource")
    assert replay.status_code == 200, replay.get_json()
    assert len(replay.get_json()["entry"]) == 1  # the SubscriptionStatus only
    replay = reader.request("GET", f"/fhir/Subscription/{full}/$events?content=full-resource")
    assert replay.get_json()["entry"][1]["resource"]["id"] == enc_id


def test_status_and_events_belong_to_the_subscription_owner(
    sub_app: Flask, sub_fhir: Fhir, receiver: Receiver, pump: Pump
) -> None:
    client = sub_app.test_client()
    owner = _as(sub_app, system_token(client, "system/Subscription.cruds system/Encounter.rs"))
    other = _as(sub_app, system_token(client, "system/Subscription.cruds system/Encounter.rs"))
    sub_id = _subscribe(owner, sub_fhir, pump, classic(receiver.url))
    assert owner.request("GET", f"/fhir/Subscription/{sub_id}/$status").status_code == 200
    assert owner.request("GET", f"/fhir/Subscription/{sub_id}/$events").status_code == 200
    # Another client learns nothing, not even that the subscription exists.
    for operation in ("$status", "$events"):
        response = other.request("GET", f"/fhir/Subscription/{sub_id}/{operation}")
        assert response.status_code == 404, response.get_json()
        assert response.get_json()["resourceType"] == "OperationOutcome"
    assert other.request("GET", "/fhir/Subscription/$status").get_json()["total"] == 0
    listed = owner.request("GET", "/fhir/Subscription/$status").get_json()
    assert listed["total"] == 1


def test_another_client_sees_no_trace_of_a_subscription_in_reads_searches_or_history(
    sub_app: Flask, sub_fhir: Fhir, receiver: Receiver, pump: Pump
) -> None:
    client = sub_app.test_client()
    owner = _as(sub_app, system_token(client, "system/*.cruds"))
    other = _as(sub_app, system_token(client, "system/*.cruds"))
    secret = "Authorization: Bearer receiver-secret"
    live = _subscribe(owner, sub_fhir, pump, classic(receiver.url, header=[secret]))
    off = owner.request(
        "POST", "/fhir/Subscription", {**classic(receiver.url, header=[secret]), "status": "off"}
    )
    assert off.status_code == 201, off.get_json()
    for sub_id in (live, off.get_json()["id"]):
        assert owner.request("GET", f"/fhir/Subscription/{sub_id}").status_code == 200
        assert other.request("GET", f"/fhir/Subscription/{sub_id}").status_code == 404
        assert other.request("GET", f"/fhir/Subscription/{sub_id}/_history").status_code == 404
        changed = other.request(
            "PUT", f"/fhir/Subscription/{sub_id}", {**classic(receiver.url), "id": sub_id}
        )
        assert changed.status_code == 404, changed.get_json()
    assert other.search("Subscription").get("total", 0) == 0
    for url in ("/fhir/_history", "/fhir/Subscription/_history"):
        text = other.request("GET", url).get_data(as_text=True)
        assert "receiver-secret" not in text
    assert "receiver-secret" in owner.request("GET", "/fhir/_history").get_data(as_text=True)


def test_status_listing_survives_a_deleted_subscription_and_bad_bodies(
    sub_app: Flask, sub_fhir: Fhir, receiver: Receiver, pump: Pump
) -> None:
    gone = _subscribe(sub_fhir, sub_fhir, pump, classic(receiver.url))
    kept = _subscribe(sub_fhir, sub_fhir, pump, classic(receiver.url))
    assert sub_fhir.request("DELETE", f"/fhir/Subscription/{gone}").status_code in {200, 204}
    listed = sub_fhir.request("GET", "/fhir/Subscription/$status")
    assert listed.status_code == 200, listed.get_json()
    references = [
        p["valueReference"]["reference"]
        for e in listed.get_json()["entry"]
        for p in e["resource"]["parameter"]
        if p["name"] == "subscription"
    ]
    assert [r.rsplit("/", 1)[-1] for r in references] == [kept]
    for body in ([], "x", {"resourceType": "Parameters", "parameter": [1]}):
        response = sub_fhir.request("POST", f"/fhir/Subscription/{kept}/$status", body)
        assert response.status_code == 400, response.get_json()
        assert response.get_json()["resourceType"] == "OperationOutcome"


def test_a_practitioner_does_not_find_a_backend_clients_subscription(
    sub_app: Flask, sub_fhir: Fhir, receiver: Receiver, pump: Pump
) -> None:
    sub_app.test_client().get("/fhir/.well-known/smart-configuration")  # loads the session key
    practitioner_user(sub_app)
    backend = _as(sub_app, system_token(sub_app.test_client(), "system/*.cruds"))
    sub_id = _subscribe(backend, sub_fhir, pump, classic(receiver.url, header=["Authorization: Bearer x"]))
    doctor = _as(sub_app, user_token(sub_app, "user/*.cruds"))
    assert doctor.request("GET", f"/fhir/Subscription/{sub_id}").status_code == 404
    assert doctor.search("Subscription").get("total", 0) == 0
    assert sub_id not in doctor.request("GET", "/fhir/Subscription/_history").get_data(as_text=True)


# -- issue 16, second review: what is sent is judged as a vread of it; no count, no hop oracle ---------


def _alice_world(
    sub_app: Flask, sub_fhir: Fhir, receiver: Receiver, pump: Pump
) -> tuple[Fhir, str, str, str]:
    sub_app.test_client().get("/fhir/.well-known/smart-configuration")
    practitioner = practitioner_user(sub_app)
    mine, other = create_patient(sub_fhir.client, "Martin"), create_patient(sub_fhir.client, "Martin")
    create_care_team(sub_fhir.client, mine, f"Practitioner/{practitioner}")
    doctor = _as(sub_app, user_token(sub_app, "user/*.cruds"))
    sub_id = _subscribe(doctor, sub_fhir, pump, classic(receiver.url, payload="application/fhir+json"))
    return doctor, sub_id, mine, other


def test_a_replayed_version_is_judged_by_its_own_patient(
    sub_app: Flask, sub_fhir: Fhir, receiver: Receiver, pump: Pump
) -> None:
    doctor, sub_id, mine, other = _alice_world(sub_app, sub_fhir, receiver, pump)
    enc = sub_fhir.create({**encounter(patient=other), "reasonCode": [{"text": "secret of Q"}]})
    moved = {**enc, "subject": {"reference": f"Patient/{mine}"}, "reasonCode": [{"text": "P"}]}
    assert sub_fhir.request("PUT", f"/fhir/Encounter/{enc['id']}", moved).status_code == 200
    pump(lambda: _settled(sub_app))
    replay = doctor.request("GET", f"/fhir/Subscription/{sub_id}/$events?content=full-resource").get_json()
    assert "secret of Q" not in str(replay)
    assert "secret of Q" not in str([n.body for n in receiver.of_kind("event-notification")])


def test_withheld_events_are_not_counted(
    sub_app: Flask, sub_fhir: Fhir, receiver: Receiver, pump: Pump
) -> None:
    doctor, sub_id, _mine, other = _alice_world(sub_app, sub_fhir, receiver, pump)

    def count() -> str:
        status = doctor.request("GET", f"/fhir/Subscription/{sub_id}/$status").get_json()
        params = status["entry"][0]["resource"]["parameter"] if "entry" in status else status["parameter"]
        return str(next(p["valueString"] for p in params if p["name"] == "events-since-subscription-start"))

    before = count()
    sub_fhir.create(encounter(patient=other))
    pump(lambda: _settled(sub_app))
    assert count() == before


def test_a_practitioners_criteria_may_not_hop(
    sub_app: Flask, sub_fhir: Fhir, receiver: Receiver, pump: Pump
) -> None:
    doctor, _sub, _mine, other = _alice_world(sub_app, sub_fhir, receiver, pump)
    criteria = f"Organization?_has:Encounter:service-provider:patient={other}"
    response = doctor.request("POST", "/fhir/Subscription", classic(receiver.url, criteria=criteria))
    assert response.status_code == 403, response.get_json()
    narrow = _as(
        sub_app, system_token(sub_app.test_client(), "system/Subscription.cruds system/Organization.rs")
    )
    response = narrow.request("POST", "/fhir/Subscription", classic(receiver.url, criteria=criteria))
    assert response.status_code == 403, response.get_json()
