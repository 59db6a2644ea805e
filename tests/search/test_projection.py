"""search/projection through the pages' door (pages/data ``tally``, ``index_values``), for random small
sets of Tasks: the counts per (stay, status) with the earliest deadline, the patients audited, and the
projected index values equal what the FHIR API's search returns to the same caller, a backend service
allowed everything and a practitioner on one patient's care team only (issue 22)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask, g
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from coordination_api.pages import data
from coordination_api.search.dates import MAX_US
from coordination_api.search.projection import code_of, end_of, target_of
from tests.conftest import Fhir
from tests.factories import bundle_ok, create_via, delete_entry, encounter, post_entry, put_entry
from tests.support.access import ReachWorld
from tests.support.auth import bearer

STATUSES = ["draft", "requested", "accepted", "in-progress", "completed", "cancelled", "entered-in-error"]
DEADLINES = [
    None,
    "2030-01-01",  # a date: from its midnight UTC
    "2030-01-01T00:30:00+02:00",  # the day before in UTC
    "2030-01-01T12:00:00Z",
    "2030-01-01T12:00:00.250Z",
    "2031-06-15T08:00:00+01:00",
]
BY_STAY = ("encounter", "Encounter")


def _low(deadline: str) -> int:
    if len(deadline) == 10:
        moment = datetime.fromisoformat(deadline).replace(tzinfo=UTC)
    else:
        moment = datetime.fromisoformat(deadline.replace("Z", "+00:00"))
    return round(moment.timestamp() * 1_000_000)


class World(ReachWorld):
    """ALICE on P's care team, not Q's (``ReachWorld``); a stay of P's, one of Q's and one without
    patient; the backend service's token beside hers."""

    def __init__(self, app: Flask, client: FlaskClient) -> None:
        super().__init__(app, client)
        self.system = client.environ_base["HTTP_AUTHORIZATION"].removeprefix("Bearer ")
        period = {"start": "2029-12-01T08:00:00Z", "end": "2029-12-20T10:00:00Z"}
        self.stays = [
            create_via(client, encounter(subject=f"Patient/{self.p}", period=period)),
            create_via(client, encounter(subject=f"Patient/{self.p}", status="in-progress")),
            create_via(client, encounter(subject=f"Patient/{self.q}", period=period)),
            create_via(client, encounter(period=period)),
        ]

    @contextmanager
    def as_caller(self, token: str) -> Iterator[None]:
        """A request of the FHIR API under ``token``: the app's own authentication and audit record."""
        with self.app.test_request_context("/fhir/Task", headers=bearer(token)):
            assert self.app.preprocess_request() is None
            yield

    def search(self, token: str, query: str) -> list[dict[str, Any]]:
        response = self.client.get(f"/fhir/{query}", headers=bearer(token))
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert "next" not in {link["relation"] for link in body.get("link", [])}
        return [e["resource"] for e in body.get("entry", []) if e["search"]["mode"] == "match"]


@pytest.fixture
def world(app: Flask, client: FlaskClient) -> World:
    return World(app, client)


def _task(world: World, patient: str | None, stay: int | None, status: str, deadline: str | None) -> Any:
    body: dict[str, Any] = {"resourceType": "Task", "status": status, "intent": "order"}
    if patient:
        body["for"] = {"reference": f"Patient/{getattr(world, patient)}"}
    if stay is not None:
        body["encounter"] = {"reference": f"Encounter/{world.stays[stay]}"}
    if deadline:
        body["restriction"] = {"period": {"end": deadline}}
    return body


