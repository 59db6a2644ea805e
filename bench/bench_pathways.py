#!/usr/bin/env python3
"""Care pathways (issue 7): Patient/$everything, the practice-software worklists, $apply.

    python bench/bench_pathways.py                       # PostgreSQL, 100,000 patients
    python bench/bench_pathways.py --patients 20000      # a reduced scale (say so with the figures)
    python bench/bench_pathways.py --db sqlite --patients 2000

One fresh database (PostgreSQL database ``--pg-database``, dropped and recreated; or a SQLite file),
filled through ``coordination import`` of NDJSON (upserts by id, chunked transactions, ``--jobs``
processes): a directory of practitioners, roles and organizations; per patient an active CareTeam
(GP, nurse's PractitionerRole, CPTS Organization), a finished hospital stay (Encounter, ending in the
24 months up to November 2026), a ServiceRequest, the GP's follow-up Task with a deadline
(``restriction.period.end``; still open for stays of the last two months only), a Task for a profession
(``performerType``; 5 % still untaken, without owner) focused on the stay, and an active CarePlan whose
activities reference them (7 resources a patient); and one patient with 1,000 resources of their own.

Then ``coordination serve`` (no delivery worker, no MLLP listener) and, at ``--concurrency`` closed-loop
connections, ``--warmup`` s discarded then ``--duration`` s measured per scenario, as a practitioner's
app would (user token of ``bench-gp``, GP of one patient in ``--practitioners``, so the care-team rule
is in every query) and as a backend (system token, all patients visible):

- ``read`` Patient by id (the baseline of the ratios);
- ``$everything`` of the 1,000-resource patient, in one page (``_count=1000``) and its first page of 100
  (also with one client alone, with the read, for the latency a single user sees);
- the worklists of bench/README.md "Care pathways (issue 7)";
- ``PlanDefinition/{id}/$apply`` for a shipped protocol if the route answers (skipped with a message
  otherwise).

Results in bench/results/pathways-<db>-<time>.json and a Markdown table on stdout. The load generator,
processes and database handling are bench_core.py's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_auth import create_user, user_token
from bench_core import (
    HOST,
    REPO_ROOT,
    RESULTS_DIR,
    LoadGen,
    Req,
    RunResult,
    Server,
    analyze,
    bin_path,
    check_once,
    count_resources,
    db_upgrade,
    dumps,
    env_for,
    fresh_database,
    measure,
    run_header,
    system_token,
    workspace,
)

PROFESSION = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
ROLE = "https://mos.esante.gouv.fr/NOS/TRE_R85-RolePriseCharge/FHIR/TRE-R85-RolePriseCharge"
PROFESSIONS = [
    "60",
    "21",
    "70",
    "40",
    "26",
]  # infirmier, pharmacien, masseur-kiné, chirurgien-dentiste, orthophoniste
RICH = "rich"
RECENT = ["ge2026-10-15", "ge2026-11-01", "ge2026-11-15"]  # "discharged since …" (data ends 2026-11)


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


def concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


# -- data ----------------------------------------------------------------------------------------


def directory(args: argparse.Namespace) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for k in range(args.organizations):
        out.append({"resourceType": "Organization", "id": f"org{k}", "name": f"CPTS {k}"})
    for k in range(args.practitioners):
        out.append({"resourceType": "Practitioner", "id": f"pr{k}", "name": [{"family": f"Praticien{k}"}]})
        out.append(
            {
                "resourceType": "PractitionerRole",
                "id": f"role{k}",
                "active": True,
                "practitioner": ref(f"Practitioner/pr{k}"),
                "organization": ref(f"Organization/org{k % args.organizations}"),
                "code": [concept(PROFESSION, PROFESSIONS[k % len(PROFESSIONS)])],
            }
        )
    return out


def gp_of(k: int, args: argparse.Namespace, me: str) -> str:
    return me if k % args.practitioners == 0 else f"Practitioner/pr{k % args.practitioners}"


def patient_resources(k: int, args: argparse.Namespace, me: str) -> list[dict[str, Any]]:
    """The 7 resources of patient ``p{k}``'s pathway after a hospital stay.

    Stays end over the 24 months up to November 2026 (uniformly); the follow-up Task is still open
    (requested or accepted) for stays of the last two months only, completed before; 5 % of the
    patients have a request for a profession nobody has taken yet (no owner), the others' was taken."""
    p, gp = f"p{k}", gp_of(k, args, me)
    draw = random.Random(k)  # independent of k's residues, unlike k % n (the GP is k % practitioners)
    months_ago, day = draw.randrange(24), 1 + draw.randrange(27)
    year, month = divmod(2026 * 12 + 10 - months_ago, 12)  # November 2026 is 2026 * 12 + 10
    month += 1
    discharged = f"{year}-{month:02d}-{day:02d}"
    deadline = f"{year}-{month:02d}-{day + 1:02d}T18:00:00Z"
    recent, untaken = months_ago < 2, draw.random() < 0.05
    follow_up = ("requested" if k % 2 else "accepted") if recent else "completed"
    profession = PROFESSIONS[k % len(PROFESSIONS)]
    taken = {} if untaken else {"owner": ref(f"PractitionerRole/role{(k * 7) % args.practitioners}")}
    subject = ref(f"Patient/{p}")
    return [
        {"resourceType": "Patient", "id": p, "name": [{"family": f"Patient{k}", "given": ["Anne"]}]},
        {
            "resourceType": "CareTeam",
            "id": f"ct{k}",
            "status": "active",
            "subject": subject,
            "participant": [
                {"role": [concept(ROLE, "MT")], "member": ref(gp)},
                {
                    "role": [concept(ROLE, "IDE")],
                    "member": ref(f"PractitionerRole/role{(k * 7) % args.practitioners}"),
                },
                {"member": ref(f"Organization/org{k % args.organizations}")},
            ],
        },
        {
            "resourceType": "Encounter",
            "id": f"enc{k}",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": subject,
            "period": {"start": f"{year}-{month:02d}-01", "end": discharged},
        },
        {
            "resourceType": "ServiceRequest",
            "id": f"sr{k}",
            "status": "active",
            "intent": "order",
            "code": {"text": "Soins infirmiers à domicile"},
            "subject": subject,
            "requester": ref(gp),
            "authoredOn": discharged,
        },
        {
            "resourceType": "Task",
            "id": f"tf{k}",
            "status": follow_up,
            "intent": "order",
            "code": {"text": "Consultation de suivi"},
            "for": subject,
            "focus": ref(f"Encounter/enc{k}"),
            "owner": ref(gp),
            "authoredOn": discharged,
            "restriction": {"period": {"end": deadline}},
        },
        {
            "resourceType": "Task",
            "id": f"to{k}",
            "status": "requested" if untaken else "accepted",
            "intent": "order",
            "code": {"text": "Visite à domicile"},
            "for": subject,
            "focus": ref(f"Encounter/enc{k}"),
            "performerType": [concept(PROFESSION, profession)],
            **taken,
            "authoredOn": discharged,
            "restriction": {"period": {"end": deadline}},
        },
        {
            "resourceType": "CarePlan",
            "id": f"cp{k}",
            "status": "active",
            "intent": "plan",
            "subject": subject,
            "period": {"start": discharged},
            "activity": [{"reference": ref(f"Task/tf{k}")}, {"reference": ref(f"ServiceRequest/sr{k}")}],
        },
    ]


