#!/usr/bin/env python3
"""Cost of security on the read path, and token endpoint throughput (issue 5's benchmark).

    python bench/bench_auth.py --db sqlite
    python bench/bench_auth.py --db postgresql

One fresh database, two servers on it, started the same way (``coordination serve``, same workers
and threads): one with ``COORDINATION_SECURITY_DISABLED=1`` (no token, no policy, no audit) and one
secured. Reads by id of the same patients are measured in alternating rounds:

- ``read`` on the unsecured server (the baseline);
- ``read system token``: Bearer lookup + scopes + the AuditEvent insert;
- ``read user token``: the same + the care-team policy of a practitioner in the cercle de soins
  of every seeded patient (one CareTeam each), decided in SQL on every request.

Then the token endpoint: client_credentials with ``client_secret_basic`` and with
``private_key_jwt`` (RS384 assertions, each with its own ``jti``, signed before the clock starts).
The load generator, processes and database handling are bench_core.py's; see bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import random
import re
import secrets
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import (
    FHIR_JSON,
    REPO_ROOT,
    RESULTS_DIR,
    LoadGen,
    Req,
    RunResult,
    Server,
    bin_path,
    check_once,
    db_upgrade,
    dumps,
    env_for,
    fresh_database,
    make_patient,
    measure,
    median_run,
    prime,
    read_reqs,
    register_client,
    run_header,
    run_sql,
    seed_http,
    start_ours,
    workspace,
)

GOAL_SECURED_READ_RATIO = 0.7
FORM = "application/x-www-form-urlencoded"
REDIRECT = "http://127.0.0.1:9/callback"  # never called: the code is read from the Location header
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PASSWORD = "bench-" + secrets.token_urlsafe(12)


def create_user(args: argparse.Namespace, db: Any) -> str:
    """``coordination users create`` (CLI contract): the practitioner whose user token is measured."""
    argv = [bin_path(args, "coordination"), "users", "create", "--username", "bench-gp", "--rpps"]
    argv += ["10000000001", "--password-stdin", "--family", "Bench", "--given", "Gp", "--json"]
    proc = subprocess.run(
        argv,
        input=PASSWORD,
        env=env_for(args, db),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    fhir_user: str = json.loads(proc.stdout)["fhirUser"]
    return fhir_user


def seed_care_teams(server: Server, patient_ids: list[str], member: str) -> None:
    """One active CareTeam per patient with the practitioner in it (transaction Bundles of 200)."""
    for start in range(0, len(patient_ids), 200):
        entries = [
            {
                "resource": {
                    "resourceType": "CareTeam",
                    "status": "active",
                    "subject": {"reference": f"Patient/{pid}"},
                    "participant": [{"member": {"reference": member}}],
                },
                "request": {"method": "POST", "url": "CareTeam"},
            }
            for pid in patient_ids[start : start + 200]
        ]
        resp = requests.post(
            server.base + "/fhir",
            data=dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}).encode(),
            headers={"Content-Type": FHIR_JSON, "Prefer": "return=minimal", **server.auth},
            timeout=300,
        )
        if resp.status_code != 200:
            raise SystemExit(f"CareTeam seeding failed: {resp.status_code} {resp.text[:500]}")


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    if not match:
        raise SystemExit("no CSRF token on the login/consent page")
    return match.group(1)


def user_token(args: argparse.Namespace, db: Any, server: Server, scope: str) -> str:
    """The SMART authorization code flow with PKCE, as a practitioner's app and browser do it."""
    client_id = register_client(args, db, "--scope", scope, "--auth", "none", "--redirect-uri", REDIRECT)[
        "client_id"
    ]
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    url = "/auth/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "scope": scope,
            "state": "bench",
            "aud": server.base + "/fhir",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    with requests.Session() as browser:
        login = browser.get(server.base + "/auth/login", params={"next": url}, timeout=30)
        done = browser.post(
            server.base + "/auth/login",
            data={
                "username": "bench-gp",
                "password": PASSWORD,
                "csrf_token": _csrf(login.text),
                "next": url,
            },
            allow_redirects=False,
            timeout=30,
        )
        if done.status_code != 303:
            raise SystemExit(f"login failed: {done.status_code}")
        consent = browser.get(server.base + url, timeout=30)
        approved = browser.post(
            server.base + url,
            data={"csrf_token": _csrf(consent.text), "decision": "approve"},
            allow_redirects=False,
            timeout=30,
        )
        code = parse_qs(urlsplit(approved.headers.get("Location", "")).query).get("code")
        if approved.status_code != 302 or not code:
            raise SystemExit(f"consent failed: {approved.status_code} {approved.text[:300]}")
        token = browser.post(
            server.base + "/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": code[0],
                "redirect_uri": REDIRECT,
                "client_id": client_id,
                "code_verifier": verifier,
            },
            timeout=30,
        )
        token.raise_for_status()
        access: str = token.json()["access_token"]
        return access


