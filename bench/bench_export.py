#!/usr/bin/env python3
"""Bulk Data $export (issue 9): export rate and memory of the worker and of the app serving the files.

    python bench/bench_export.py                          # PostgreSQL, 1,000,000 resources
    python bench/bench_export.py --resources 100000       # a reduced scale (say so with the figures)
    python bench/bench_export.py --db sqlite --resources 100000

One fresh database (PostgreSQL database ``--pg-database``, dropped and recreated; or a SQLite file).
Seeding, fast and documented: ``--base-patients`` patient records (Practitioner, Patient, Encounter, two
Observations, CareTeam, CarePlan, Task: 8 resources each, with references) go in through
``coordination import`` (the real write path: resource, history and index rows); then the database is
grown to ``--resources`` with one ``INSERT … SELECT`` that copies those rows under new ids (``<id>-c<k>``,
the id inside the stored JSON rewritten), and their history and Patient compartment rows likewise
(a copy is in its original's patients' compartments). The copies have no search index rows: an
export reads the resource table (and, Patient-level, ``idx_compartment``; the history of rows changed
after the kick-off), so they cost it what imported rows would. ``--level patient`` measures
``Patient/$export`` instead of ``$export``.

Then ``coordination serve --no-worker`` (the app, ``--workers`` processes of ``--threads``), one
``coordination worker`` process started and left idle (its heartbeat row seen), a ``system/*.rs`` token
and the kick-off, polled every 0.5 s. The export's work is the job's ``finished - transactionTime -
settle`` (from the earliest claim to completion, plus up to the worker's 1 s idle poll); the worker's
RSS is sampled from /proc every 0.1 s (and its VmHWM read at the end). Every file is then downloaded
with ``requests`` (streamed, 1 MB blocks) while the app processes' RSS is sampled; the line counts are
checked against the manifest and the database.

Results in bench/results/export[-patient]-<db>-<time>.json and a Markdown table on stdout. Database,
process and token handling are bench_core.py's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import (
    HOST,
    REPO_ROOT,
    RESULTS_DIR,
    Database,
    Server,
    analyze,
    bin_path,
    count_resources,
    db_upgrade,
    dumps,
    env_for,
    fresh_database,
    git_commit,
    run_sql,
    system_token,
    workspace,
)

GOAL_RSS_MB = 300.0
SETTLE = 1.0  # COORDINATION_EXPORT_SETTLE (default): a job is not claimed before
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


# -- data ----------------------------------------------------------------------------------------


def record(k: int) -> list[dict[str, Any]]:
    """Patient ``p{k}``'s 8 resources, with references between them."""
    p, gp = f"p{k}", f"gp{k}"
    subject = {"reference": f"Patient/{p}"}
    day = f"2026-{1 + k % 12:02d}-{1 + k % 28:02d}"
    return [
        {"resourceType": "Practitioner", "id": gp, "name": [{"family": f"Praticien{k}", "given": ["Paul"]}]},
        {
            "resourceType": "Patient",
            "id": p,
            "name": [{"family": f"Patient{k}", "given": ["Anne"]}],
            "gender": "female" if k % 2 else "male",
            "birthDate": f"{1930 + k % 90}-{1 + k % 12:02d}-{1 + k % 28:02d}",
        },
        {
            "resourceType": "Encounter",
            "id": f"enc{k}",
            "status": "finished",
            "class": {"system": ACT, "code": "IMP"},
            "subject": subject,
            "period": {"start": f"{day}T08:00:00Z", "end": f"{day}T18:00:00Z"},
            "participant": [{"individual": {"reference": f"Practitioner/{gp}"}}],
        },
        *[
            {
                "resourceType": "Observation",
                "id": f"obs{k}-{n}",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": subject,
                "encounter": {"reference": f"Encounter/enc{k}"},
                "effectiveDateTime": f"{day}T10:00:00Z",
                "valueQuantity": {
                    "value": 60 + (k * 7 + n) % 40,
                    "unit": "/min",
                    "system": "http://unitsofmeasure.org",
                    "code": "/min",
                },
            }
            for n, code in enumerate(("8867-4", "9279-1"))
        ],
        {
            "resourceType": "CareTeam",
            "id": f"ct{k}",
            "status": "active",
            "subject": subject,
            "participant": [{"member": {"reference": f"Practitioner/{gp}"}}],
        },
        {
            "resourceType": "CarePlan",
            "id": f"cp{k}",
            "status": "active",
            "intent": "plan",
            "subject": subject,
            "encounter": {"reference": f"Encounter/enc{k}"},
            "careTeam": [{"reference": f"CareTeam/ct{k}"}],
            "title": "Retour à domicile",
        },
        {
            "resourceType": "Task",
            "id": f"t{k}",
            "status": "completed",
            "intent": "order",
            "for": subject,
            "basedOn": [{"reference": f"CarePlan/cp{k}"}],
            "owner": {"reference": f"Practitioner/{gp}"},
            "description": "Pansement J+2",
        },
    ]


