#!/usr/bin/env python3
"""The coordinator's pages (issue 22): server time of ``GET /app/`` and ``GET /app/patients/<id>``.

    python bench/bench_pages.py                          # SQLite, 10,000 patients, 50,000 Tasks
    python bench/bench_pages.py --db postgresql          # a dedicated database (--pg-database)
    python bench/bench_pages.py --db sqlite --reuse /tmp/bench_pages-x/bench.db   # measure again

A realistic CPTS in a fresh database, through the project's import path (``importer.import_files``,
what ``coordination import`` runs: upserts by id, validation, index and access rows, dispatch hook),
not through HTTP: a directory (hospitals, the CPTS, 100 GPs, 100 nurses, 30 pharmacists, 30
physiotherapists with their PractitionerRoles, and the coordinator); per patient an INS identity
(70 % validated or qualified, the rest provisional and without INS), a cercle de soins for 90 % of
them (GP, nurse, the coordinator with the ``coordinateur-parcours`` role; a pharmacist for one in
three), one or two hospital stays (discharges spread over two years, 7 % within the last 14 days),
a discharge letter per stay (DocumentReference + Binary), a protocol CarePlan per stay with its
Tasks (``basedOn``, ``restriction.period.end``; ``--tasks`` in all): done for old stays, open for the
last month's — some offered (``performerType``, no owner: dispatch offers them), some past due — and
an objection (Consent deny) for 3 % of the patients.

Then, in-process (Flask test client; the figure is the server's work, no network), two users signed
in through the login page — the coordinator (in 90 % of the cercles de soins) and a GP (100 patients)
— each request ``--requests`` times per page after ``--warmup`` untimed ones, the patient page
cycling over patients the user may see. Printed: median and p95 in ms, and the SQL statements per
request (cursor executions on the app's engine, the audit row included). Goal (issue 22): ≤ 150 ms.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import Database, fresh_database, make_patient

from coordination_api.accounts import create_practitioner_user
from coordination_api.app import create_app
from coordination_api.config import DispatchSettings, Settings
from coordination_api.importer import import_files
from coordination_api.storage.migrate import upgrade
from fhir_profiles.french_identifiers import RELIABILITY_SYSTEM, RELIABILITY_URL, RPPS

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PROFESSION = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
CARE_CIRCLE = "https://coordination.example.org/fhir/CodeSystem/cercle-de-soins-role"
LOINC = "http://loinc.org"
COORDINATOR = "Practitioner/coord"
PASSWORD = "bench-pages-password-123"  # noqa: S105 (a fictional CPTS's bench login)
# (prefix, how many, profession code of TRE_G15, care-circle role, label)
STAFF = [
    ("gp", 100, "10", "medecin-traitant", "Médecin traitant"),
    ("ide", 100, "60", "infirmier-habituel", "Infirmier(ère) libéral(e) habituel(le) (IDEL)"),
    ("ph", 30, "21", "pharmacien-habituel", "Pharmacien(ne) d'officine habituel(le)"),
    ("kine", 30, "70", "masseur-kinesitherapeute", "Masseur-kinésithérapeute"),
]
HOSPITALS = 5
PROTOCOL_STEPS = [  # (title, days after discharge it is due, who does it)
    ("Appel de suivi J+2", 2, "ide"),
    ("Visite infirmière à domicile", 3, "ide"),
    ("Consultation du médecin traitant", 7, "gp"),
    ("Conciliation médicamenteuse", 5, "ph"),
    ("Bilan de kinésithérapie", 10, "kine"),
    ("Point de coordination J+14", 14, "coord"),
]
LETTER_B64 = base64.b64encode(b"%PDF-1.4\n% lettre de liaison (fictive)\n" + b"0" * 1200).decode()


def ref(target: str, display: str | None = None) -> dict[str, str]:
    out = {"reference": target}
    if display:
        out["display"] = display
    return out


def concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def rpps(kind_index: int, index: int) -> str:
    return f"1{kind_index:02d}{index:08d}"


# -- data ----------------------------------------------------------------------------------------


def directory() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"resourceType": "Organization", "id": "cpts", "name": "CPTS Bench-sur-Loire"}
    ]
    out += [
        {"resourceType": "Organization", "id": f"ch{h}", "name": f"Centre hospitalier de Bench {h + 1}"}
        for h in range(HOSPITALS)
    ]
    out.append(
        {
            "resourceType": "Practitioner",
            "id": "coord",
            "identifier": [{"system": RPPS, "value": rpps(99, 0)}],
            "name": [{"family": "Coordinatrice", "given": ["Claire"]}],
        }
    )
    for kind_index, (prefix, count, profession, _role, _label) in enumerate(STAFF):
        for i in range(count):
            out.append(
                {
                    "resourceType": "Practitioner",
                    "id": f"{prefix}{i}",
                    "identifier": [{"system": RPPS, "value": rpps(kind_index, i)}],
                    "name": [{"family": f"{prefix.upper()}{i}", "given": ["Camille"]}],
                }
            )
            out.append(
                {
                    "resourceType": "PractitionerRole",
                    "id": f"role-{prefix}{i}",
                    "active": True,
                    "practitioner": ref(f"Practitioner/{prefix}{i}"),
                    "organization": ref("Organization/cpts"),
                    "code": [concept(PROFESSION, profession)],
                }
            )
    return out


def staff_of(k: int) -> dict[str, str]:
    return {
        "gp": f"Practitioner/gp{k % 100}",
        "ide": f"PractitionerRole/role-ide{(k * 7) % 100}",
        "ph": f"PractitionerRole/role-ph{k % 30}",
        "kine": f"PractitionerRole/role-kine{(k * 11) % 30}",
        "coord": COORDINATOR,
    }


def role_for(kind: str) -> dict[str, Any]:
    for prefix, _count, profession, _role, _label in STAFF:
        if prefix == kind:
            return concept(PROFESSION, profession)
    raise KeyError(kind)


def circle_role(kind: str) -> dict[str, Any]:
    if kind == "coord":
        return concept(CARE_CIRCLE, "coordinateur-parcours", "Coordinateur(rice) de parcours")
    for prefix, _count, _profession, role, label in STAFF:
        if prefix == kind:
            return concept(CARE_CIRCLE, role, label)
    raise KeyError(kind)


def task_status(draw: random.Random, age_days: float, due: dt.datetime, now: dt.datetime) -> str:
    """Old stays' Tasks are done; the last month's are in every state, some past due."""
    if age_days > 30:
        return "completed" if draw.random() < 0.92 else "cancelled"
    if due > now + dt.timedelta(days=2):
        return draw.choice(["requested", "requested", "accepted", "accepted", "in-progress"])
    return draw.choice(["completed", "completed", "accepted", "requested", "in-progress"])


def patient_resources(k: int, tasks_per_patient: float, now: dt.datetime) -> list[dict[str, Any]]:
    draw = random.Random(k)
    data = make_patient(draw, k, ids=True)
    patient = dict(data.patient)
    patient["id"] = pid = f"pat{k}"
    status = draw.choices(["QUAL", "VALI", "PROV"], [0.3, 0.4, 0.3])[0]
    patient["extension"] = [
        {
            "url": RELIABILITY_URL,
            "extension": [
                {"url": "identityStatus", "valueCoding": {"system": RELIABILITY_SYSTEM, "code": status}}
            ],
        }
    ]
    if status == "PROV":  # an INS is carried by a validated or qualified identity only
        patient["identifier"] = [i for i in patient["identifier"] if "1.2.250.1.213.1.4" not in i["system"]]
    subject = ref(f"Patient/{pid}")
    staff = staff_of(k)
    out: list[dict[str, Any]] = [patient]
    if draw.random() < 0.9:
        members = ["gp", "ide", "coord"] + (["ph"] if k % 3 == 0 else [])
        out.append(
            {
                "resourceType": "CareTeam",
                "id": f"ct{k}",
                "status": "active",
                "name": f"Cercle de soins de {patient['name'][0]['family']}",
                "subject": subject,
                "participant": [{"role": [circle_role(m)], "member": ref(staff[m])} for m in members],
                "managingOrganization": [ref("Organization/cpts")],
            }
        )
    if draw.random() < 0.03:
        out.append(
            {
                "resourceType": "Consent",
                "id": f"opp{k}",
                "status": "active",
                "scope": concept("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy"),
                "category": [concept(LOINC, "59284-0")],
                "patient": subject,
                "dateTime": "2026-01-15",
                "policyRule": concept(ACT, "OPTIN"),
                "provision": {
                    "type": "deny",
                    "actor": [
                        {
                            "role": concept(
                                "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "PRCP"
                            ),
                            "reference": ref(f"Practitioner/kine{k % 30}"),
                        }
                    ],
                },
            }
        )
    stays = 2 if k % 3 == 0 else 1
    budget = round(tasks_per_patient * (k + 1)) - round(tasks_per_patient * k)  # exact total over all
    for j in range(stays):
        recent = j == stays - 1 and draw.random() < 0.07
        age_days = draw.uniform(0, 14) if recent else draw.uniform(15, 730)
        end = now - dt.timedelta(days=age_days)
        start = end - dt.timedelta(days=draw.randint(1, 12))
        stay, plan = f"enc{k}-{j}", f"cp{k}-{j}"
        out.append(
            {
                "resourceType": "Encounter",
                "id": stay,
                "status": "finished",
                "class": {"system": ACT, "code": "IMP", "display": "inpatient encounter"},
                "subject": subject,
                "period": {
                    "start": start.isoformat(timespec="seconds"),
                    "end": end.isoformat(timespec="seconds"),
                },
                "hospitalization": {
                    "dischargeDisposition": concept(
                        "http://terminology.hl7.org/CodeSystem/discharge-disposition", "home", "Home"
                    )
                },
                "serviceProvider": ref(f"Organization/ch{k % HOSPITALS}"),
            }
        )
        out.append(
            {
                "resourceType": "DocumentReference",
                "id": f"doc{k}-{j}",
                "status": "current",
                "type": concept(LOINC, "11490-0", "Discharge summary"),
                "subject": subject,
                "date": end.isoformat(timespec="seconds"),
                "author": [ref(f"Organization/ch{k % HOSPITALS}")],
                "context": {"encounter": [ref(f"Encounter/{stay}")]},
                "content": [
                    {
                        "attachment": {
                            "contentType": "application/pdf",
                            "url": f"Binary/bin{k}-{j}",
                            "title": "Lettre de liaison de sortie",
                        }
                    }
                ],
            }
        )
        out.append(
            {
                "resourceType": "Binary",
                "id": f"bin{k}-{j}",
                "contentType": "application/pdf",
                "securityContext": ref(f"DocumentReference/doc{k}-{j}"),
                "data": LETTER_B64,
            }
        )
        count = budget // stays + (1 if j < budget % stays else 0)
        steps = PROTOCOL_STEPS[:count] if count <= len(PROTOCOL_STEPS) else PROTOCOL_STEPS * 2
        task_ids = []
        for i, (title, days, kind) in enumerate(steps[:count]):
            due = end + dt.timedelta(days=days)
            status = task_status(draw, age_days, due, now)
            task: dict[str, Any] = {
                "resourceType": "Task",
                "id": f"task{k}-{j}-{i}",
                "basedOn": [ref(f"CarePlan/{plan}")],
                "status": status,
                "intent": "order",
                "code": {"text": title},
                "for": subject,
                "encounter": ref(f"Encounter/{stay}"),
                "authoredOn": end.isoformat(timespec="seconds"),
                "restriction": {
                    "period": {
                        "start": end.isoformat(timespec="seconds"),
                        "end": due.isoformat(timespec="seconds"),
                    }
                },
            }
            if status == "requested" and kind != "coord" and draw.random() < 0.5:
                task["performerType"] = [role_for(kind)]  # an open offer: dispatch takes it from here
            else:
                task["owner"] = ref(staff[kind])
            out.append(task)
            task_ids.append(task["id"])
        out.append(
            {
                "resourceType": "CarePlan",
                "id": plan,
                "status": "active" if age_days <= 30 else "completed",
                "intent": "plan",
                "title": "Retour à domicile après hospitalisation",
                "subject": subject,
                "encounter": ref(f"Encounter/{stay}"),
                "period": {"start": end.isoformat(timespec="seconds")},
                "activity": [{"reference": ref(f"Task/{t}")} for t in task_ids],
            }
        )
    return out


def write_files(args: argparse.Namespace, workdir: Path, now: dt.datetime) -> list[Path]:
    first = workdir / "directory.ndjson"
    first.write_bytes(b"\n".join(orjson.dumps(r) for r in directory()) + b"\n")
    files = [first]
    per_task = args.tasks / args.patients
    per_file = 2000
    for start in range(0, args.patients, per_file):
        path = workdir / f"patients-{start}.ndjson"
        with path.open("wb") as out:
            for k in range(start, min(args.patients, start + per_file)):
                for resource in patient_resources(k, per_task, now):
                    out.write(orjson.dumps(resource) + b"\n")
        files.append(path)
    return files


@contextlib.contextmanager
def _no_progress(_label: str, _length: int) -> Iterator[Any]:
    class Bar:
        def update(self, _n: int) -> None:
            pass

    yield Bar()


def seed(app: Flask, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    svc = app.extensions["coordination"]
    started = time.perf_counter()
    if args.via_import:
        files = write_files(args, workdir, now)
        summary = import_files(svc, [str(files[0])], 1000, _no_progress)
        summary.merge(import_files(svc, [str(f) for f in files[1:]], 1000, _no_progress, jobs=args.jobs))
        if summary.failed:
            raise SystemExit(f"import failed:\n{summary.render()}")
        created = summary.created
    else:
        created = write_direct(app, args, now)
    seconds = time.perf_counter() - started
    how = "import_files" if args.via_import else "repository writes"
    print(f"seeded {created:,} resources in {seconds:.0f} s ({created / seconds:,.0f}/s, {how})", flush=True)
    return {"resources": created, "seconds": round(seconds, 1), "how": how}


def write_direct(app: Flask, args: argparse.Namespace, now: dt.datetime) -> int:
    """``Repository.create_many`` in transactions of ~1,000 resources: the repository's hooks run
    (index and access rows, Consent actors, dispatch of the open offers), validation does not (the
    same data passes it: ``--via-import``)."""
    svc = app.extensions["coordination"]
    per_task = args.tasks / args.patients
    created = 0

    def flush(batch: list[dict[str, Any]]) -> int:
        with svc.repo.writing() as conn:
            svc.repo.create_many(conn, [(r["resourceType"], r["id"], r) for r in batch], "PUT")
        svc.stats.refresh(wait=True)
        return len(batch)

    created += flush(directory())
    batch: list[dict[str, Any]] = []
    for k in range(args.patients):
        batch += patient_resources(k, per_task, now)
        if len(batch) >= 1000:
            created += flush(batch)
            batch = []
    if batch:
        created += flush(batch)
    svc.stats.refresh(wait=True, force=True)
    return created


def accounts(app: Flask) -> None:
    store = app.extensions["auth"].store
    if store.user("bench-coord") is None:
        create_practitioner_user(app, "bench-coord", rpps(99, 0), PASSWORD, "Coordinatrice", "Claire")
    if store.user("bench-gp") is None:
        create_practitioner_user(app, "bench-gp", rpps(0, 0), PASSWORD, "GP0", "Camille")


# -- measurement -----------------------------------------------------------------------------------


def sign_in(app: Flask, username: str) -> FlaskClient:
    client = app.test_client()
    page = client.get("/auth/login")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert found, "no CSRF token on the login page"
    answer = client.post(
        "/auth/login", data={"username": username, "password": PASSWORD, "csrf_token": found.group(1)}
    )
    assert answer.status_code in (200, 303), answer.status_code
    return client


def visible_patients(app: Flask, member: str, count: int, rng: random.Random) -> list[str]:
    """Patients whose cercle de soins lists ``member``, the recently discharged first (their pages
    are the fullest), then others."""
    engine = app.extensions["coordination"].repo.engine
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT DISTINCT patient_id FROM care_team_access WHERE member = :m"), {"m": member}
        ).all()
        recent = conn.execute(
            text(
                "SELECT DISTINCT c.patient_id FROM resource r JOIN idx_compartment c ON c.res_pk = r.pk "
                "WHERE r.res_type = 'CarePlan' AND r.content LIKE '%\"status\":\"active\"%'"
            )
        ).all()
    mine = sorted(r[0] for r in rows)
    fresh = sorted({r[0] for r in recent} & set(mine))
    rng.shuffle(mine)
    rng.shuffle(fresh)
    chosen = fresh[: count // 2]
    chosen += [p for p in mine if p not in chosen][: count - len(chosen)]
    return chosen


class Statements:
    """Cursor executions on the app's engine (its audit writer's included)."""

    def __init__(self, app: Flask) -> None:
        self.count = 0
        engine = app.extensions["coordination"].repo.engine
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *_args: Any) -> None:
        self.count += 1


def timed(client: FlaskClient, paths: list[str], warmup: int, n: int, sql: Statements) -> dict[str, float]:
    for i in range(warmup):
        response = client.get(paths[i % len(paths)])
        assert response.status_code == 200, (paths[i % len(paths)], response.status_code)
    times, counts = [], []
    for i in range(n):
        path = paths[i % len(paths)]
        before = sql.count
        started = time.perf_counter()
        response = client.get(path)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, (path, response.status_code)
        times.append(elapsed)
        counts.append(sql.count - before)
    times.sort()
    return {
        "median": statistics.median(times),
        "p95": times[min(len(times) - 1, int(len(times) * 0.95))],
        "statements": statistics.median(counts),
        "n": n,
    }


def measure(app: Flask, args: argparse.Namespace) -> list[tuple[str, str, dict[str, float]]]:
    sql = Statements(app)
    rng = random.Random(args.seed)
    rows = []
    for label, username, member in (
        ("coordinator", "bench-coord", COORDINATOR),
        ("practitioner (GP)", "bench-gp", "Practitioner/gp0"),
    ):
        client = sign_in(app, username)
        patients = visible_patients(app, member, 40, rng)
        rows.append((label, "GET /app/", timed(client, ["/app/"], args.warmup, args.requests, sql)))
        paths = [f"/app/patients/{p}" for p in patients]
        rows.append((label, "GET /app/patients/<id>", timed(client, paths, args.warmup, args.requests, sql)))
    return rows


def make_app(url: str, args: argparse.Namespace) -> Flask:
    settings = Settings(
        database_url=url,
        access_log=False,
        log_level="WARNING",
        audit_reads=args.audit_reads,
        dispatch=DispatchSettings(coordinator=COORDINATOR),
    )
    app = create_app(settings)
    upgrade(app.extensions["coordination"].repo.engine)
    return app


def count_rows(app: Flask) -> dict[str, int]:
    engine = app.extensions["coordination"].repo.engine
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT res_type, count(*) FROM resource WHERE NOT deleted GROUP BY res_type ORDER BY 1")
        ).all()
    return {r[0]: int(r[1]) for r in rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgresql", "postgres"], default="sqlite")
    p.add_argument("--patients", type=int, default=10_000)
    p.add_argument("--tasks", type=int, default=50_000)
    p.add_argument("--requests", type=int, default=60, help="timed requests per page and user")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--via-import", action="store_true", help="seed through import_files (validated, slower)")
    p.add_argument(
        "--jobs", type=int, default=0, help="import processes (default: 2 on PostgreSQL, 1 on SQLite)"
    )
    p.add_argument("--audit-reads", choices=["sync", "async"], default="sync", help="as in production: sync")
    p.add_argument(
        "--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432", help="server, no database"
    )
    p.add_argument("--pg-database", default="bench_pages", help="dropped and recreated (never 'test')")
    p.add_argument("--reuse", default="", help="a database URL (or SQLite path) seeded by an earlier run")
    p.add_argument("--keep-db", action="store_true", help="keep the SQLite file's directory")
    p.add_argument("--seed", type=int, default=22)
    args = p.parse_args(argv)
    args.db = "postgresql" if args.db == "postgres" else args.db
    args.jobs = args.jobs or (2 if args.db == "postgresql" else 1)
    workdir = Path(tempfile.mkdtemp(prefix="bench_pages-"))
    seeded: dict[str, Any] = {}
    if args.reuse:
        url = args.reuse if "://" in args.reuse else f"sqlite:///{args.reuse}"
        app = make_app(url, args)
    else:
        db: Database = fresh_database(args, workdir)
        url = db.url
        app = make_app(url, args)
        seeded = seed(app, args, workdir)
    accounts(app)
    counts = count_rows(app)
    print(f"database: {args.db} ({url}); {sum(counts.values()):,} resources: ", end="")
    print(", ".join(f"{k} {v:,}" for k, v in counts.items()))
    rows = measure(app, args)
    print()
    print(
        f"| {args.db}, {counts.get('Patient', 0):,} patients, {counts.get('Task', 0):,} Tasks "
        "| median ms | p95 ms | SQL statements |"
    )
    print("| --- | ---: | ---: | ---: |")
    for user, page, r in rows:
        print(f"| {user}: `{page}` | {r['median']:.1f} | {r['p95']:.1f} | {r['statements']:.0f} |")
    if seeded:
        print(f"\nseeded {seeded['resources']:,} resources in {seeded['seconds']:.0f} s ({seeded['how']})")
    app.extensions["audit_writer"].flush()
    app.extensions["coordination"].repo.engine.dispose()
    if args.keep_db and args.db == "sqlite" and not args.reuse:
        print(f"(database kept: measure again with --reuse {workdir / 'bench.db'})")
    elif not args.keep_db:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