def jwt_client(args: argparse.Namespace, db: Any, workdir: Path, scope: str) -> tuple[str, Any]:
    """A private_key_jwt client registered with a JWKS file; returns (client_id, private key)."""
    from joserfc.jwk import KeySet, RSAKey

    key = RSAKey.generate_key(2048, private=True, auto_kid=True)
    jwks = workdir / "client-jwks.json"
    jwks.write_text(json.dumps(KeySet([key]).as_dict(private=False)), "utf-8")
    created = register_client(
        args, db, "--scope", scope, "--auth", "private_key_jwt", "--jwks-file", str(jwks)
    )
    return created["client_id"], key


def assertion_reqs(server: Server, client_id: str, key: Any, scope: str, count: int) -> list[Req]:
    """``count`` token requests, each with a fresh signed assertion (a jti is single-use)."""
    from joserfc import jwt

    aud = server.base + "/auth/token"
    out = []
    for _ in range(count):
        now = int(time.time())
        claims = {"iss": client_id, "sub": client_id, "aud": aud, "exp": now + 290, "jti": str(uuid.uuid4())}
        assertion = jwt.encode({"alg": "RS384", "kid": key.kid}, claims, key, algorithms=["RS384"])
        body = urlencode(
            {
                "grant_type": "client_credentials",
                "scope": scope,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion,
            }
        )
        out.append(Req("POST", "/auth/token", body))
    return out


