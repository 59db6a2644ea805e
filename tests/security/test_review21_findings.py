"""Review 21 (attacker's and integrator's review of fcd80fc..71cd5bc): failing proof tests of the findings."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import Fhir
from tests.coordination.intake.messages import as_sender, nde
from tests.factories import post_entry, put_entry, send_bundle

FHIR_JSON = {"Content-Type": "application/fhir+json"}


# -- F1: the NdE create hook runs on POST [type] only -------------------------------------------------


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
    """An NdE CommunicationRequest (event-type extension) is an encounter event: POST [type] runs the
    create hook (coordination/intake/nde.before_create: the sender check against the client's
    registered senders, the message log, the Patient/Encounter upsert). A transaction or batch POST
    entry, a PUT (update-as-create) and a transaction PUT entry write it with ``create_in`` /
    ``update_in`` and no hook: a client registered for another sender only (plain POST: 403) stores
    an NdE announcing a discharge "from" FINESS 750100125 that never happened as an intake, which
    subscribers to CommunicationRequest?event-type=SOR then receive as that hospital's."""
    as_sender(client, "some-other-sender")  # this client may not send as FINESS 750100125
    plain = fhir.request("POST", "/fhir/CommunicationRequest", nde(identifier="plain"))
    assert plain.status_code == 403, plain.get_json()  # the POST door checks the sender

    status, stored = _store_nde(fhir, door, nde(identifier=f"via-{door}"))
    assert status >= 400, (
        f"{door}: NdE CommunicationRequest stored without its intake (sender check, message log, "
        f"Patient match) -> {status}, subject {None if stored is None else stored.get('subject')}"
    )