def rich_patient(me: str, size: int) -> list[dict[str, Any]]:
    """One patient with ``size`` resources of their own (observations, stays, conditions, tasks…)."""
    subject = ref(f"Patient/{RICH}")
    out: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": RICH, "name": [{"family": "Chronique", "given": ["Paul"]}]},
        {
            "resourceType": "CareTeam",
            "id": f"{RICH}-team",
            "status": "active",
            "subject": subject,
            "participant": [{"member": ref(me)}, {"member": ref("Organization/org0")}],
        },
    ]
    kinds = ["Observation"] * 5 + ["Encounter", "Condition", "Task", "ServiceRequest", "MedicationRequest"]
    for i in range(size - len(out)):
        kind, day = kinds[i % len(kinds)], f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}"
        rid = f"{RICH}-{kind.lower()}-{i}"
        if kind == "Observation":
            res: dict[str, Any] = {
                "status": "final",
                "code": concept("http://loinc.org", "8867-4"),
                "subject": subject,
                "effectiveDateTime": day,
                "performer": [ref(f"Practitioner/pr{i % 10}")],
                "valueQuantity": {"value": 60 + i % 40, "unit": "/min"},
            }
        elif kind == "Encounter":
            res = {
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": subject,
                "period": {"start": day, "end": day},
                "serviceProvider": ref("Organization/org0"),
            }
        elif kind == "Condition":
            res = {"code": {"text": f"Condition {i}"}, "subject": subject, "onsetDateTime": day}
        elif kind == "Task":
            res = {
                "status": "completed",
                "intent": "order",
                "for": subject,
                "owner": ref(me),
                "authoredOn": day,
            }
        elif kind == "ServiceRequest":
            res = {"status": "completed", "intent": "order", "subject": subject, "authoredOn": day}
        else:
            res = {
                "status": "active",
                "intent": "order",
                "subject": subject,
                "medicationCodeableConcept": {"text": "Metformine 500 mg"},
                "authoredOn": day,
            }
        out.append({"resourceType": kind, "id": rid, **res})
    return out