def audit_rows(db: Any) -> int:
    return int(run_sql(db, "SELECT count(*) FROM audit_event")[0][0][0])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--patients", type=int, default=1000, help="patients seeded (+1 CareTeam each)")
    p.add_argument("--bundle-size", type=int, default=100)
    p.add_argument("--import-clients", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=3, help="alternating unsecured/system/user read rounds")
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--pg-database", default="bench_auth", help="dropped and recreated (never 'test')")
    p.add_argument("--keep-db", action="store_true")
    p.add_argument("--bin-dir", default=str(Path(sys.executable).parent))
    p.add_argument("--seed", type=int, default=20261123)
    p.add_argument("--source", help="a copy of the project to benchmark instead of the installed one")
    p.add_argument("--output", help="results JSON (default bench/results/auth-<db>-<time>.json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    rng = random.Random(args.seed)
    with workspace(args.keep_db) as workdir:
        lg = LoadGen(args.loadgen, workdir, args.concurrency, args.wrk_threads)
        print(f"bench_auth: db={args.db} patients={args.patients}; load generator {lg.name}", flush=True)
        db = fresh_database(args, workdir)
        db_upgrade(args, db, workdir / "upgrade.log")
        secured = start_ours(args, db, workdir, "secured")
        unsecured = start_ours(args, db, workdir, "unsecured", COORDINATION_SECURITY_DISABLED="1")
        system_auth = secured.auth
        reads_detail: dict[str, list[RunResult]] = {"unsecured": [], "system": [], "user": []}
        token_runs: list[RunResult] = []
        try:
            prime(secured, args.workers, rng)
            prime(unsecured, args.workers, rng)
            patients = [make_patient(rng, k) for k in range(args.patients)]
            stats = seed_http(secured, patients, args.bundle_size, args.import_clients, rng)
            seeded = [p for p in patients if p.res_id]
            practitioner = create_user(args, db)
            seed_care_teams(secured, [p.res_id or "" for p in seeded], practitioner)
            user_auth = {"Authorization": f"Bearer {user_token(args, db, secured, 'user/*.rs')}"}
            print(
                f"seeded {stats.resources:,} resources, {len(seeded):,} care teams; {practitioner}",
                flush=True,
            )

            reads = read_reqs(seeded, rng)
            baseline = check_once(unsecured, reads[0], {200})
            for auth in (system_auth, user_auth):
                secured.auth = auth
                if check_once(secured, reads[0], {200}) != baseline:
                    raise SystemExit("the secured read does not return the same bytes")
            audits_before = audit_rows(db)
            for _ in range(args.rounds):
                reads_detail["unsecured"].append(measure(lg, unsecured, "read unsecured", reads, args))
                secured.auth = system_auth
                reads_detail["system"].append(measure(lg, secured, "read system token", reads, args))
                secured.auth = user_auth
                reads_detail["user"].append(measure(lg, secured, "read user token", reads, args))
            audited = audit_rows(db) - audits_before
            unsecured.stop()

            lg.content_type = FORM
            basic = register_client(args, db, "--scope", "system/Patient.rs", "--auth", "client_secret_basic")
            secured.auth = {
                "Authorization": "Basic "
                + base64.b64encode(f"{basic['client_id']}:{basic['client_secret']}".encode()).decode()
            }
            form = urlencode({"grant_type": "client_credentials", "scope": "system/Patient.rs"})
            token_runs.append(
                measure(lg, secured, "token client_secret_basic", [Req("POST", "/auth/token", form)], args)
            )
            secured.auth = {}
            client_id, key = jwt_client(args, db, workdir, "system/Patient.rs")
            # Enough single-use assertions for the run at the client_secret_basic rate, and spare.
            needed = int(token_runs[0].rps * max(args.duration, args.warmup) * 1.5) + 500
            warm = assertion_reqs(secured, client_id, key, "system/Patient.rs", needed)
            token_runs.append(
                measure(
                    lg,
                    secured,
                    "token private_key_jwt",
                    warm,
                    args,
                    refresh=lambda: assertion_reqs(secured, client_id, key, "system/Patient.rs", needed),
                )
            )
        finally:
            secured.stop()
            unsecured.stop()
            if not args.keep_db:
                db.drop()

    rows = {name: median_run(runs) for name, runs in reads_detail.items()}
    base = rows["unsecured"]
    ratios = {
        f"read_{name}_rps_vs_unsecured": round(rows[name].rps / base.rps, 3) if base.rps else None
        for name in ("system", "user")
    } | {
        f"read_{name}_p95_vs_unsecured": round(rows[name].p95_ms / base.p95_ms, 3) if base.p95_ms else None
        for name in ("system", "user")
    }
    measured = sum(r.requests for name in ("system", "user") for r in reads_detail[name])
    results: dict[str, Any] = {
        **run_header(started, args.source),
        "db": args.db,
        "patients": args.patients,
        "workers": args.workers,
        "threads": args.threads,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "loadgen": lg.name,
        "reads": {name: asdict(row) for name, row in rows.items()},
        "reads_detail": {name: [asdict(r) for r in runs] for name, runs in reads_detail.items()},
        "token": [asdict(r) for r in token_runs],
        "ratios": ratios,
        "goal_read_ratio_min": GOAL_SECURED_READ_RATIO,
        # Every secured read (warm-ups included) must have left an AuditEvent.
        "audit_events_during_reads": audited,
        "secured_reads_measured": measured,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = Path(args.output) if args.output else RESULTS_DIR / f"auth-{args.db}-{started:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    print()
    print(f"| {args.db} | rps | p50 ms | p95 ms | p99 ms | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in [*rows.values(), *token_runs]:
        print(
            f"| {r.scenario} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p95_ms:.2f} | {r.p99_ms:.2f} | {r.non2xx} |"
        )
    print(f"\nratios: {json.dumps(ratios)} (goal: read rps ratio >= {GOAL_SECURED_READ_RATIO})")
    print(f"audit events written during the read runs: {audited:,} (measured secured reads: {measured:,})")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
