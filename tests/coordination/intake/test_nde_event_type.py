"""An NdE announces one event, and an update keeps what its intake established (review 22, F1).

The ``event-type`` search parameter (CommunicationRequest.extension('…event-type').value) indexes every
coding of every event-type extension: the intake may not act on the first while a search or a
Subscription sees another, and an update may not add, change or remove any of them, nor rewrite the
subject, sender, encounter or identifier (whole values) or the contained resources they point at."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from coordination_api.coordination.intake.nde import event_code
from coordination_api.errors import FhirError
from coordination_api.search.registry import SearchRegistry
from coordination_api.storage.indexer import index_rows
from tests.conftest import Fhir, authed
from tests.support.messages import EVENT_TYPE, NOS_R254, as_sender, ins, nde

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


def _with_event_types(*extensions: dict[str, Any]) -> dict[str, Any]:
    body = nde(identifier="several")
    body["extension"] = [{"url": EVENT_TYPE, **e} for e in extensions]
    return body


@pytest.mark.parametrize(
    "extensions",
    [
        ({"valueCodeableConcept": {"coding": [ADM, SOR]}},),
        ({"valueCoding": ADM}, {"valueCoding": SOR}),
        ({"valueCodeableConcept": {"coding": [SOR]}}, {"valueCoding": ADM}),
        ({"valueCoding": SOR}, {"valueCoding": {"code": "SOR"}}),  # same code, another system
        ({"valueCoding": SOR}, {"valueCode": "SOR"}),  # indexed, but not a Coding
        ({"valueCodeableConcept": {"coding": [{"system": NOS_R254, "display": "sortie"}]}},),
        ({"valueCodeableConcept": {"text": "sortie"}},),
    ],
)
def test_an_nde_announcing_several_events_or_none_is_refused(
    client: FlaskClient, fhir: Fhir, extensions: tuple[dict[str, Any], ...]
) -> None:
    """POST of [ADM, SOR] ran the intake as an admission and was indexed as a discharge too."""
    response = as_sender(client).post("/fhir/CommunicationRequest", json=_with_event_types(*extensions))
    assert response.status_code == 422, response.get_json()
    issue = response.get_json()["issue"][0]
    assert "announces one event" in issue["diagnostics"]
    assert issue["expression"] == ["CommunicationRequest.extension"]
    assert fhir.search("CommunicationRequest").get("entry") is None
    assert fhir.search("Encounter").get("entry") is None


def test_the_same_event_type_said_twice_is_one_event(client: FlaskClient, fhir: Fhir) -> None:
    body = _with_event_types({"valueCoding": SOR}, {"valueCodeableConcept": {"coding": [SOR, SOR]}})
    response = as_sender(client).post("/fhir/CommunicationRequest", json=body)
    assert response.status_code == 201, response.get_json()
    assert fhir.search("Encounter")["entry"][0]["resource"]["status"] == "finished"
    assert fhir.ids("CommunicationRequest?event-type=SOR") == {response.get_json()["id"]}
    assert fhir.ids("CommunicationRequest?event-type=ADM") == set()


def _contained_sender(stored: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(stored)
    org = next(c for c in changed["contained"] if c["id"] == "org")
    org["name"] = "Clinique Sud"
    return changed


@pytest.mark.parametrize(
    ("change", "element"),
    [
        (lambda s: {**s, "extension": [{"url": "urn:another", "valueString": "x"}]}, "extension"),
        (lambda s: {k: v for k, v in s.items() if k != "extension"}, "extension"),
        (
            lambda s: {**s, "extension": [{"url": EVENT_TYPE, "valueCodeableConcept": {"coding": [SOR]}}]},
            "extension",
        ),
        (
            lambda s: {**s, "subject": {**s["subject"], "identifier": {"system": "urn:x", "value": ins()}}},
            "subject",
        ),
        (lambda s: {**s, "subject": {**s["subject"], "display": "Autre patient"}}, "subject"),
        (lambda s: {**s, "encounter": {"reference": "Encounter/elsewhere"}}, "encounter"),
        (
            lambda s: {**s, "identifier": [{"system": "urn:x", "value": "someone-elses-next-nde"}]},
            "identifier",
        ),
        (_contained_sender, "contained"),
    ],
)
def test_an_nde_update_keeps_every_established_element_whole(
    client: FlaskClient, fhir: Fhir, change: Any, element: str
) -> None:
    """The sender here has no FINESS, so it stays contained (#org): its content is established too."""
    body = nde(identifier="whole")
    org = next(c for c in body["contained"] if c["id"] == "org")
    org.pop("identifier")
    as_sender(client, "nde:Hôpital Nord")
    stored = fhir.create(body)
    assert stored["sender"] == {"reference": "#org"}
    url = f"/fhir/CommunicationRequest/{stored['id']}"
    response = fhir.request("PUT", url, change(stored))
    assert response.status_code == 422, response.get_json()
    issue = response.get_json()["issue"][0]
    assert "keeps what its intake established" in issue["diagnostics"]
    assert issue["expression"] == [f"CommunicationRequest.{element}"]
    assert fhir.request("GET", url).get_json()["meta"]["versionId"] == "1"
    done = fhir.request("PUT", url, {**stored, "status": "completed"})  # what is not established may change
    assert done.status_code == 200, done.get_json()


# -- the property: what the intake acts on is what the index holds, or the NdE is refused -------------

_REGISTRY = SearchRegistry.default(frozenset({"CommunicationRequest"}))
_CODINGS = st.fixed_dictionaries(
    {},
    optional={
        "system": st.sampled_from([NOS_R254, "urn:other"]),
        "code": st.sampled_from(["ADM", "SOR", "XYZ"]),
        "display": st.just("x"),
    },
)
_VALUES = st.one_of(
    st.builds(lambda c: {"valueCoding": c}, _CODINGS),
    st.builds(lambda cs: {"valueCodeableConcept": {"coding": cs}}, st.lists(_CODINGS, max_size=3)),
    st.builds(lambda t: {"valueCodeableConcept": {"text": t}}, st.just("sortie")),
    st.builds(lambda c: {"valueCode": c}, st.sampled_from(["ADM", "SOR"])),
    st.just({}),
)
_OTHER = {"url": "urn:another-extension", "valueCoding": ADM}


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.lists(st.one_of(_VALUES.map(lambda v: {"url": EVENT_TYPE, **v}), st.just(_OTHER)), max_size=4))
def test_the_event_the_intake_reads_is_the_one_indexed_or_the_nde_is_refused(
    extensions: list[dict[str, Any]],
) -> None:
    resource = {"resourceType": "CommunicationRequest", "status": "active", "extension": extensions}
    rows = index_rows(_REGISTRY, "CommunicationRequest", resource).get("token", [])
    indexed = {(r["system"], r["code"]) for r in rows if r["param"] == "event-type" and r["code"] is not None}
    try:
        code = event_code(resource)
    except FhirError:
        return  # refused (422): nothing is stored, so nothing is indexed nor announced
    if code is None:
        assert all(e["url"] != EVENT_TYPE for e in extensions) and indexed == set()
    else:
        assert indexed == {code}, f"the intake acts on {code}, the index holds {indexed}"
