"""« Sorties à suivre » ranked from the search index (issue 22, pages/worklist ``_window``,
``_follow_up``; search/projection): per stay the same counts, late badge, next due date and protocols
as the FHIR API gives the same practitioner, the urgency order and filters, the 50-row cut with
« Tout afficher », and an AuditEvent that names the patients counted and never one out of reach."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from tests.conftest import Fhir
from tests.coordination.protocols.builders import care_team
from tests.factories import bundle_ok, create_patient, encounter, post_entry
from tests.support.auth import audit_rows, bearer, user_token
from tests.support.pages import Cpts, build_cpts, fhir_instant, sign_in

OPEN = {"requested", "received", "accepted", "ready", "in-progress", "on-hold"}
TAKEN = {"accepted", "ready", "in-progress", "on-hold", "completed"}
NOT_COUNTED = {"cancelled", "rejected", "entered-in-error", "draft"}
PLANNED = {"active", "completed", "on-hold"}
ROW = re.compile(r'<tr id="sortie-([^"]+)">(.*?)</tr>', re.S)
CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)
BADGE = '<span class="badge">En retard</span>'
ALL_LINK = "Tout afficher</a>"


@dataclass(frozen=True)
class Row:
    """What one row of « Sorties à suivre » shows (or should)."""

    stay: str
    protocols: str  # "aucun" or the titles, comma-separated
    done: str  # "<done> / <total>"
    due: str  # dd/mm/yyyy or "—"
    late: bool


def shown(html: str) -> list[Row]:
    """The rows of « Sorties à suivre », in page order."""
    rows = []
    for stay, body in ROW.findall(html):
        cells = CELL.findall(body)
        due = cells[5].replace(BADGE, "").strip()
        rows.append(Row(stay, cells[3].strip(), cells[4].strip(), due, BADGE in cells[5]))
    return rows


def _api(app: Flask, username: str) -> FlaskClient:
    api = app.test_client()
    api.environ_base["HTTP_AUTHORIZATION"] = bearer(user_token(app, "user/*.cruds", username))[
        "Authorization"
    ]
    return api


def _matches(api: FlaskClient, query: str) -> list[dict[str, Any]]:
    response = api.get(f"/fhir/{query}")
    assert response.status_code == 200, response.get_json()
    return [e["resource"] for e in response.get_json().get("entry", []) if e["search"]["mode"] == "match"]


def _moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def expected(api: FlaskClient, now: datetime) -> list[Row]:
    """The table as the FHIR API's answers to the same practitioner make it: the stays finished in
    the last 14 days, their CarePlans and Tasks read whole and counted here, in urgency order."""
    cutoff = now - timedelta(days=14)
    ranked = []
    for stay in _matches(api, f"Encounter?date=ge{fhir_instant(cutoff)}&_count=1000"):
        end = (stay.get("period") or {}).get("end")
        if stay["status"] != "finished" or not end or _moment(end) < cutoff:
            continue
        ref = f"Encounter/{stay['id']}"
        plans = [p for p in _matches(api, f"CarePlan?encounter={ref}&_count=1000") if p["status"] in PLANNED]
        tasks = [
            t for t in _matches(api, f"Task?encounter={ref}&_count=1000") if t["status"] not in NOT_COUNTED
        ]
        dues = [
            _moment(t["restriction"]["period"]["end"])
            for t in tasks
            if t["status"] in OPEN and (t.get("restriction") or {}).get("period", {}).get("end")
        ]
        late = any(d < now for d in dues)
        followed = bool(plans) and any(t["status"] in TAKEN for t in tasks)
        next_due = min(dues) if dues else None
        row = Row(
            stay["id"],
            ", ".join(sorted(str(p.get("title")) for p in plans)) or "aucun",
            f"{sum(t['status'] == 'completed' for t in tasks)} / {len(tasks)}",
            next_due.strftime("%d/%m/%Y") if next_due else "—",
            late,
        )
        urgency = (
            0 if late else 1 if not followed else 2,
            next_due.timestamp() if next_due else float("inf"),
        )
        ranked.append((urgency, -_moment(end).timestamp(), row))
    ranked.sort(key=lambda item: (item[0], item[1]))
    return [row for _u, _d, row in ranked]


def _sorted_protocols(rows: list[Row]) -> list[Row]:
    """Protocol titles compared as a set (the page lists them in the API's order)."""
    return [Row(r.stay, ", ".join(sorted(r.protocols.split(", "))), r.done, r.due, r.late) for r in rows]


# -- a small CPTS: patients in and out of the coordinator's reach, stays around the window ------------


@dataclass
class World:
    cpts: Cpts
    p: str  # the patient of build_cpts (the coordinator's)
    r: str  # another patient the coordinator coordinates
    s: str  # a third, in her reach, whose Task names P's stay
    q: str  # a patient out of her reach
    stays: dict[str, str]  # name -> Encounter id


def _stay(fhir: Fhir, patient: str, status: str, start: datetime, end: datetime | None) -> str:
    period = {"start": fhir_instant(start), **({"end": fhir_instant(end)} if end else {})}
    return str(fhir.create(encounter(subject=f"Patient/{patient}", status=status, period=period))["id"])


def _task(
    fhir: Fhir, patient: str | None, stay: str, status: str, due: datetime | None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Task",
        "status": status,
        "intent": "order",
        "code": {"text": f"Tâche {status}"},
        "encounter": {"reference": f"Encounter/{stay}"},
        **extra,
    }
    if patient:
        body["for"] = {"reference": f"Patient/{patient}"}
    if due:
        body["restriction"] = {"period": {"end": fhir_instant(due)}}
    return fhir.create(body)


def _plan(fhir: Fhir, patient: str, stay: str, title: str, status: str = "active") -> None:
    fhir.create(
        {
            "resourceType": "CarePlan",
            "status": status,
            "intent": "plan",
            "title": title,
            "subject": {"reference": f"Patient/{patient}"},
            "encounter": {"reference": f"Encounter/{stay}"},
        }
    )


@pytest.fixture
def world(app: Flask, fhir: Fhir) -> World:
    cpts = build_cpts(app, fhir)
    coord = f"Practitioner/{cpts.practitioners['coord']}"
    p = cpts.patient.split("/")[1]
    r, s, q = (create_patient(fhir.client, name) for name in ("Roux", "Simon", "Horsdeportee"))
    care_team(fhir, f"Patient/{r}", {"coordinateur-parcours": coord})
    care_team(fhir, f"Patient/{s}", {"coordinateur-parcours": coord})
    now = datetime.now(UTC)
    day = timedelta(days=1)
    stays = {
        # late: an open Task past due; followed otherwise (a protocol, a Task taken)
        "late": _stay(fhir, p, "finished", now - 8 * day, now - 2 * day),
        # not followed: no protocol, one requested Task due in 5 days
        "unplanned": _stay(fhir, r, "finished", now - 6 * day, now - 3 * day),
        # not followed: a protocol, nothing taken yet, due in 3 days
        "untaken": _stay(fhir, p, "finished", now - 5 * day, now - 4 * day),
        # followed, due in 2 days; its late Task was completed by an update
        "followed-soon": _stay(fhir, p, "finished", now - 3 * day, now - 1 * day),
        # followed, nothing due (an accepted Task with no deadline)
        "followed-nodue": _stay(fhir, r, "finished", now - 9 * day, now - 5 * day),
        # overlapping the window's start, ended inside it: listed, no Task at all
        "overlap": _stay(fhir, p, "finished", now - 20 * day, now - 13 * day),
        # not listed: still in hospital, no end, ended before the window, the patient out of reach
        "ongoing": _stay(fhir, p, "in-progress", now - 2 * day, None),
        "no-end": _stay(fhir, p, "finished", now - 2 * day, None),  # finished, end unknown
        "before": _stay(fhir, p, "finished", now - 25 * day, now - 15 * day),
        "hidden": _stay(fhir, q, "finished", now - 4 * day, now - 2 * day),
    }
    e = stays
    _plan(fhir, p, e["late"], "Retour à domicile")
    _plan(fhir, p, e["late"], "Suivi pharmaceutique")
    _plan(fhir, p, e["late"], "Abandonné", status="revoked")  # not a protocol started
    _task(fhir, p, e["late"], "completed", now - 3 * day)  # done, past due: not late
    _task(fhir, p, e["late"], "requested", now - 6 * timedelta(hours=1))  # late
    _task(fhir, p, e["late"], "requested", now + 4 * day)  # same status, due later
    _task(fhir, p, e["late"], "accepted", None)  # taken, no deadline
    _task(fhir, s, e["late"], "completed", now + 6 * day)  # another patient of hers: counted (only)
    for status in ("cancelled", "entered-in-error", "draft", "rejected"):  # not counted, not late
        _task(fhir, p, e["late"], status, now - 5 * day)
    _task(fhir, q, e["late"], "requested", now - 7 * day)  # out of her reach: neither counted nor late
    _task(fhir, q, e["late"], "completed", now - 7 * day)
    _task(fhir, r, e["unplanned"], "requested", now + 5 * day)
    _task(fhir, r, e["unplanned"], "accepted", now + 9 * day)  # taken, but no protocol: not followed
    _plan(fhir, p, e["untaken"], "Retour à domicile")
    _task(fhir, p, e["untaken"], "requested", now + 7 * day)
    _task(fhir, p, e["untaken"], "requested", now + 3 * day)  # the next due: the earliest
    _task(fhir, q, e["untaken"], "accepted", now + 1 * day)  # out of reach: would make it followed
    _plan(fhir, p, e["followed-soon"], "Retour à domicile")
    _task(fhir, p, e["followed-soon"], "in-progress", now + 2 * day)
    was_late = _task(fhir, p, e["followed-soon"], "requested", now - 1 * day)
    done = {**was_late, "status": "completed"}
    response = fhir.request("PUT", f"/fhir/Task/{was_late['id']}", done)
    assert response.status_code == 200, response.get_json()
    _plan(fhir, r, e["followed-nodue"], "Suivi IDE", status="completed")
    _task(fhir, r, e["followed-nodue"], "accepted", None)
    _task(fhir, q, e["hidden"], "requested", now - 1 * day)
    return World(cpts, p, r, s, q, stays)


def _date(moment: datetime) -> str:
    return moment.strftime("%d/%m/%Y")


def test_each_row_counts_what_the_api_returns_and_ranks_by_urgency(app: Flask, world: World) -> None:
    browser = sign_in(app, "coord")
    now = datetime.now(UTC)
    html = browser.get("/app/").get_data(as_text=True)
    page = shown(html)
    assert _sorted_protocols(page) == expected(_api(app, "coord"), now)
    # The same, spelled out: what a wrong count, filter or order would change.
    e = world.stays
    day = timedelta(days=1)
    assert page == [
        Row(e["late"], "Retour à domicile, Suivi pharmaceutique", "2 / 5", _date(now - 6 * day / 24), True),
        Row(e["untaken"], "Retour à domicile", "0 / 2", _date(now + 3 * day), False),
        Row(e["unplanned"], "aucun", "0 / 2", _date(now + 5 * day), False),
        Row(e["overlap"], "aucun", "0 / 0", "—", False),
        Row(e["followed-soon"], "Retour à domicile", "1 / 2", _date(now + 2 * day), False),
        Row(e["followed-nodue"], "Suivi IDE", "0 / 1", "—", False),
    ]
    assert "<title>Liste de travail (6 sorties," in html and ALL_LINK not in html
    late = shown(browser.get("/app/?filtre=en-retard").get_data(as_text=True))
    assert [r.stay for r in late] == [e["late"]]
    waiting = shown(browser.get("/app/?filtre=non-suivies").get_data(as_text=True))
    assert [r.stay for r in waiting] == [e["untaken"], e["unplanned"], e["overlap"]]
    assert "Horsdeportee" not in html and world.q not in html


@pytest.mark.parametrize("username", ["ide-a", "dr-martin", "dr-dehors"])
def test_other_practitioners_see_their_own_counts(app: Flask, world: World, username: str) -> None:
    now = datetime.now(UTC)
    page = shown(sign_in(app, username).get("/app/").get_data(as_text=True))
    assert _sorted_protocols(page) == expected(_api(app, username), now)
    if username == "dr-dehors":
        assert page == []


def _audited_patients(app: Flask, agent: str, before: int) -> tuple[Any, set[str]]:
    app.extensions["audit_writer"].flush()
    rows = [r for r in audit_rows(app)[before:] if r.agent == agent]
    assert len(rows) == 1, rows
    engine = app.extensions["coordination"].repo.engine
    with engine.connect() as conn:
        patients = {
            p
            for (p,) in conn.execute(
                text("SELECT patient_id FROM audit_patient WHERE audit_pk = :k"), {"k": rows[0].pk}
            )
        }
    return rows[0], patients


def test_the_audit_event_names_the_patients_counted_never_one_out_of_reach(app: Flask, world: World) -> None:
    browser = sign_in(app, "coord")
    app.extensions["audit_writer"].flush()
    before = len(audit_rows(app))
    for query in ("/app/", "/app/?filtre=en-retard", "/app/?tout=1"):
        assert browser.get(query).status_code == 200
        coord = f"Practitioner/{world.cpts.practitioners['coord']}"
        event, patients = _audited_patients(app, coord, before)
        before = len(audit_rows(app))
        assert event.outcome == "0"
        # P and R: their stays; S: only counted (her completed Task on P's stay), never read whole.
        assert {world.p, world.r, world.s} <= patients
        assert world.q not in patients and world.q not in str(event.content)
        assert world.stays["hidden"] not in str(event.content)


# -- the 50-row cut ---------------------------------------------------------------------------------


def test_fifty_rows_first_the_most_urgent_and_all_of_them_on_request(app: Flask, fhir: Fhir) -> None:
    cpts = build_cpts(app, fhir)
    now = datetime.now(UTC)
    ends = [now - timedelta(hours=2 + 4 * i) for i in range(56)]  # newest first, over ~9 days
    created = bundle_ok(
        fhir,
        [
            post_entry(
                encounter(
                    subject=cpts.patient,
                    period={"start": fhir_instant(end - timedelta(days=3)), "end": fhir_instant(end)},
                )
            )
            for end in ends
        ],
    )
    ids = [entry["response"]["location"].split("Encounter/")[1].split("/")[0] for entry in created["entry"]]
    # The three oldest stays are late: they lead the table although discharged first.
    patient = cpts.patient.split("/")[1]
    for offset, stay in enumerate(ids[-3:]):
        _task(fhir, patient, stay, "requested", now - timedelta(days=1, hours=offset))
    late = [ids[-1], ids[-2], ids[-3]]  # by due date
    browser = sign_in(app, "coord")
    html = browser.get("/app/").get_data(as_text=True)
    first = [r.stay for r in shown(html)]
    assert first == late + ids[:47]
    assert ALL_LINK in html and 'href="?filtre=toutes&amp;tout=1"' in html
    assert "<title>Liste de travail (56 sorties," in html
    every = browser.get("/app/?tout=1").get_data(as_text=True)
    assert [r.stay for r in shown(every)] == late + ids[:53] and ALL_LINK not in every
    only_late = browser.get("/app/?filtre=en-retard").get_data(as_text=True)
    assert [r.stay for r in shown(only_late)] == late and ALL_LINK not in only_late
    waiting = browser.get("/app/?filtre=non-suivies").get_data(as_text=True)
    assert len(shown(waiting)) == 50 and 'href="?filtre=non-suivies&amp;tout=1"' in waiting
