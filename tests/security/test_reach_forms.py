"""The care-team rule has two SQL forms (auth/policy): the patient lists (``patient NOT IN (allowed)``,
what ``reachable_among`` and the writes' snapshot read) and the per-row probes (``Reach``: what every
search, read and include filter uses since issue 22). They must answer alike for every world: random
access rows (care teams, owned and offered Tasks, objections, periods around now), a launch context or
none, Tasks a write leans on, offers counted or not, each patient and resource type."""

from __future__ import annotations

from typing import Any

from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, literal, select

from auth import policy
from auth.schema import care_team_access, consent_deny, task_access
from tests.security.conftest import PROFILE, reset

NOW = 1_800_000_000_000_000
PATIENTS = ("p1", "p2", "p3", "p4")
ACTORS = ("Practitioner/me", "PractitionerRole/mine", "Organization/ours", "Practitioner/other")
MINE = ["Practitioner/me", "PractitionerRole/mine", "Organization/ours"]
TYPES = ("Patient", "Task", "Observation", "CarePlan")

bounds = st.sampled_from([None, NOW - 10, NOW + 10])
grants = st.lists(st.tuples(st.sampled_from(PATIENTS), st.sampled_from(ACTORS), bounds, bounds), max_size=6)
tasks = st.lists(
    st.tuples(
        st.integers(1, 5),
        st.sampled_from(PATIENTS),
        st.sampled_from(ACTORS),
        st.sampled_from(["owner", "offer"]),
        bounds,
        bounds,
    ),
    max_size=6,
)
objections = st.lists(
    st.tuples(st.sampled_from(PATIENTS), st.sampled_from([*ACTORS, "*"]), bounds, bounds), max_size=3
)


def _world(app: Flask, teams: list[Any], owned: list[Any], denied: list[Any]) -> None:
    reset(app)
    engine = app.extensions["coordination"].repo.engine
    with engine.begin() as conn:
        for patient, member, start, end in teams:
            conn.execute(
                insert(care_team_access).values(
                    res_pk=1, patient_id=patient, member=member, start_us=start, end_us=end
                )
            )
        for pk, patient, member, kind, start, end in owned:
            conn.execute(
                insert(task_access).values(
                    res_pk=pk, patient_id=patient, member=member, kind=kind, start_us=start, end_us=end
                )
            )
        for patient, actor, start, end in denied:
            conn.execute(
                insert(consent_deny).values(
                    res_pk=1, patient_id=patient, actor=actor, start_us=start, end_us=end
                )
            )


def _answers(app: Flask, f: policy.PatientFilter) -> list[bool]:
    engine = app.extensions["coordination"].repo.engine
    cases = [(p, t) for p in (*PATIENTS, "p-none") for t in TYPES]
    columns = [
        (~policy.out_of_reach(f, literal(p), literal(t))).label(f"c{i}") for i, (p, t) in enumerate(cases)
    ]
    with engine.connect() as conn:
        row = conn.execute(select(*columns)).one()
    return [bool(v) for v in row]


@settings(settings.get_profile(PROFILE), max_examples=40 if PROFILE == "ci" else 400)
@given(
    teams=grants,
    owned=tasks,
    denied=objections,
    launch=st.sampled_from([None, "p1", "p3"]),
    ignore=st.lists(st.integers(1, 5), max_size=2),
    write=st.booleans(),
)
def test_list_and_probe_forms_answer_alike(
    app: Flask,
    teams: list[Any],
    owned: list[Any],
    denied: list[Any],
    launch: str | None,
    ignore: list[int],
    write: bool,
) -> None:
    _world(app, teams, owned, denied)
    if write:
        probes = policy.write_filter(MINE, NOW, launch, False, ignore)
    else:
        probes = policy.patient_filter(MINE, NOW, launch, False)
    assert probes.reach is not None
    lists = policy.PatientFilter(allowed=probes.allowed, offered=probes.offered)
    assert _answers(app, probes) == _answers(app, lists)