def _brute_force(tasks: list[dict[str, Any]], targets: list[str]) -> tuple[list[Any], set[str]]:
    """The tally counted here from the Tasks the API returned, and their patients."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    patients: set[str] = set()
    for task in tasks:
        reference = (task.get("encounter") or {}).get("reference", "")
        stay = reference.removeprefix("Encounter/")
        if stay not in targets:
            continue
        groups.setdefault((stay, task["status"]), []).append(task)
        if task.get("for"):
            patients.add(task["for"]["reference"].removeprefix("Patient/"))
    out = []
    for (stay, status), members in groups.items():
        lows = [_low(t["restriction"]["period"]["end"]) for t in members if t.get("restriction")]
        out.append((stay, status, len(members), min(lows) if lows else None))
    return sorted(out, key=str), patients


def test_tally_and_projection_equal_the_api_search_for_each_caller(world: World) -> None:
    fhir = Fhir(world.client)
    alive: list[str] = []
    targets = [*world.stays, "no-such-stay"]
    spec = st.tuples(
        st.sampled_from(["p", "q", None]),
        st.sampled_from([0, 1, 2, 3, None]),
        st.sampled_from(STATUSES),
        st.sampled_from(DEADLINES),
        st.sampled_from([None, None, "completed", "cancelled", "accepted", "deleted"]),
    )

    @settings(max_examples=30, deadline=None, database=None)
    @given(tasks=st.lists(spec, max_size=8))
    def check(tasks: list[tuple[Any, ...]]) -> None:
        if alive:  # the previous example's Tasks
            bundle_ok(fhir, [delete_entry(f"Task/{i}") for i in alive], kind="batch")
            alive.clear()
        if tasks:
            bodies = [_task(world, *t[:4]) for t in tasks]
            created = bundle_ok(fhir, [post_entry(b) for b in bodies])
            alive.extend(e["response"]["location"].split("Task/")[1].split("/")[0] for e in created["entry"])
            # Then some change status or are deleted: only the current version counts.
            later = []
            for task_id, body, (*_t, then) in zip(alive, bodies, tasks, strict=True):
                if then == "deleted":
                    later.append(delete_entry(f"Task/{task_id}"))
                elif then:
                    later.append(put_entry({**body, "id": task_id, "status": then}, f"Task/{task_id}"))
            if later:
                bundle_ok(fhir, later, kind="batch")
        for token in (world.system, world.token):
            found = world.search(token, "Task?_count=1000")
            expected, patients = _brute_force(found, targets)
            with world.as_caller(token):
                tallied = data.tally("Task", BY_STAY, targets, "status", "deadline")
                audited = set(g.audit.patients)
            assert sorted(((t.target_id, t.code, t.count, t.earliest) for t in tallied), key=str) == expected
            assert audited == patients
            # The same search's first page as index values: order, status, deadline, patient.
            ordered = world.search(token, "Task?_sort=deadline&_count=1000")
            with world.as_caller(token):
                projected = data.index_values(
                    "Task",
                    [("_sort", "deadline"), ("_count", "1000")],
                    {
                        "status": code_of("status"),
                        "due": end_of("deadline"),
                        "patient": target_of("patient", "Patient"),
                    },
                )
                entities = list(g.audit.entities)
            assert [m.res_id for m in projected.matches] == [t["id"] for t in ordered]
            assert not projected.has_next
            assert entities == [f"Task/{t['id']}" for t in ordered]
            for match, task in zip(projected.matches, ordered, strict=True):
                deadline = (task.get("restriction") or {}).get("period", {}).get("end")
                assert match.values["status"] == task["status"]
                assert (match.values["due"] is None) == (deadline is None)
                assert match.values["due"] is None or _low(deadline) <= match.values["due"] < MAX_US
                patient = (task.get("for") or {}).get("reference", "").removeprefix("Patient/") or None
                assert match.values["patient"] == patient

    check()


def test_a_practitioner_never_counts_a_task_out_of_reach(world: World) -> None:
    fhir = Fhir(world.client)
    stay = world.stays[0]  # P's stay, where a Task of Q's is filed too
    for who, status in (("p", "requested"), ("q", "requested"), ("q", "completed"), (None, "accepted")):
        fhir.create(_task(world, who, 0, status, "2030-01-01T12:00:00Z"))
    with world.as_caller(world.token):
        mine = data.tally("Task", BY_STAY, [stay], "status", "deadline")
        audited = set(g.audit.patients)
    assert sorted((t.code, t.count) for t in mine) == [("accepted", 1), ("requested", 1)]
    assert audited == {world.p}
    with world.as_caller(world.system):
        every = data.tally("Task", BY_STAY, [stay], "status")
    assert sorted((t.code, t.count, t.earliest) for t in every) == [
        ("accepted", 1, None),
        ("completed", 1, None),
        ("requested", 2, None),
    ]
