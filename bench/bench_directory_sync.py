"""Directory sync benchmark (issue 8): `coordination directory sync` of one organization with N
practitioners (+ one PractitionerRole each) from a local ANS-like directory server.

    .venv/bin/python bench/bench_directory_sync.py --db sqlite --practitioners 10000
    .venv/bin/python bench/bench_directory_sync.py --db postgresql --practitioners 10000

The directory is tests/support/ans_server.py (werkzeug, threaded, on 127.0.0.1:
searchset Bundles,
``_include=PractitionerRole:practitioner``, ``_getpages`` next links, the ESANTE-API-KEY header).
The sync runs in this process through the click command (as the console script runs it), against a
fresh database (a SQLite file in a temp dir, or PostgreSQL database --pg-database, dropped and
created; `test` is refused). Records = resources written or compared (organization, service,
practitioners, roles); rate = records / wall time of the command. The second run finds everything
unchanged (idempotence) and is timed too.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from bench_core import RESULTS_DIR, fresh_database, git_commit, workspace
from sqlalchemy import text

from coordination_api.app import create_app
from coordination_api.cli import main as coordination
from coordination_api.config import AnnuaireSettings, Settings
from coordination_api.storage.migrate import upgrade
from tests.support.ans_server import (
    API_KEY,
    Dataset,
    DirectoryServer,
    organization,
    practitioner,
    role,
    service,
)

REPO = Path(__file__).resolve().parent.parent


def dataset(n: int, warmup: int = 0) -> Dataset:
    """The measured CPTS (FINESS 330009000, n members) and a warm-up one (330009001, RPPS 3…)."""
    data = Dataset()
    for oid, finess, size, first in (
        ("001-01-9000", "330009000", n, "2"),
        ("001-01-9001", "330009001", warmup, "3"),
    ):
        data.add(organization(oid, finess, f"CPTS du banc d'essai {finess}"))
        data.add(service(f"hs-{finess}", oid, "Coordination"))
        for i in range(size):
            pid = f"003-{first}{i:07d}"
            rpps = f"{first}{i:010d}"
            data.add(practitioner(pid, rpps, f"Nom{i}", f"Prenom{i}", profession="60" if i % 3 else "10"))
            data.add(role(f"pr-{first}{i:07d}", pid, oid))
    return data


def run_sync(app: Any, finess: str = "330009000") -> tuple[float, str]:
    started = time.perf_counter()
    result = app.test_cli_runner().invoke(coordination, args=["directory", "sync", "--organization", finess])
    elapsed = time.perf_counter() - started
    if result.exit_code != 0:
        raise SystemExit(f"sync failed ({result.exit_code}): {result.output[-2000:]}")
    return elapsed, result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--practitioners", type=int, default=10_000)
    parser.add_argument("--page-size", type=int, default=1000, help="the sync's _count")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--pg-database", default="bench_directory")
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="sync another CPTS of this many members first, then ANALYZE (PostgreSQL) and reconnect: "
        "the measured sync then runs with statistics, as it would once autovacuum has run",
    )
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()

    data = dataset(args.practitioners, args.warmup)
    server = DirectoryServer(data).start()
    records = 2 + 2 * args.practitioners
    rows: list[dict[str, Any]] = []
    with workspace(args.keep_db) as workdir:
        db = fresh_database(args, workdir)
        try:
            annuaire = AnnuaireSettings(
                base_url=server.base_url, api_key=API_KEY, page_size=args.page_size, read_timeout=60.0
            )
            app = create_app(Settings(database_url=db.url, access_log=False, annuaire=annuaire))
            engine = app.extensions["coordination"].repo.engine
            upgrade(engine)
            if args.warmup:
                elapsed, summary = run_sync(app, "330009001")
                print(f"warm-up: {summary.splitlines()[0]}", file=sys.stderr)
                if args.db == "postgresql":
                    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                        conn.execute(text("ANALYZE"))
                engine.dispose()  # new connections: plans made with the statistics
            for label in ("first run (all created)", "second run (all unchanged)"):
                requests_before = len(server.requests)
                elapsed, summary = run_sync(app)
                rows.append(
                    {
                        "run": label,
                        "records": records,
                        "seconds": round(elapsed, 2),
                        "records_per_s": round(records / elapsed, 1),
                        "directory_requests": len(server.requests) - requests_before,
                        "summary": summary.splitlines()[0],
                    }
                )
                print(f"{label}: {summary.splitlines()[0]}", file=sys.stderr)
            app.extensions["audit_writer"].flush()
            app.extensions["coordination"].repo.engine.dispose()
        finally:
            server.stop()
            if not args.keep_db:
                db.drop()
    result = {
        "bench": "directory-sync",
        "db": args.db,
        "practitioners": args.practitioners,
        "page_size": args.page_size,
        "warmup": args.warmup,
        "commit": git_commit(REPO),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "runs": rows,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"directory-sync-{args.db}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    head = f"run ({args.db}, {args.practitioners} practitioners)"
    print(f"\n| {head} | records | s | records/s | directory requests |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        cells = [r["run"], r["records"], r["seconds"], r["records_per_s"], r["directory_requests"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print(f"\n(results: {out})")


if __name__ == "__main__":
    main()