def load(args: argparse.Namespace, db: Any, workdir: Path, me: str) -> dict[str, Any]:
    """NDJSON files through ``coordination import --jobs``; returns the import figures."""
    files = []
    per_file = max(1, args.patients // args.import_jobs + 1)
    first = workdir / "directory.ndjson"
    lines = [dumps(r) for r in directory(args)] + [dumps(r) for r in rich_patient(me, args.rich_resources)]
    first.write_text("\n".join(lines) + "\n", "utf-8")
    for start in range(0, args.patients, per_file):
        path = workdir / f"patients-{start}.ndjson"
        with path.open("w", encoding="utf-8") as out:
            for k in range(start, min(args.patients, start + per_file)):
                for resource in patient_resources(k, args, me):
                    out.write(dumps(resource) + "\n")
        files.append(path)
    started = time.perf_counter()
    before = count_resources(db)
    log = workdir / "import.log"
    for batch in ([first], files):
        argv = [bin_path(args, "coordination"), "import", "--chunk-size", "1000"]
        argv += ["--jobs", str(args.import_jobs), *map(str, batch)]
        with log.open("ab") as out:
            code = subprocess.run(
                argv, env=env_for(args, db), cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, check=False
            ).returncode
        if code:
            raise SystemExit(f"coordination import failed ({code}); see {log}")
    seconds = time.perf_counter() - started
    imported = count_resources(db) - before
    analyze(db)
    print(f"imported {imported:,} resources in {seconds:.0f} s ({imported / seconds:,.0f}/s)", flush=True)
    return {"resources": imported, "seconds": round(seconds, 1), "per_s": round(imported / seconds, 1)}


# -- scenarios -----------------------------------------------------------------------------------


def _get(path: str, **params: str) -> Req:
    return Req("GET", f"{path}?{urlencode(params)}" if params else path)


def user_scenarios(args: argparse.Namespace, me: str, rng: random.Random) -> dict[str, list[Req]]:
    mine = list(range(0, args.patients, args.practitioners))
    rng.shuffle(mine)
    mine = mine[:2000]
    months = RECENT
    return {
        "read Patient/{id}": [_get(f"/fhir/Patient/p{k}") for k in mine],
        "$everything 1,000 resources (_count=1000)": [
            _get(f"/fhir/Patient/{RICH}/$everything", _count="1000")
        ],
        "$everything first page (_count=100)": [_get(f"/fhir/Patient/{RICH}/$everything", _count="100")],
        "CarePlan?patient&status=active&_include=activity-reference": [
            _get(
                "/fhir/CarePlan",
                patient=f"Patient/p{k}",
                status="active",
                _include="CarePlan:activity-reference",
            )
            for k in mine
        ],
        "Task?owner=me&status=requested,accepted&_sort=deadline": [
            _get("/fhir/Task", owner=me, status="requested,accepted", _sort="deadline")
        ],
        "Task?owner=me&status=requested,accepted&_sort=period": [
            _get("/fhir/Task", owner=me, status="requested,accepted", _sort="period")
        ],
        "Task?performer=<profession>&status=requested&owner:missing=true": [
            _get(
                "/fhir/Task",
                performer=f"{PROFESSION}|{code}",
                status="requested",
                **{"owner:missing": "true"},
            )
            for code in PROFESSIONS
        ],
        "CareTeam?participant=me&status=active": [_get("/fhir/CareTeam", participant=me, status="active")],
        "Encounter?status=finished&date=ge…&_revinclude=Task:focus": [
            _get("/fhir/Encounter", status="finished", date=d, _revinclude="Task:focus") for d in months
        ],
        "Encounter?status=finished&date=ge…&_has:Task:focus:status=requested": [
            _get("/fhir/Encounter", status="finished", date=d, **{"_has:Task:focus:status": "requested"})
            for d in months
        ],
    }


def system_scenarios(args: argparse.Namespace, rng: random.Random) -> dict[str, list[Req]]:
    """The same worklists for a backend that sees every patient (no care-team filter)."""
    ks = [rng.randrange(args.patients) for _ in range(2000)]
    months = RECENT
    return {
        "read Patient/{id}": [_get(f"/fhir/Patient/p{k}") for k in ks],
        "CarePlan?patient&status=active&_include=activity-reference": [
            _get(
                "/fhir/CarePlan",
                patient=f"Patient/p{k}",
                status="active",
                _include="CarePlan:activity-reference",
            )
            for k in ks
        ],
        "Task?owner=<practitioner>&status=requested,accepted&_sort=deadline": [
            _get(
                "/fhir/Task",
                owner=f"Practitioner/pr{1 + k % (args.practitioners - 1)}",
                status="requested,accepted",
                _sort="deadline",
            )
            for k in ks
        ],
        "Task?performer=<profession>&status=requested&owner:missing=true": [
            _get(
                "/fhir/Task",
                performer=f"{PROFESSION}|{code}",
                status="requested",
                **{"owner:missing": "true"},
            )
            for code in PROFESSIONS
        ],
        "CareTeam?participant=<role>&status=active": [
            _get(
                "/fhir/CareTeam",
                participant=f"PractitionerRole/role{k % args.practitioners}",
                status="active",
            )
            for k in ks
        ],
        "Encounter?status=finished&date=ge…&_revinclude=Task:focus": [
            _get("/fhir/Encounter", status="finished", date=d, _revinclude="Task:focus") for d in months
        ],
        "Encounter?status=finished&date=ge…&_has:Task:focus:status=requested": [
            _get("/fhir/Encounter", status="finished", date=d, **{"_has:Task:focus:status": "requested"})
            for d in months
        ],
    }


def apply_scenario(server: Server, args: argparse.Namespace, rng: random.Random) -> list[Req] | None:
    """POST PlanDefinition/{id}/$apply?subject=Patient/… for a shipped protocol, if the route answers."""
    found = requests.get(
        server.base + "/fhir/PlanDefinition", params={"_count": "1"}, headers=server.auth, timeout=30
    )
    entries = found.json().get("entry", []) if found.status_code == 200 else []
    if not entries:
        print(f"  $apply skipped: no shipped PlanDefinition found ({found.status_code})", flush=True)
        return None
    plan = entries[0]["resource"]["id"]
    ks = rng.sample(range(args.patients), min(args.patients, 5000))
    reqs = [Req("POST", f"/fhir/PlanDefinition/{plan}/$apply?subject=Patient/p{k}") for k in ks]
    probe = requests.post(
        server.base + reqs[0].path, headers={**server.auth, "Accept": "application/fhir+json"}, timeout=60
    )
    if probe.status_code not in (200, 201):
        print(f"  $apply skipped: PlanDefinition/{plan}/$apply answered {probe.status_code}", flush=True)
        return None
    return reqs[1:]


# -- main ----------------------------------------------------------------------------------------


def start_server(args: argparse.Namespace, db: Any, workdir: Path) -> Server:
    argv = [bin_path(args, "coordination"), "serve", "--host", HOST, "--port", "{port}"]
    argv += ["--workers", str(args.workers), "--threads", str(args.threads), "--no-worker", "--no-mllp"]
    server = Server("coordination", argv, env_for(args, db), workdir / "server.log", REPO_ROOT)
    server.wait_ready()
    return server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    p.add_argument("--patients", type=int, default=100_000, help="patients with a pathway (7 resources each)")
    p.add_argument("--practitioners", type=int, default=200, help="GPs and nurse roles the patients share")
    p.add_argument("--organizations", type=int, default=20)
    p.add_argument("--rich-resources", type=int, default=1000, help="resources of the $everything patient")
    p.add_argument("--import-jobs", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--no-system", action="store_true", help="skip the system-token worklists")
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--pg-database", default="bench_pathways", help="dropped and recreated (never 'test')")
    p.add_argument("--keep-db", action="store_true")
    p.add_argument("--bin-dir", default=str(Path(sys.executable).parent))
    p.add_argument("--seed", type=int, default=20261123)
    p.add_argument("--source", help="a copy of the project to benchmark instead of the installed one")
    p.add_argument("--output", help="results JSON (default bench/results/pathways-<db>-<time>.json)")
    args = p.parse_args(argv)
    if args.patients < args.practitioners or args.practitioners < 2:
        p.error("need --patients >= --practitioners >= 2")
    return args


def _row(r: RunResult, base: RunResult) -> str:
    ratio_p95 = r.p95_ms / base.p95_ms if base.p95_ms else 0.0
    ratio_rps = r.rps / base.rps if base.rps else 0.0
    return (
        f"| {r.scenario} | {r.rps:,.0f} | {r.p50_ms:.1f} | {r.p95_ms:.1f} | {ratio_p95:.1f} "
        f"| {ratio_rps:.2f} | {r.non2xx} |"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    rng = random.Random(args.seed)
    runs: dict[str, list[RunResult]] = {"user": [], "user, one client": [], "system": []}
    with workspace(args.keep_db) as workdir:
        lg = LoadGen(args.loadgen, workdir, args.concurrency, args.wrk_threads)
        print(
            f"bench_pathways: db={args.db} patients={args.patients:,}; load generator {lg.name}", flush=True
        )
        db = fresh_database(args, workdir)
        db_upgrade(args, db, workdir / "upgrade.log")
        me = create_user(args, db)
        imported = load(args, db, workdir, me)
        server = start_server(args, db, workdir)
        try:
            system_auth = {"Authorization": f"Bearer {system_token(args, db, server, 'system/*.cruds')}"}
            user_auth = {"Authorization": f"Bearer {user_token(args, db, server, 'user/*.rs')}"}
            groups = [("user", user_auth, user_scenarios(args, me, rng))]
            if not args.no_system:
                groups.append(("system", system_auth, system_scenarios(args, rng)))
            for group, auth, scenarios in groups:
                server.auth = auth
                print(f"{group} token:", flush=True)
                for name, reqs in scenarios.items():
                    check_once(server, reqs[0], {200})
                    runs[group].append(measure(lg, server, name, reqs, args))
            # One practitioner's app alone: latency without queueing behind the other connections.
            server.auth = user_auth
            alone = LoadGen(args.loadgen, workdir, 1, 1)
            print("user token, one client:", flush=True)
            for name, reqs in list(groups[0][2].items())[:3]:
                runs["user, one client"].append(measure(alone, server, name, reqs, args))
            server.auth = system_auth
            applies = apply_scenario(server, args, rng)
            if applies:
                runs["system"].append(
                    measure(lg, server, "PlanDefinition/{id}/$apply?subject (POST)", applies, args)
                )
        finally:
            server.stop()
            if not args.keep_db:
                db.drop()

    results: dict[str, Any] = {
        **run_header(started, args.source),
        "db": args.db,
        "patients": args.patients,
        "practitioners": args.practitioners,
        "rich_resources": args.rich_resources,
        "import": imported,
        "workers": args.workers,
        "threads": args.threads,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "loadgen": lg.name,
        "runs": {group: [asdict(r) for r in rs] for group, rs in runs.items()},
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = (
        Path(args.output)
        if args.output
        else RESULTS_DIR / f"pathways-{args.db}-{started:%Y%m%dT%H%M%SZ}.json"
    )
    out.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    print()
    for group, rs in runs.items():
        if not rs:
            continue
        print(
            f"\n{group} token ({args.db}, {args.patients:,} patients, {imported['resources']:,} resources):\n"
        )
        print("| scenario | rps | p50 ms | p95 ms | p95 / read | rps / read | non-2xx |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        base = rs[0]
        for r in rs:
            print(_row(r, base))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
