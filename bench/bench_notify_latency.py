#!/usr/bin/env python3
"""Discharge to rest-hook latency, the delivery worker polling vs woken by the doorbell (issue 21).

    python bench/bench_notify_latency.py --db sqlite
    python bench/bench_notify_latency.py --db postgresql --rates 10 50 --duration 30

One fresh database, `coordination serve --no-worker --no-mllp`, one Backport discharge subscription to
a webhook in this process (bench_discharge.py's receiver, poster and open loop). For each mode, one
`coordination worker` process is started with that mode, then `$process-message` discharges are sent
open loop at each `--rates` for `--duration` s; the latency is the webhook's arrival minus the scheduled
send time (as /work/shared/perf/discharge_latency.py measures it), and, in the notes, minus the door's
200 answer (the outbox -> worker -> POST part alone).

Modes: `poll` is the worker of before (COORDINATION_SUBSCRIPTION_DOORBELL=false: it finds new rows at
its next poll, `poll_interval` 1 s); `doorbell` is the default (woken by the write). Issue 21's goal: p50
<= 50 ms and p99 <= 250 ms at 10 msg/s, p99 <= 1 s at 50 msg/s.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from bench_core import RESULTS_DIR, db_upgrade, fresh_database, run_header, workspace
from bench_discharge import Poster, Receiver, Run, Workers, drain, open_loop, start_api, subscribe

MODES = {"poll": ["COORDINATION_SUBSCRIPTION_DOORBELL=false"], "doorbell": []}
GOAL = {10.0: {"p50_ms": 50.0, "p99_ms": 250.0}, 50.0: {"p99_ms": 1000.0}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    p.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["poll", "doorbell"])
    p.add_argument("--rates", nargs="+", type=float, default=[10.0, 50.0], help="messages per second")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of each open-loop run")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers of the API")
    p.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker")
    p.add_argument("--drain-timeout", type=float, default=60.0)
    p.add_argument("--birth-date", default="1980-05-12")
    p.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--pg-database", default="bench_notify", help="dropped and recreated (never 'test')")
    p.add_argument("--keep-db", action="store_true")
    p.add_argument("--bin-dir", default=str(Path(sys.executable).parent))
    p.add_argument("--source", help="a copy of the project to benchmark instead of the installed one")
    p.add_argument("--output", help="results JSON (default bench/results/notify-<db>-<time>.json)")
    return p.parse_args(argv)


def row(r: Run) -> str:
    return (
        f"| {r.scenario} | {r.messages} | {r.p50_ms:.0f} | {r.p95_ms:.0f} | {r.p99_ms:.0f} | "
        f"{r.max_ms:.0f} | {r.notes['after_answer_p50_ms']:.0f} / {r.notes['after_answer_p99_ms']:.0f} | "
        f"{r.lost} | {r.duplicates} |"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    runs: list[tuple[str, Run]] = []
    with workspace(args.keep_db) as workdir:
        print(f"bench_notify_latency: db={args.db} workdir {workdir}", flush=True)
        db = fresh_database(args, workdir)
        db_upgrade(args, db, workdir / "upgrade.log")
        receiver = Receiver()
        api = None
        try:
            api = start_api(args, db, workdir)
            for mode in args.modes:
                mode_args = copy.copy(args)
                mode_args.worker_env = MODES[mode]
                mode_args.delivery_workers = 1
                workers = Workers(mode_args, db, workdir)
                workers.start()
                try:
                    if not runs:
                        subscribe(api, receiver)
                    poster = Poster(api, args.birth_date)
                    for k in range(4 * args.workers):  # not timed: each process builds its models first
                        if not poster.post(f"WARM-{mode}-{k}"):
                            raise SystemExit(f"$process-message failed; see {api.log}")
                    drain(db, receiver, args.drain_timeout)
                    for rate in args.rates:
                        print(f"{mode}: open loop {rate:g}/s for {args.duration:g} s", flush=True)
                        name = f"{mode} {rate:g}/s"
                        prefix = f"{mode.upper()}-{rate:g}"
                        run = open_loop(
                            poster, receiver, name, prefix, rate, args.duration, args.drain_timeout
                        )
                        runs.append((mode, run))
                        print(f"  {row(run)}", flush=True)  # at once: a run cut short keeps its figures
                finally:
                    workers.stop()
        finally:
            if api is not None:
                api.stop()
            receiver.stop()
            if not args.keep_db:
                db.drop()

    lines = [
        f"| {args.db} | messages | p50 ms | p95 ms | p99 ms | max ms | after 200 p50/p99 | lost | dup |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [row(r) for _mode, r in runs]
    results: dict[str, Any] = {
        **run_header(started, args.source),
        "db": args.db,
        "args": {k: v for k, v in vars(args).items() if k not in {"pg_url", "bin_dir"}},
        "runs": [{"mode": mode, **asdict(r)} for mode, r in runs],
        "goal": {str(rate): goal for rate, goal in GOAL.items()},
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    default = RESULTS_DIR / f"notify-{args.db}-{started:%Y%m%dT%H%M%SZ}.json"
    out = Path(args.output) if args.output else default
    out.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    print()
    print("\n".join(lines))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
