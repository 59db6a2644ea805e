"""Review 22: an NdE update may not change its event type, but the update hook compares only the FIRST
event-type coding, while the ``event-type`` search parameter indexes every one
(CommunicationRequest.extension('…event-type').value): a second extension (or a second coding) makes
an admission announced by an intake a discharge to every search and subscription, without an intake,
and any client that may update CommunicationRequests can do it (no sender check on an update)."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import Fhir, authed
from tests.coordination.intake.messages import EVENT_TYPE, NOS_R254, as_sender, nde

SOR = {"system": NOS_R254, "code": "SOR"}
ADM = {"system": NOS_R254, "code": "ADM"}


def _second_extension(stored: dict[str, Any]) -> dict[str, Any]:
    return {**stored, "extension": [*stored["extension"], {"url": EVENT_TYPE, "valueCoding": SOR}]}


def _second_coding(stored: dict[str, Any]) -> dict[str, Any]:
    concept = {"url": EVENT_TYPE, "valueCodeableConcept": {"coding": [ADM, SOR]}}
    return {**stored, "extension": [concept]}


@pytest.mark.parametrize("change", [_second_extension, _second_coding])
def test_an_nde_update_cannot_add_a_discharge_to_an_admission(
    client: FlaskClient, fhir: Fhir, change: Any
) -> None:
    as_sender(client)
    stored = fhir.create(nde(code="ADM", identifier="adm-1"))
    assert fhir.ids("CommunicationRequest?event-type=SOR") == set()
    # Another client, registered for no sender at all (it could not announce anything by POST).
    other = Fhir(authed(client.application.test_client()))
    response = other.request("PUT", f"/fhir/CommunicationRequest/{stored['id']}", change(stored))
    found = fhir.ids("CommunicationRequest?event-type=SOR")
    assert response.status_code == 422 and found == set(), (
        f"an update by a non-sender gave the admission NdE a discharge (SOR) event type, no intake: "
        f"PUT -> {response.status_code}, event-type=SOR finds {found}"
    )