def seed(args: argparse.Namespace, db: Database, workdir: Path) -> dict[str, Any]:
    """Import the base records, then copy rows up to ``--resources`` (see the module docstring)."""
    path = workdir / "base.ndjson"
    with path.open("w", encoding="utf-8") as out:
        for k in range(args.base_patients):
            for resource in record(k):
                out.write(dumps(resource) + "\n")
    started = time.perf_counter()
    argv = [bin_path(args, "coordination"), "import", "--chunk-size", "1000"]
    argv += ["--jobs", str(args.import_jobs), str(path)]
    with (workdir / "import.log").open("ab") as log:
        code = subprocess.run(
            argv, env=env_for(args, db), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, check=False
        ).returncode
    if code:
        raise SystemExit(f"coordination import failed ({code}); see {workdir / 'import.log'}")
    imported = count_resources(db)  # with the conformance artefacts of db upgrade
    import_s = time.perf_counter() - started
    print(f"imported {imported:,} resources in {import_s:.0f} s", flush=True)
    needed = max(0, args.resources - imported)
    base_rows = args.base_patients * len(record(0))
    copies = -(-needed // base_rows) if base_rows else 0
    started = time.perf_counter()
    if needed:
        series = (
            f"generate_series(1, {copies}) AS g(n)"
            if db.kind == "postgresql"
            else f"(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {copies}) "
            "SELECT n FROM s) AS g"
        )
        false = "false" if db.kind == "postgresql" else "0"
        last = int(run_sql(db, "SELECT max(pk) FROM resource")[0][0][0])
        types = ", ".join(f"'{t}'" for t in sorted({r["resourceType"] for r in record(0)}))
        # Copy k of row pk gets pk + k * last, so its original is (pk - 1) % last + 1: the copies'
        # history rows and Patient compartment rows (the original's patients) follow from it.
        statements = [
            "INSERT INTO resource (pk, res_type, res_id, version, last_updated, deleted, content) "
            f"SELECT r.pk + g.n * {last}, r.res_type, r.res_id || '-c' || g.n, r.version, r.last_updated, "
            "r.deleted, replace(r.content, '\"id\":\"' || r.res_id || '\"', "
            "'\"id\":\"' || r.res_id || '-c' || g.n || '\"') "
            f"FROM resource r, {series} WHERE r.pk <= {last} AND r.res_type IN ({types}) "
            f"ORDER BY g.n, r.pk LIMIT {needed}",
            "INSERT INTO resource_history (res_pk, version, res_type, res_id, last_updated, method, deleted, "
            f"content) SELECT pk, version, res_type, res_id, last_updated, 'PUT', {false}, content "
            f"FROM resource WHERE pk > {last}",
            "INSERT INTO idx_compartment (res_pk, res_type, param, patient_id) "
            "SELECT n.pk, c.res_type, c.param, c.patient_id FROM resource n "
            f"JOIN idx_compartment c ON c.res_pk = (n.pk - 1) % {last} + 1 WHERE n.pk > {last}",
        ]
        if db.kind == "postgresql":  # the explicit pks: the sequence goes on after them
            statements.append(
                "SELECT setval(pg_get_serial_sequence('resource', 'pk'), (SELECT max(pk) FROM resource))"
            )
        run_sql(db, *statements)
    analyze(db)
    total = count_resources(db)
    copy_s = time.perf_counter() - started
    print(f"grown to {total:,} resources by copies in {copy_s:.0f} s", flush=True)
    return {"imported": imported, "import_s": round(import_s, 1), "total": total, "copy_s": round(copy_s, 1)}


# -- memory --------------------------------------------------------------------------------------


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return 0
    return 0


def session_pids(sid: int) -> list[int]:
    """Processes of a session (the server we started with start_new_session)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid:  # after "pid (comm)": state ppid pgrp session
            out.append(int(entry.name))
    return out


class Sampler:
    """RSS of a set of processes every ``period`` s, in a thread: peak and series, per process."""

    def __init__(self, pids: Any, period: float = 0.1) -> None:
        self.pids = pids  # a callable returning the pids to sample
        self.period = period
        self.peak: dict[int, int] = {}
        self.series: list[tuple[float, int]] = []  # (t, max RSS over the processes, kB)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.start = time.monotonic()

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.stop.is_set():
            top = 0
            for pid in self.pids():
                rss = _status_kb(pid, "VmRSS")
                self.peak[pid] = max(self.peak.get(pid, 0), rss)
                top = max(top, rss)
            self.series.append((round(time.monotonic() - self.start, 2), top))
            self.stop.wait(self.period)

    def peak_mb(self) -> float:
        return round(max(self.peak.values(), default=0) / 1024, 1)

    def quantiles_mb(self) -> list[float]:
        """Max RSS at 10 %, 50 %, 90 % and 100 % of the run (flat means these are alike)."""
        if not self.series:
            return []
        values = [v for _t, v in self.series]
        return [
            round(values[min(len(values) - 1, int(q * len(values)))] / 1024, 1) for q in (0.1, 0.5, 0.9, 1.0)
        ]


# -- the run -------------------------------------------------------------------------------------


def export(args: argparse.Namespace, db: Database, workdir: Path) -> dict[str, Any]:
    exports = workdir / "exports"
    extra = {
        "COORDINATION_EXPORT_DIR": str(exports),
        "COORDINATION_EXPORT_RESOURCES_PER_FILE": str(args.per_file),
        "COORDINATION_EXPORT_CHUNK_SIZE": str(args.chunk_size),
        "COORDINATION_ACCESS_LOG": "0",
        "COORDINATION_EXPORT_SETTLE": str(SETTLE),
    }
    argv = [bin_path(args, "coordination"), "serve", "--host", HOST, "--port", "{port}", "--no-worker"]
    argv += ["--no-mllp", "--workers", str(args.workers), "--threads", str(args.threads)]
    server = Server("coordination", argv, env_for(args, db, **extra), workdir / "serve.log", REPO_ROOT)
    worker: subprocess.Popen[bytes] | None = None
    try:
        server.wait_ready()
        auth = {"Authorization": f"Bearer {system_token(args, db, server, 'system/*.rs')}"}
        # The worker first, idle (its heartbeat row says it runs its passes), then the kick-off.
        with (workdir / "worker.log").open("ab") as log:
            worker = subprocess.Popen(
                [bin_path(args, "coordination"), "worker"],
                env=env_for(args, db, **extra),
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pid = worker.pid
        wait_heartbeat(db, worker)
        idle = _status_kb(pid, "VmRSS") / 1024
        with Sampler(lambda: [pid]) as worker_mem:
            started = time.perf_counter()
            kick = requests.get(
                f"{server.base}/fhir/{'Patient/' if args.level == 'patient' else ''}$export",
                headers={**auth, "Prefer": "respond-async", "Accept": "application/fhir+json"},
                timeout=60,
            )
            if kick.status_code != 202:
                raise SystemExit(f"kick-off answered {kick.status_code}: {kick.text[:500]}")
            manifest = poll(kick.headers["Content-Location"], auth, args.timeout)
            seconds = time.perf_counter() - started
        worker_hwm = _status_kb(pid, "VmHWM") / 1024
        worker.terminate()
        worker.wait(timeout=60)
        # The worker's own time: from the earliest claim (transactionTime + settle) to completion.
        finished, kicked = run_sql(db, "SELECT finished_us, transaction_us FROM bulk_export_job")[0][0]
        net = (finished - kicked) / 1e6 - SETTLE
        exported = sum(item["count"] for item in manifest["output"])
        print(
            f"exported {exported:,} resources: {seconds:.1f} s from kick-off to manifest, "
            f"{net:.1f} s of work ({exported / net:,.0f}/s)",
            flush=True,
        )

        app_pids = session_pids(server.proc.pid)
        at_start = {p: _status_kb(p, "VmRSS") for p in app_pids}
        before = max(at_start.values(), default=0) / 1024
        lines = size = 0
        with Sampler(lambda: app_pids) as app_mem:
            started = time.perf_counter()
            for item in manifest["output"]:
                got = download(item["url"], auth)
                if got[0] != item["count"]:
                    raise SystemExit(f"{item['url']}: {got[0]} lines, manifest says {item['count']}")
                lines += got[0]
                size += got[1]
            download_s = time.perf_counter() - started
        print(f"downloaded {lines:,} lines, {size / 1e6:,.0f} MB in {download_s:.1f} s", flush=True)
        # A system export without _type leaves out the shipped conformance artefacts (bulk/kickoff.py);
        # a Patient-level one is what some Patient compartment holds.
        shipped = "'StructureDefinition', 'ValueSet', 'CodeSystem', 'SearchParameter'"
        query = f"SELECT count(*) FROM resource WHERE NOT deleted AND res_type NOT IN ({shipped})"
        if args.level == "patient":
            query = (
                "SELECT count(*) FROM resource r WHERE NOT r.deleted AND EXISTS "
                "(SELECT 1 FROM idx_compartment c WHERE c.res_pk = r.pk)"
            )
        in_db = int(run_sql(db, query)[0][0][0])
        if lines != in_db:
            raise SystemExit(f"exported {lines} resources, the database holds {in_db}")
        return {
            "resources": exported,
            "files": len(manifest["output"]),
            "kickoff_to_manifest_s": round(seconds, 1),
            "export_s": round(net, 2),
            "export_per_s": round(exported / net, 1),
            "worker_idle_rss_mb": round(idle, 1),
            "worker_peak_rss_mb": worker_mem.peak_mb(),
            "worker_vmhwm_mb": round(worker_hwm, 1),
            "worker_rss_quantiles_mb": worker_mem.quantiles_mb(),
            "download_mb": round(size / 1e6, 1),
            "download_s": round(download_s, 1),
            "download_mb_per_s": round(size / 1e6 / download_s, 1),
            "app_rss_before_mb": round(before, 1),
            "app_processes": len(app_pids),
            "app_peak_rss_mb": app_mem.peak_mb(),
            # The most any one app process grew while serving the files (the one serving them).
            "app_rss_growth_mb": round(
                max((app_mem.peak.get(p, 0) - kb for p, kb in at_start.items()), default=0) / 1024, 1
            ),
            "app_rss_quantiles_mb": app_mem.quantiles_mb(),
        }
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)
        server.stop()


def wait_heartbeat(db: Database, worker: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited early ({worker.returncode}); see worker.log")
        if int(run_sql(db, "SELECT count(*) FROM worker_heartbeat")[0][0][0]):
            return
        time.sleep(0.1)
    raise SystemExit("the worker did not start its passes")


def poll(status_url: str, auth: dict[str, str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        answer = requests.get(status_url, headers={**auth, "Accept": "application/json"}, timeout=60)
        if answer.status_code == 200:
            body: dict[str, Any] = answer.json()
            return body
        if answer.status_code != 202:
            raise SystemExit(f"status answered {answer.status_code}: {answer.text[:500]}")
        progress = answer.headers.get("X-Progress", "")
        if progress != last:
            print(f"  {progress}", flush=True)
            last = progress
        time.sleep(0.5)
    raise SystemExit(f"the export did not complete within {timeout:.0f} s")


def download(url: str, auth: dict[str, str]) -> tuple[int, int]:
    """(lines, bytes) of one file, streamed."""
    lines = size = 0
    with requests.get(
        url, headers={**auth, "Accept": "application/fhir+ndjson"}, stream=True, timeout=60
    ) as r:
        r.raise_for_status()
        for block in r.iter_content(1 << 20):
            lines += block.count(b"\n")
            size += len(block)
    return lines, size


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    p.add_argument("--resources", type=int, default=1_000_000)
    p.add_argument("--base-patients", type=int, default=5000, help="imported records (8 resources each)")
    p.add_argument(
        "--level", choices=["system", "patient"], default="system", help="$export or Patient/$export"
    )
    p.add_argument("--import-jobs", type=int, default=2)
    p.add_argument("--per-file", type=int, default=100_000, help="COORDINATION_EXPORT_RESOURCES_PER_FILE")
    p.add_argument("--chunk-size", type=int, default=1000, help="COORDINATION_EXPORT_CHUNK_SIZE")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds the export may take")
    p.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--pg-database", default="bench_export", help="dropped and recreated (never 'test')")
    p.add_argument("--keep-db", action="store_true")
    p.add_argument("--bin-dir", default=str(Path(sys.executable).parent))
    p.add_argument("--source", help="a copy of the project to benchmark instead of the installed one")
    p.add_argument("--output", help="results JSON (default bench/results/export-<db>-<time>.json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    with workspace(args.keep_db) as workdir:
        db = fresh_database(args, workdir)
        try:
            db_upgrade(args, db, workdir / "upgrade.log")
            seeded = seed(args, db, workdir)
            figures = export(args, db, workdir)
        finally:
            if not args.keep_db:
                db.drop()
    result = {
        "benchmark": "export",
        "db": args.db,
        "started": started.isoformat(),
        "commit": git_commit(Path(args.source) if args.source else REPO_ROOT),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()},
        "settings": {k: v for k, v in vars(args).items() if k not in {"pg_url"}},
        "seed": seeded,
        "export": figures,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    kind = "export" if args.level == "system" else "export-patient"
    output = Path(args.output or RESULTS_DIR / f"{kind}-{args.db}-{started:%Y%m%dT%H%M%SZ}.json")
    output.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    f = figures
    ok = max(f["worker_peak_rss_mb"], f["app_peak_rss_mb"]) < GOAL_RSS_MB
    print(f"\nresults: {output}\n")
    print("| figure | value |\n| --- | ---: |")
    print(f"| resources exported ({f['files']} files) | {f['resources']:,} |")
    print(
        f"| export: worker's work (claim to completion) | {f['export_s']} s = "
        f"**{f['export_per_s']:,.0f} resources/s** |"
    )
    print(f"| kick-off to manifest (settle, polls at 0.5 s) | {f['kickoff_to_manifest_s']} s |")
    print(
        f"| worker RSS idle / peak (sampled) / VmHWM | {f['worker_idle_rss_mb']} / "
        f"{f['worker_peak_rss_mb']} / {f['worker_vmhwm_mb']} MB |"
    )
    print(f"| worker RSS at 10/50/90/100 % of the run | {f['worker_rss_quantiles_mb']} MB |")
    print(f"| download (requests, streamed) | {f['download_mb']} MB in {f['download_s']} s |")
    print(
        f"| app RSS before / peak while downloading | {f['app_rss_before_mb']} / {f['app_peak_rss_mb']} MB "
        f"(largest growth of one process: {f['app_rss_growth_mb']} MB) |"
    )
    print(f"| goal: RSS under {GOAL_RSS_MB:.0f} MB | {'met' if ok else 'MISSED'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
