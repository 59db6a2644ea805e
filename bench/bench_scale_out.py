#!/usr/bin/env python3
"""Scale-out bench (issue 9): read throughput of one app process, then of two, over one PostgreSQL.

    python bench/bench_scale_out.py                      # 2000 patients, 3 rounds of 15 s
    python bench/bench_scale_out.py --duration 20 --rounds 5

A fresh PostgreSQL database (``bench_scale_out``, dropped and recreated), ``coordination db
upgrade``, then two independent ``coordination serve --workers 1`` processes on two ports (as two
hosts behind a load balancer would run them; security on, system tokens). Each round measures
``GET /fhir/Patient/{id}`` with the same total client concurrency: all of it on process A, then half
on A and half on B at the same time (two wrk processes, or the Python fallback). The ratio
(two / one) is the figure; the correctness side of scale-out is tests/ops/test_two_apps_two_workers.py.
Reuses bench_core's plumbing (servers, seeding, load generator).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_core as core


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=2000)
    p.add_argument("--threads", type=int, default=8, help="gunicorn threads of each app process")
    p.add_argument("--concurrency", type=int, default=16, help="total client connections")
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--pg-database", default="bench_scale_out")
    p.add_argument("--bin-dir", default=str(Path(sys.executable).parent))
    p.add_argument("--seed", type=int, default=20261124)
    args = p.parse_args(argv)
    # What bench_core's helpers read.
    args.db, args.workers, args.source, args.keep_db = "postgresql", 1, None, False
    return args


def start_app(args: argparse.Namespace, db: core.Database, workdir: Path, name: str) -> core.Server:
    """``coordination serve`` without MLLP listener nor worker (two of them share one host here)."""
    argv = [core.bin_path(args, "coordination"), "serve", "--host", core.HOST, "--port", "{port}"]
    argv += ["--workers", "1", "--threads", str(args.threads), "--no-mllp", "--no-worker"]
    env = core.env_for(args, db, COORDINATION_ACCESS_LOG="false")
    server = core.Server(name, argv, env, workdir / f"{name}.log", core.REPO_ROOT)
    server.wait_ready()
    server.auth = {"Authorization": f"Bearer {core.system_token(args, db, server)}"}
    return server


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    with core.workspace(False) as workdir:
        db = core.fresh_database(args, workdir)
        servers: list[core.Server] = []
        try:
            core.db_upgrade(args, db, workdir / "upgrade.log")
            a = start_app(args, db, workdir, "app-a")
            servers.append(a)
            patients = [core.make_patient(rng, i) for i in range(args.patients)]
            core.seed_http(a, patients, 100, 2, rng)
            core.analyze(db)
            b = start_app(args, db, workdir, "app-b")
            servers.append(b)
            reqs = core.read_reqs(patients, rng)
            half = max(1, args.concurrency // 2)
            (workdir / "a").mkdir()
            (workdir / "b").mkdir()
            one_gen = core.LoadGen(args.loadgen, workdir, args.concurrency, 2)
            gens = [core.LoadGen(args.loadgen, workdir / n, half, 1) for n in ("a", "b")]
            for server in servers:  # warm both (first requests build the models)
                one_gen.run(server, "warmup", reqs, args.warmup)
            singles: list[float] = []
            pairs: list[float] = []
            for round_no in range(args.rounds):
                single = one_gen.run(a, "read-one-process", reqs, args.duration)
                results: list[core.RunResult] = []

                def run(gen: core.LoadGen, server: core.Server, out: list[core.RunResult]) -> None:
                    out.append(gen.run(server, "read-two-processes", reqs, args.duration))

                threads = [
                    threading.Thread(target=run, args=(g, s, results))
                    for g, s in zip(gens, servers, strict=True)
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                pair = sum(r.rps for r in results)
                errors = single.non2xx + sum(r.non2xx for r in results)
                singles.append(single.rps)
                pairs.append(pair)
                print(
                    f"round {round_no + 1}: one process {single.rps:8.1f} req/s "
                    f"(p95 {single.p95_ms:.1f} ms), "
                    f"two processes {pair:8.1f} req/s (p95 {max(r.p95_ms for r in results):.1f} ms), "
                    f"ratio {pair / single.rps:.2f}, non-2xx {errors}",
                    flush=True,
                )
            one, two = statistics.median(singles), statistics.median(pairs)
            print(
                f"\nmedian over {args.rounds} rounds ({one_gen.name}, {args.concurrency} connections, "
                f"{args.patients} patients): one process {one:.1f} req/s, two processes {two:.1f} req/s, "
                f"ratio {two / one:.2f}"
            )
        finally:
            for server in servers:
                server.stop()
            db.drop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
