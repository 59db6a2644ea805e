#!/usr/bin/env python3
"""Core benchmark of the FHIR REST layer: import, read, search, create, update, vs a bare endpoint.

    python bench/bench_core.py --db sqlite --patients 2000
    python bench/bench_core.py --db postgresql --patients 2000
    python bench/bench_core.py --db postgresql --scale            # + identifier search at 10k vs ~1M

Everything happens on 127.0.0.1: a fresh database (SQLite file in a temporary directory, or a
dedicated PostgreSQL database dropped and recreated, ``bench_core`` by default), ``coordination db
upgrade``, ``coordination serve`` as a subprocess, seeding through transaction Bundles, then timed
load at a fixed concurrency with wrk (when installed) or a Python fallback. The bare baseline
(bench/bare_app.py) runs under gunicorn with the same workers/threads. Results go to
bench/results/*.json and a Markdown table on stdout. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import requests

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
FHIR_JSON = "application/fhir+json"
HOST = "127.0.0.1"  # every server and every request of this script stays on loopback

INS_NIR_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"
IPP_SYSTEM = "urn:oid:1.2.250.1.71.4.2.7.750100125"  # a (made-up) hospital's local patient number
PROTECTED_PG_DATABASES = {"test", "postgres", "template0", "template1"}

GOAL_READ_RATIO = 0.6
GOAL_IMPORT_PG = 2000.0
GOAL_SCALE_P95_RATIO = 1.5

# --------------------------------------------------------------------------------------------------
# Synthetic French-looking data (deterministic for a given --seed)
# --------------------------------------------------------------------------------------------------

FAMILIES = (
    "Martin Bernard Thomas Petit Robert Richard Durand Dubois Moreau Laurent Simon Michel Lefèvre "
    "Leroy Roux David Bertrand Morel Fournier Girard Bonnet Dupont Lambert Fontaine Rousseau Vincent "
    "Muller Faure André Mercier Blanc Guérin Boyer Garnier Chevalier François Legrand Gauthier Garcia "
    "Perrin Robin Clément Morin Nicolas Henry Roussel Mathieu Gautier Masson Marchand Duval Denis "
    "Dumont Marie Lemaire Noël Meyer Dufour Meunier Brun Blanchard Giraud Joly Rivière Lucas Brunet "
    "Gaillard Barbier Arnaud Martinez Gérard Roche Renard Schmitt Roy Leroux Colin Vidal Caron Picard "
    "Roger Fabre Aubert Lemoine Renaud Dumas Lacroix Olivier Philippe Bourgeois Pierre Benoît Rey "
    "Leclerc Payet Rolland Le_Gall Guillaume Lecomte Le_Goff Hoarau Ménard Cordier Bailly Hamon"
)
FAMILY_NAMES = [n.replace("_", " ") for n in FAMILIES.split()]
MALE = (
    "Jean Pierre Michel André Philippe Louis Alain Jacques Bernard Marcel Daniel Roger Lucas Hugo Gabriel Léo"
)
FEMALE = (
    "Marie Nathalie Isabelle Sylvie Catherine Françoise Monique Nicole Camille Léa Manon Chloé Inès Zoé Emma"
)
MALE_NAMES = MALE.split()
FEMALE_NAMES = FEMALE.split()
CITIES = [
    ("Paris", "75013", "75"),
    ("Lyon", "69003", "69"),
    ("Marseille", "13005", "13"),
    ("Toulouse", "31000", "31"),
    ("Nantes", "44000", "44"),
    ("Rennes", "35000", "35"),
    ("Lille", "59000", "59"),
    ("Bordeaux", "33000", "33"),
    ("Montpellier", "34000", "34"),
    ("Strasbourg", "67000", "67"),
    ("Saint-Denis", "97400", "97"),
    ("Brest", "29200", "29"),
]
STREETS = [
    "rue de la République",
    "avenue Jean Jaurès",
    "rue Victor Hugo",
    "boulevard Pasteur",
    "place du Marché",
]
OBSERVATIONS = [
    ("29463-7", "Body weight", "kg", 45.0, 110.0),
    ("8867-4", "Heart rate", "/min", 50.0, 110.0),
    ("8310-5", "Body temperature", "Cel", 36.0, 39.5),
    ("2339-0", "Glucose [Mass/volume] in Blood", "g/L", 0.7, 2.2),
]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass
class PatientData:
    """One synthetic patient and the values the searches look it up by."""

    index: int
    patient: dict[str, Any]
    encounter: dict[str, Any]
    observation: dict[str, Any]
    family: str
    birth_date: str
    nir: str
    ipp: str
    res_id: str | None = None


def _nir(sex: str, birth: dt.date, dept: str, index: int) -> str:
    """A 15-character NIR shaped like the real one (sex, YYMM, department, commune+order, key)."""
    digits = f"{sex}{birth.year % 100:02d}{birth.month:02d}{dept}{index % 1_000_000:06d}"
    key = 97 - int(digits) % 97
    return f"{digits}{key:02d}"


def make_patient(rng: random.Random, index: int, ids: bool = False) -> PatientData:
    """A Patient with INS-NIR and IPP identifiers, one Encounter and one Observation.

    ``ids``: give the three resources client-side ids and plain ``Patient/id`` references (NDJSON
    upserts); otherwise the caller wires ``urn:uuid`` references in a transaction Bundle.
    """
    male = rng.random() < 0.5
    sex = "1" if male else "2"
    family = rng.choice(FAMILY_NAMES)
    given = [rng.choice(MALE_NAMES if male else FEMALE_NAMES)]
    if rng.random() < 0.3:
        given.append(rng.choice(MALE_NAMES if male else FEMALE_NAMES))
    birth = dt.date(1930, 1, 1) + dt.timedelta(days=rng.randrange(0, 90 * 365))
    city, postal, dept = rng.choice(CITIES)
    # The department digits after the first million keep NIRs unique across big seeds.
    nir = _nir(sex, birth, f"{(int(dept) + index // 1_000_000) % 100:02d}", index)
    ipp = f"8{index:09d}"
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        # An INS may only be stored with a validated identity (FR Core identity reliability, VALI).
        "extension": [
            {
                "url": "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability",
                "extension": [
                    {
                        "url": "identityStatus",
                        "valueCoding": {
                            "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445",
                            "code": "VALI",
                        },
                    }
                ],
            }
        ],
        "identifier": [
            {
                "use": "official",
                "type": {
                    "coding": [
                        {
                            "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203",
                            "code": "INS-NIR",
                        }
                    ]
                },
                "system": INS_NIR_SYSTEM,
                "value": nir,
            },
            {
                "use": "usual",
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PI"}]
                },
                "system": IPP_SYSTEM,
                "value": ipp,
            },
        ],
        "active": True,
        "name": [{"use": "official", "family": family, "given": given}],
        "telecom": [{"system": "phone", "value": f"06 {rng.randrange(10**8):08d}", "use": "mobile"}],
        "gender": "male" if male else "female",
        "birthDate": birth.isoformat(),
        "address": [
            {
                "use": "home",
                "line": [f"{rng.randrange(1, 200)} {rng.choice(STREETS)}"],
                "city": city,
                "postalCode": postal,
                "country": "FR",
            }
        ],
    }
    start = dt.datetime(2024, 1, 1, 8, 0) + dt.timedelta(minutes=rng.randrange(0, 2 * 365 * 24 * 60))
    end = start + dt.timedelta(minutes=rng.randrange(15, 60 * 24 * 5))
    inpatient = rng.random() < 0.3
    encounter: dict[str, Any] = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "IMP" if inpatient else "AMB",
            "display": "inpatient encounter" if inpatient else "ambulatory",
        },
        "period": {"start": start.isoformat() + "+01:00", "end": end.isoformat() + "+01:00"},
    }
    code, display, unit, low, high = rng.choice(OBSERVATIONS)
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
        "effectiveDateTime": start.isoformat() + "+01:00",
        "valueQuantity": {
            "value": round(rng.uniform(low, high), 1),
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }
    data = PatientData(index, patient, encounter, observation, family, birth.isoformat(), nir, ipp)
    if ids:
        data.res_id = _uuid(rng)
        patient["id"] = data.res_id
        encounter["id"] = _uuid(rng)
        observation["id"] = _uuid(rng)
        encounter["subject"] = {"reference": f"Patient/{data.res_id}"}
        observation["subject"] = {"reference": f"Patient/{data.res_id}"}
        observation["encounter"] = {"reference": f"Encounter/{encounter['id']}"}
    return data


def transaction_bundle(rng: random.Random, batch: list[PatientData]) -> dict[str, Any]:
    entries = []
    for data in batch:
        p_urn, e_urn, o_urn = (f"urn:uuid:{_uuid(rng)}" for _ in range(3))
        encounter = {**data.encounter, "subject": {"reference": p_urn}}
        observation = {**data.observation, "subject": {"reference": p_urn}, "encounter": {"reference": e_urn}}
        for urn, res in ((p_urn, data.patient), (e_urn, encounter), (o_urn, observation)):
            entries.append(
                {"fullUrl": urn, "resource": res, "request": {"method": "POST", "url": res["resourceType"]}}
            )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------------------------------
# Databases and processes
# --------------------------------------------------------------------------------------------------


@dataclass
class Database:
    kind: str
    url: str
    admin_url: str | None = None
    name: str | None = None
    path: Path | None = None

    def drop(self) -> None:
        if self.kind == "postgresql":
            _pg_admin(self.admin_url or "", f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        elif self.path is not None:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(str(self.path) + suffix).unlink()


def _pg_admin(admin_url: str, *statements: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def fresh_database(args: argparse.Namespace, workdir: Path, suffix: str = "") -> Database:
    if args.db == "sqlite":
        path = workdir / f"bench{suffix}.db"
        db = Database("sqlite", f"sqlite:///{path}", path=path)
        db.drop()
        return db
    name = args.pg_database + suffix
    if name in PROTECTED_PG_DATABASES or not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise SystemExit(
            f"refusing to use PostgreSQL database '{name}' (pick a dedicated one, e.g. bench_core)"
        )
    admin = f"{args.pg_url.rstrip('/')}/postgres"
    _pg_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    return Database("postgresql", f"{args.pg_url.rstrip('/')}/{name}", admin_url=admin, name=name)


def run_sql(db: Database, *statements: str) -> list[Any]:
    from sqlalchemy import create_engine, text

    engine = create_engine(db.url, isolation_level="AUTOCOMMIT")
    out = []
    try:
        with engine.connect() as conn:
            for statement in statements:
                result = conn.execute(text(statement))
                out.append(result.fetchall() if result.returns_rows else None)
    finally:
        engine.dispose()
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def bin_path(args: argparse.Namespace, name: str) -> str:
    candidate = Path(args.bin_dir) / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"'{name}' not found next to {sys.executable} nor on PATH (use --bin-dir)")
    return found


def env_for(args: argparse.Namespace, db: Database, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["COORDINATION_DATABASE_URL"] = db.url
    env.pop("COORDINATION_PUBLIC_BASE_URL", None)
    env.setdefault("COORDINATION_ACCESS_TOKEN_TTL", "14400")  # the bench's tokens outlive the run
    env.update(extra)
    if args.source:  # a snapshot of the code (e.g. git archive HEAD) shadows the installed package
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.source, env.get("PYTHONPATH")]))
    return env


class Server:
    """A gunicorn process group we started, stopped by its own process-group id."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.name = name
        self.port = free_port()
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.log = log
        self.auth: dict[str, str] = {}  # the Authorization header every request of the bench sends
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited early ({self.proc.returncode}); see {self.log}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.base + "/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        self.stop()
        raise SystemExit(f"{self.name} not ready after {timeout:.0f}s; see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def db_upgrade(args: argparse.Namespace, db: Database, log: Path) -> None:
    with log.open("ab") as out:
        subprocess.run(
            [bin_path(args, "coordination"), "db", "upgrade"],
            env=env_for(args, db),
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=300,
        )


def start_ours(
    args: argparse.Namespace, db: Database, workdir: Path, name: str = "coordination", **extra_env: str
) -> Server:
    argv = [bin_path(args, "coordination"), "serve", "--host", HOST, "--port", "{port}"]
    argv += ["--workers", str(args.workers), "--threads", str(args.threads)]
    server = Server(name, argv, env_for(args, db, **extra_env), workdir / f"{name}.log", REPO_ROOT)
    server.wait_ready()
    if extra_env.get("COORDINATION_SECURITY_DISABLED") != "1":
        server.auth = {"Authorization": f"Bearer {system_token(args, db, server)}"}
    return server


def register_client(args: argparse.Namespace, db: Database, *options: str) -> dict[str, Any]:
    """``coordination clients create … --json`` (the CLI contract), as an operator would."""
    proc = subprocess.run(
        [bin_path(args, "coordination"), "clients", "create", "--name", "bench", *options, "--json"],
        env=env_for(args, db),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    created: dict[str, Any] = json.loads(proc.stdout)
    return created


def system_token(
    args: argparse.Namespace, db: Database, server: Server, scope: str = "system/*.cruds"
) -> str:
    """A SMART Backend Services token (client_secret_basic) from the server under test."""
    # Issue 16: a client sends messages only as its registered senders (those of tests/coordination).
    senders = ("mllp://hopital-nord.example/ADT", "SIH-PASTEL^CHU-NANTES", "750100125")
    options = [f"--sender={sender}" for sender in senders]
    client = register_client(args, db, "--scope", scope, "--auth", "client_secret_basic", *options)
    resp = requests.post(
        server.base + "/auth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(client["client_id"], client["client_secret"]),
        timeout=60,
    )
    resp.raise_for_status()
    token: str = resp.json()["access_token"]
    return token


def start_bare(args: argparse.Namespace, db: Database, workdir: Path) -> Server:
    # The same gunicorn settings as coordination_api/server.py.
    argv = [bin_path(args, "gunicorn"), "--chdir", str(BENCH_DIR), "--bind", f"{HOST}:{{port}}"]
    argv += ["--workers", str(args.workers), "--threads", str(args.threads), "--worker-class", "gthread"]
    argv += ["--timeout", "60", "--graceful-timeout", "30", "bare_app:create_app()"]
    server = Server("bare", argv, env_for(args, db), workdir / "bare.log", REPO_ROOT)
    server.wait_ready()
    return server


# --------------------------------------------------------------------------------------------------
# Seeding
# --------------------------------------------------------------------------------------------------

_LOCATION = re.compile(r"(Patient|Encounter|Observation)/([^/]+)/_history/")


@dataclass
class ImportStats:
    resources: int
    bundles: int
    seconds: float
    failed_bundles: int
    bundle_p50_ms: float
    bundle_p95_ms: float
    clients: int
    bundle_size: int

    @property
    def per_second(self) -> float:
        return self.resources / self.seconds if self.seconds else 0.0


def seed_http(
    server: Server, patients: list[PatientData], bundle_size: int, clients: int, rng: random.Random
) -> ImportStats:
    """POST transaction Bundles (``bundle_size`` patients, 3 resources each); fills ``res_id``."""
    batches = [patients[i : i + bundle_size] for i in range(0, len(patients), bundle_size)]
    bodies = [dumps(transaction_bundle(rng, b)).encode() for b in batches]  # built before the clock starts
    latencies: list[float] = []
    failed = 0
    lock = threading.Lock()
    local = threading.local()

    def post(k: int) -> None:
        nonlocal failed
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        t0 = time.perf_counter()
        resp = session.post(
            server.base + "/fhir",
            data=bodies[k],
            headers={
                "Content-Type": FHIR_JSON,
                "Accept": FHIR_JSON,
                "Prefer": "return=minimal",
                **server.auth,
            },
            timeout=600,
        )
        elapsed = time.perf_counter() - t0
        with lock:
            latencies.append(elapsed)
            if resp.status_code != 200:
                failed += 1
                print(f"  bundle {k} failed: {resp.status_code} {resp.text[:300]}", file=sys.stderr)
                return
        patient_ids = [
            m.group(2)
            for e in resp.json().get("entry", [])
            if (m := _LOCATION.search(e.get("response", {}).get("location", ""))) and m.group(1) == "Patient"
        ]
        for data, res_id in zip(batches[k], patient_ids, strict=False):
            data.res_id = res_id

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(post, range(len(bodies))))
    seconds = time.perf_counter() - start
    ok = sum(1 for p in patients if p.res_id) * 3
    return ImportStats(
        resources=ok,
        bundles=len(bodies),
        seconds=seconds,
        failed_bundles=failed,
        bundle_p50_ms=percentile(latencies, 50) * 1000,
        bundle_p95_ms=percentile(latencies, 95) * 1000,
        clients=clients,
        bundle_size=bundle_size,
    )


# --------------------------------------------------------------------------------------------------
# Load generation
# --------------------------------------------------------------------------------------------------


@dataclass
class Req:
    method: str
    path: str
    body: str = ""
    res_id: str = ""
    version: int = 0


@dataclass
class RunResult:
    scenario: str
    target: str
    loadgen: str
    concurrency: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    non2xx: int
    status_412: int
    socket_errors: int
    loadavg_before: list[float] = field(default_factory=list)


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


WRK_LUA = r"""
-- Written by bench/bench_core.py. Requests come from a tab-separated file:
-- METHOD \t PATH \t BODY \t ID \t VERSION   (BODY, ID, VERSION empty for reads)
-- Latency is timed here, per request, matched by the X-Request-ID the servers echo: wrk's own
-- histogram gets a coordinated-omission "correction" (stats_correct) that adds synthetic samples
-- after every stall, which in a closed-loop test inflates p95/p99 far beyond what was measured.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local counter = 0
local threads = {}
local reqs = {}
local n = 0
local i = 0
local seq = 0
local starts = {}
local mode = "list"
local authorization = os.getenv("BENCH_AUTHORIZATION")
local content_type = os.getenv("BENCH_CONTENT_TYPE") or "application/fhir+json"
versions = {}
busy = {}
lats = {}
non2xx = 0
s412 = 0
unmatched = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local function split(line)
  local out = {}
  for f in string.gmatch(line .. "\t", "([^\t]*)\t") do out[#out + 1] = f end
  return out
end

function init(args)
  mode = args[1]
  local nthreads = tonumber(args[3])
  local lineno = 0
  for line in io.lines(args[2]) do
    local f = split(line)
    if mode ~= "update" or lineno % nthreads == tid then
      reqs[#reqs + 1] = f
      if mode == "update" then versions[f[4]] = tonumber(f[5]) end
    end
    lineno = lineno + 1
  end
  n = #reqs
  if mode ~= "update" then i = math.floor(n * tid / nthreads) end
end

function request()
  local f = nil
  if mode == "update" then
    -- Never two updates of one resource in flight: a slow one would then get 412 after a fast one.
    for _ = 1, n do
      i = i % n + 1
      if not busy[reqs[i][4]] then f = reqs[i]; break end
    end
  end
  if f == nil then
    i = i % n + 1
    f = reqs[i]
  end
  seq = seq + 1
  local tag = tostring(seq)
  local headers = {["Accept"] = "application/fhir+json"}
  if authorization then headers["Authorization"] = authorization end
  local body = nil
  if f[3] ~= "" then
    body = f[3]
    headers["Content-Type"] = content_type
  end
  if mode == "update" then
    local v = versions[f[4]]
    busy[f[4]] = true
    tag = tag .. ":" .. f[4]
    headers["If-Match"] = 'W/"' .. v .. '"'
    body = (string.gsub(body, "@SEQ@", tostring(v + 1)))
  end
  headers["X-Request-ID"] = tag
  starts[tag] = now_us()
  return wrk.format(f[1], f[2], headers, body)
end

function response(status, headers, body)
  local tag = headers["X-Request-ID"] or headers["x-request-id"]
  local t0 = tag and starts[tag]
  if t0 then
    lats[#lats + 1] = math.floor(now_us() - t0 + 0.5)
    starts[tag] = nil
  else
    unmatched = unmatched + 1
  end
  local id = mode == "update" and tag and string.match(tag, "^%d+:(.+)$")
  if id then busy[id] = nil end
  if status >= 200 and status < 300 then
    if id then
      local v = string.match(body, '"versionId":"(%d+)"')
      if v and versions[id] then versions[id] = tonumber(v) end
    end
  else
    non2xx = non2xx + 1
    if status == 412 then
      s412 = s412 + 1
      -- Resynchronise on the server's word, so one 412 does not make every later update of it fail.
      local current = string.match(body, "current version is (%d+)")
      if id and current and versions[id] then versions[id] = tonumber(current) end
    end
  end
end

function done(summary, latency, requests)
  local a, b, u = 0, 0, 0
  local out = io.open(os.getenv("BENCH_LATENCY_FILE"), "w")
  for _, t in ipairs(threads) do
    a = a + (t:get("non2xx") or 0)
    b = b + (t:get("s412") or 0)
    u = u + (t:get("unmatched") or 0)
    for _, v in ipairs(t:get("lats") or {}) do out:write(v, "\n") end
  end
  out:close()
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"non2xx":%d,"s412":%d,"unmatched":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, a, b, u))
end
"""


class LoadGen:
    """wrk when available (C, event loop), else Python threads with keep-alive http.client."""

    def __init__(self, kind: str, workdir: Path, concurrency: int, wrk_threads: int) -> None:
        self.kind = kind
        self.workdir = workdir
        self.concurrency = concurrency
        self.wrk_threads = max(1, min(wrk_threads, concurrency))
        self.wrk = shutil.which("wrk") if kind != "python" else None
        if kind == "wrk" and not self.wrk:
            raise SystemExit("--loadgen wrk asked for but wrk is not installed (apt-get install wrk)")
        self.name = f"wrk ({self.wrk_threads} threads)" if self.wrk else "python (threads + http.client)"
        self.content_type = FHIR_JSON  # of request bodies (the token endpoint takes forms)
        self._count = 0

    def run(
        self, server: Server, scenario: str, reqs: list[Req], seconds: float, update: bool = False
    ) -> RunResult:
        loadavg = [round(x, 2) for x in os.getloadavg()]
        if self.wrk:
            result = self._wrk(server, scenario, reqs, seconds, update)
        else:
            result = self._python(server, scenario, reqs, seconds, update)
        result.loadavg_before = loadavg
        return result

    # wrk ------------------------------------------------------------------------------------------
    def _wrk(self, server: Server, scenario: str, reqs: list[Req], seconds: float, update: bool) -> RunResult:
        self._count += 1
        data = self.workdir / f"wrk-{self._count}.tsv"
        lines = []
        for r in reqs:
            if "\t" in r.body or "\n" in r.body:
                raise ValueError("request bodies must be one-line JSON without raw tabs")
            lines.append("\t".join([r.method, r.path, r.body, r.res_id, str(r.version)]))
        data.write_text("\n".join(lines) + "\n", encoding="utf-8")
        script = self.workdir / "bench.lua"
        script.write_text(WRK_LUA, "utf-8")
        lat_file = self.workdir / f"wrk-{self._count}.lat"
        argv = [
            self.wrk or "wrk",
            f"-t{self.wrk_threads}",
            f"-c{self.concurrency}",
            f"-d{max(1, round(seconds))}s",
        ]
        argv += ["--timeout", "30s", "-s", str(script), server.base, "--"]
        argv += ["update" if update else "list", str(data), str(self.wrk_threads)]
        env = {**os.environ, "BENCH_LATENCY_FILE": str(lat_file), "BENCH_CONTENT_TYPE": self.content_type}
        env.pop("BENCH_AUTHORIZATION", None)
        if "Authorization" in server.auth:
            env["BENCH_AUTHORIZATION"] = server.auth["Authorization"]
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 120, check=False, env=env
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-800:]} {proc.stderr[-800:]}")
        w = json.loads(line.removeprefix("BENCHJSON "))
        lat = [int(x) / 1e6 for x in lat_file.read_text().split()]
        if w["unmatched"] > w["requests"] // 100:
            raise RuntimeError(
                f"{w['unmatched']} responses without the echoed X-Request-ID: latencies unusable"
            )
        secs = w["duration_us"] / 1e6
        return RunResult(
            scenario=scenario,
            target=server.name,
            loadgen="wrk",
            concurrency=self.concurrency,
            seconds=round(secs, 2),
            requests=w["requests"],
            rps=w["requests"] / secs if secs else 0.0,
            p50_ms=percentile(lat, 50) * 1000,
            p90_ms=percentile(lat, 90) * 1000,
            p95_ms=percentile(lat, 95) * 1000,
            p99_ms=percentile(lat, 99) * 1000,
            mean_ms=statistics.fmean(lat) * 1000 if lat else 0.0,
            max_ms=max(lat, default=0.0) * 1000,
            non2xx=max(w["status"], w["non2xx"]),
            status_412=w["s412"],
            socket_errors=w["connect"] + w["read"] + w["write"] + w["timeout"],
        )

    # python ---------------------------------------------------------------------------------------
    def _python(
        self, server: Server, scenario: str, reqs: list[Req], seconds: float, update: bool
    ) -> RunResult:
        c = self.concurrency
        latencies: list[list[float]] = [[] for _ in range(c)]
        non2xx = [0] * c
        s412 = [0] * c
        errors = [0] * c
        max_per_thread = 1_000_000  # a bound on top of the time limit
        start = time.perf_counter()
        deadline = start + seconds

        def worker(k: int) -> None:
            mine = reqs[k::c] if update else reqs
            if not mine:
                return
            versions = {r.res_id: r.version for r in mine} if update else {}
            i = 0 if update else len(mine) * k // c
            conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
            while time.perf_counter() < deadline and len(latencies[k]) < max_per_thread:
                r = mine[i % len(mine)]
                i += 1
                headers = {"Accept": FHIR_JSON, **server.auth}
                body = r.body
                if update:
                    version = versions[r.res_id]
                    headers["If-Match"] = f'W/"{version}"'
                    headers["X-Request-ID"] = r.res_id
                    body = body.replace("@SEQ@", str(version + 1))
                if body:
                    headers["Content-Type"] = self.content_type
                t0 = time.perf_counter()
                try:
                    conn.request(r.method, r.path, body=body.encode() if body else None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except (OSError, http.client.HTTPException):
                    errors[k] += 1
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
                    continue
                latencies[k].append(time.perf_counter() - t0)
                if 200 <= resp.status < 300:
                    etag = resp.getheader("ETag") or ""
                    if update and (m := re.search(r"(\d+)", etag)):
                        versions[r.res_id] = int(m.group(1))
                else:
                    non2xx[k] += 1
                    s412[k] += resp.status == 412
                    if update and (m := re.search(rb"current version is (\d+)", data)):
                        versions[r.res_id] = int(m.group(1))
            conn.close()

        threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(c)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=seconds + 60)
        elapsed = time.perf_counter() - start
        lat = [x for chunk in latencies for x in chunk]
        return RunResult(
            scenario=scenario,
            target=server.name,
            loadgen="python",
            concurrency=c,
            seconds=round(elapsed, 2),
            requests=len(lat),
            rps=len(lat) / elapsed if elapsed else 0.0,
            p50_ms=percentile(lat, 50) * 1000,
            p90_ms=percentile(lat, 90) * 1000,
            p95_ms=percentile(lat, 95) * 1000,
            p99_ms=percentile(lat, 99) * 1000,
            mean_ms=statistics.fmean(lat) * 1000 if lat else 0.0,
            max_ms=max(lat, default=0.0) * 1000,
            non2xx=sum(non2xx),
            status_412=sum(s412),
            socket_errors=sum(errors),
        )


# --------------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------------


def read_reqs(patients: list[PatientData], rng: random.Random, limit: int = 20_000) -> list[Req]:
    sample = [p for p in patients if p.res_id]
    rng.shuffle(sample)
    return [Req("GET", f"/fhir/Patient/{p.res_id}") for p in sample[:limit]]


def identifier_reqs(patients: list[PatientData], rng: random.Random, limit: int = 20_000) -> list[Req]:
    out = []
    for p in rng.sample(patients, min(limit, len(patients))):
        # Mostly the national INS-NIR, sometimes the local IPP.
        system, value = (IPP_SYSTEM, p.ipp) if rng.random() < 0.25 else (INS_NIR_SYSTEM, p.nir)
        out.append(Req("GET", "/fhir/Patient?" + urlencode({"identifier": f"{system}|{value}"})))
    return out


def name_birthdate_reqs(patients: list[PatientData], rng: random.Random, limit: int = 20_000) -> list[Req]:
    return [
        Req(
            "GET",
            "/fhir/Patient?" + urlencode({"family": p.family, "birthdate": p.birth_date}, quote_via=quote),
        )
        for p in rng.sample(patients, min(limit, len(patients)))
    ]


def create_reqs(rng: random.Random, first_index: int, count: int = 2000) -> list[Req]:
    return [
        Req("POST", "/fhir/Patient", dumps(make_patient(rng, first_index + k).patient)) for k in range(count)
    ]


def update_reqs(server: Server, patients: list[PatientData]) -> list[Req]:
    """PUT bodies for our own resources, with their current version (read now, so reruns agree)."""
    out = []
    with requests.Session() as session:
        for p in patients:
            resp = session.get(f"{server.base}/fhir/Patient/{p.res_id}", headers=server.auth, timeout=30)
            resp.raise_for_status()
            version = int(resp.json()["meta"]["versionId"])
            body = {**p.patient, "id": p.res_id}
            body["telecom"] = [{"system": "phone", "value": "06 00 @SEQ@", "use": "mobile"}]
            out.append(Req("PUT", f"/fhir/Patient/{p.res_id}", dumps(body), p.res_id or "", version))
    return out


def check_once(server: Server, req: Req, expect: set[int]) -> bytes:
    headers = {"Accept": FHIR_JSON, **server.auth}
    if req.body:
        headers["Content-Type"] = FHIR_JSON
    if req.version:
        headers["If-Match"] = f'W/"{req.version}"'
    body = req.body.replace("@SEQ@", "0").encode() if req.body else None
    resp = requests.request(req.method, server.base + req.path, data=body, headers=headers, timeout=60)
    if resp.status_code not in expect:
        raise SystemExit(
            f"sanity check {req.method} {req.path} on {server.name}: {resp.status_code} {resp.text}"
        )
    return resp.content


def measure(
    lg: LoadGen,
    server: Server,
    scenario: str,
    reqs: list[Req],
    args: argparse.Namespace,
    update: bool = False,
    refresh: Callable[[], list[Req]] | None = None,
) -> RunResult:
    """A discarded warm-up run, then the measured one (``refresh``: new requests for it, e.g. versions)."""
    if args.warmup > 0:
        lg.run(server, scenario + "-warmup", reqs, args.warmup, update)
        if refresh:
            time.sleep(3)  # writes the warm-up client left in flight finish before versions are read
    result = lg.run(server, scenario, refresh() if refresh else reqs, args.duration, update)
    print(
        f"  {scenario:<24} {server.name:<12} {result.rps:8.1f} rps  p50 {result.p50_ms:7.2f} ms  "
        f"p95 {result.p95_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  non-2xx {result.non2xx}",
        flush=True,
    )
    return result


def prime(server: Server, workers: int, rng: random.Random) -> None:
    """Untimed cold start: the first request of each worker builds the pydantic models (seconds)."""
    bodies = [dumps(transaction_bundle(rng, [make_patient(rng, 9_000_000 + k)])) for k in range(workers * 3)]

    def post(body: str) -> int:
        resp = requests.post(
            server.base + "/fhir",
            data=body.encode(),
            headers={"Content-Type": FHIR_JSON, "Prefer": "return=minimal", **server.auth},
            timeout=300,
        )
        return resp.status_code

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        codes = list(pool.map(post, bodies))
    if any(code != 200 for code in codes):
        raise SystemExit(f"priming transactions failed: {codes}; see {server.log}")


def median_run(runs: list[RunResult]) -> RunResult:
    """One row for several rounds: the median of each figure taken separately (noisy machine)."""
    first = runs[0]

    def med(name: str) -> float:
        return float(statistics.median(getattr(r, name) for r in runs))

    return RunResult(
        scenario=f"{first.scenario} (median of {len(runs)})" if len(runs) > 1 else first.scenario,
        target=first.target,
        loadgen=first.loadgen,
        concurrency=first.concurrency,
        seconds=med("seconds"),
        requests=round(med("requests")),
        rps=med("rps"),
        p50_ms=med("p50_ms"),
        p90_ms=med("p90_ms"),
        p95_ms=med("p95_ms"),
        p99_ms=med("p99_ms"),
        mean_ms=med("mean_ms"),
        max_ms=med("max_ms"),
        non2xx=sum(r.non2xx for r in runs),
        status_412=sum(r.status_412 for r in runs),
        socket_errors=sum(r.socket_errors for r in runs),
        loadavg_before=first.loadavg_before,
    )


# --------------------------------------------------------------------------------------------------
# Scale phase
# --------------------------------------------------------------------------------------------------


def analyze(db: Database) -> None:
    """PostgreSQL: statistics as autovacuum would have them after a bulk load (SQLite: none, as in prod)."""
    if db.kind == "postgresql":
        run_sql(db, "ANALYZE")


def count_resources(db: Database) -> int:
    return int(run_sql(db, "SELECT count(*) FROM resource")[0][0][0])


def grow_with_import(
    args: argparse.Namespace, db: Database, workdir: Path, start_index: int, target: int, rng: random.Random
) -> tuple[list[PatientData], dict[str, Any]]:
    """NDJSON files through ``coordination import`` (K processes at a time) until target or time box."""
    procs = args.scale_import_procs or (2 if db.kind == "postgresql" else 1)
    per_file = args.scale_file_patients
    deadline = time.monotonic() + args.scale_timebox * 60
    sample: list[PatientData] = []
    seen = 0
    index = start_index
    current = count_resources(db)
    imported = 0
    import_seconds = 0.0
    stopped_by = "target"
    log = workdir / "import.log"
    while current < target:
        if time.monotonic() > deadline:
            stopped_by = "timebox"
            break
        files = []
        for _ in range(procs):
            want = min(per_file, max(1, (target - current) // 3 // procs + 1))
            path = workdir / f"grow-{index}.ndjson"
            lines = []
            encs, obs = [], []
            for _ in range(want):
                data = make_patient(rng, index, ids=True)
                index += 1
                lines.append(dumps(data.patient))
                encs.append(dumps(data.encounter))
                obs.append(dumps(data.observation))
                # Reservoir sample of the whole population, so searches hit old and new rows alike.
                seen += 1
                if len(sample) < 5000:
                    sample.append(data)
                elif (j := rng.randrange(seen)) < 5000:
                    sample[j] = data
            path.write_text("\n".join(lines + encs + obs) + "\n", encoding="utf-8")
            files.append(path)
        t0 = time.perf_counter()
        with log.open("ab") as out:
            running = [
                subprocess.Popen(
                    [bin_path(args, "coordination"), "import", "--chunk-size", "1000", str(f)],
                    env=env_for(args, db),
                    cwd=REPO_ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
                for f in files
            ]
            codes = [p.wait(timeout=args.scale_timebox * 60 + 600) for p in running]
        import_seconds += time.perf_counter() - t0
        for f in files:
            f.unlink()
        if any(codes):
            raise SystemExit(f"coordination import failed ({codes}); see {log}")
        before = current
        current = count_resources(db)
        imported += current - before
        print(
            f"  grown to {current:,} resources ({imported / import_seconds:,.0f} resources/s via import)",
            flush=True,
        )
    info = {
        "import_processes": procs,
        "imported_resources": imported,
        "import_seconds": round(import_seconds, 1),
        "import_resources_per_s": round(imported / import_seconds, 1) if import_seconds else None,
        "stopped_by": stopped_by,
        "resources": current,
    }
    return sample, info


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def run_scale(args: argparse.Namespace, workdir: Path, lg: LoadGen) -> dict[str, Any]:
    print(f"\n== scale phase ({args.db}): identifier search at ~10k vs ~{args.scale_target:,} resources")
    rng = random.Random(args.seed + 1)
    db = fresh_database(args, workdir, suffix="_scale" if args.db == "postgresql" else "-scale")
    db_upgrade(args, db, workdir / "upgrade.log")
    server = start_ours(args, db, workdir)
    out: dict[str, Any] = {"database": db.name or str(db.path)}
    try:
        prime(server, args.workers, rng)
        small = [make_patient(rng, k) for k in range(args.scale_base // 3 + 1)]
        stats = seed_http(server, small, args.bundle_size, args.import_clients, rng)
        analyze(db)
        base_count = count_resources(db)
        seeded = [p for p in small if p.res_id]
        runs_small = [
            measure(lg, server, "search-identifier", identifier_reqs(seeded, rng), args),
            measure(lg, server, "search-name-birthdate", name_birthdate_reqs(seeded, rng), args),
        ]
        sample, info = grow_with_import(args, db, workdir, len(small), args.scale_target, rng)
        analyze(db)
        population = rng.sample(seeded, min(len(seeded), 500)) + sample
        runs_big = [
            measure(lg, server, "search-identifier", identifier_reqs(population, rng), args),
            measure(lg, server, "search-name-birthdate", name_birthdate_reqs(population, rng), args),
        ]
        out.update(
            base_resources=base_count,
            base_seed_resources_per_s=round(stats.per_second, 1),
            grown=info,
            small=[asdict(r) for r in runs_small],
            big=[asdict(r) for r in runs_big],
            identifier_p95_ratio=_ratio(runs_big[0].p95_ms, runs_small[0].p95_ms),
            name_birthdate_p95_ratio=_ratio(runs_big[1].p95_ms, runs_small[1].p95_ms),
        )
    finally:
        server.stop()
        if not args.keep_db:
            db.drop()
    return out


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    rows = [
        "| scenario | server | requests | rps | p50 ms | p95 ms | p99 ms | non-2xx |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["runs"]:
        rows.append(
            f"| {r['scenario']} | {r['target']} | {r['requests']:,} | {r['rps']:,.1f} | {r['p50_ms']:.2f} | "
            f"{r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['non2xx']}"
            + (f" ({r['status_412']} x 412)" if r["status_412"] else "")
            + " |"
        )
    imp = results["import"]
    ratios = results["ratios"]
    lines = [
        f"### {results['db']} — {results['patients']:,} patients ({imp['resources']:,} resources), "
        f"{results['workers']} workers x {results['threads']} threads, concurrency {results['concurrency']}, "
        f"{results['duration_s']:.0f} s per run, load generator: {results['loadgen']}",
        f"code: {results['source']} (commit {results['commit'] or 'n/a'}) {results['label']}".rstrip(),
        "",
        f"Import: {imp['resources']:,} resources in {imp['seconds']:.1f} s = **{imp['resources_per_s']:,.0f} "
        f"resources/s** ({imp['bundles']} transaction Bundles of {imp['bundle_size']} patients, "
        f"{imp['clients']} clients, Bundle p50 {imp['bundle_p50_ms']:.0f} ms, "
        f"p95 {imp['bundle_p95_ms']:.0f} ms, "
        f"failed Bundles {imp['failed_bundles']})",
        "",
        *rows,
        "",
        f"Read vs bare endpoint (medians over {results['read_rounds']} alternating rounds): "
        f"rps ours/bare = **{ratios['read_rps']:.2f}** (goal ≥ {GOAL_READ_RATIO}), "
        f"p95 ours/bare = **{ratios['read_p95']:.2f}**",
    ]
    if results["db"] == "postgresql":
        verdict = "met" if imp["resources_per_s"] >= GOAL_IMPORT_PG else "MISSED"
        lines.append(f"Import goal ≥ {GOAL_IMPORT_PG:,.0f} resources/s into PostgreSQL: {verdict}")
    scale = results.get("scale")
    if scale:
        ratio = scale.get("identifier_p95_ratio")
        lines += [
            "",
            f"Scale: identifier search p95 {scale['small'][0]['p95_ms']:.2f} ms at "
            f"{scale['base_resources']:,} resources, {scale['big'][0]['p95_ms']:.2f} ms at "
            f"{scale['grown']['resources']:,} resources (stopped by {scale['grown']['stopped_by']}): "
            f"ratio **{ratio:.2f}** (goal ≤ {GOAL_SCALE_P95_RATIO}); name+birthdate p95 ratio "
            f"{scale.get('name_birthdate_p95_ratio') or 0:.2f}",
        ]
    lines.append(f"Load average during the runs: {results['loadavg_range']} (other jobs share this machine)")
    return "\n".join(lines)


def run_header(started: dt.datetime, source: str | None) -> dict[str, Any]:
    """The first keys of a results file: when, which commit (of --source if given), on what machine."""
    return {
        "started": started.isoformat(timespec="seconds"),
        "commit": git_commit(Path(source) if source else REPO_ROOT),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }


def git_commit(where: Path) -> str | None:
    """The commit benchmarked: HEAD of the installed checkout, or of --source if it is a checkout."""
    if not (where / ".git").exists():
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        proc = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return proc.stdout.strip() or None
    return None


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument(
        "--patients", type=int, default=2000, help="patients to seed (+1 Encounter +1 Observation each)"
    )
    p.add_argument("--bundle-size", type=int, default=100, help="patients per transaction Bundle")
    p.add_argument("--import-clients", type=int, default=2, help="concurrent Bundle POSTs while seeding")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (ours and bare)")
    p.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker (ours and bare)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of discarded load before each run")
    p.add_argument("--read-rounds", type=int, default=3, help="alternating ours/bare read rounds")
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument(
        "--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432", help="server, no database"
    )
    p.add_argument("--pg-database", default="bench_core", help="dropped and recreated (never 'test')")
    p.add_argument(
        "--keep-db", action="store_true", help="keep the database(s) afterwards (e.g. for EXPLAIN)"
    )
    p.add_argument(
        "--bin-dir", default=str(Path(sys.executable).parent), help="where coordination/gunicorn are"
    )
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument(
        "--source",
        help="directory with a copy of the project to benchmark instead of the installed one "
        "(e.g. `git archive HEAD | tar -x -C DIR`); put first on PYTHONPATH of every subprocess",
    )
    p.add_argument(
        "--scale", action="store_true", help="also: identifier search p95 at ~10k vs ~1M resources"
    )
    p.add_argument("--scale-base", type=int, default=10_000, help="resources at the first scale point")
    p.add_argument("--scale-target", type=int, default=1_000_000, help="resources at the second scale point")
    p.add_argument("--scale-timebox", type=float, default=30.0, help="minutes of bulk import at most")
    p.add_argument("--scale-import-procs", type=int, default=0, help="parallel imports (0: 2 PG, 1 SQLite)")
    p.add_argument("--scale-file-patients", type=int, default=10_000, help="patients per NDJSON import file")
    p.add_argument(
        "--label", default="", help="free text saved with the results (e.g. the commit of --source)"
    )
    p.add_argument("--output", help="results JSON path (default bench/results/core-<db>-<time>.json)")
    args = p.parse_args(argv)
    if args.patients < 10 or args.concurrency < 1 or args.duration <= 0:
        p.error("need --patients >= 10, --concurrency >= 1, --duration > 0")
    return args


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench_core-"))
    try:
        yield path
    finally:
        if keep:
            print(f"(kept {path})")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    commit = git_commit(Path(args.source) if args.source else REPO_ROOT)
    with workspace(args.keep_db) as workdir:
        lg = LoadGen(args.loadgen, workdir, args.concurrency, args.wrk_threads)
        print(
            f"bench_core: db={args.db} patients={args.patients} workers={args.workers} threads={args.threads}"
        )
        print(f"load generator: {lg.name}; concurrency {args.concurrency}; workdir {workdir}", flush=True)
        rng = random.Random(args.seed)
        db = fresh_database(args, workdir)
        db_upgrade(args, db, workdir / "upgrade.log")
        ours = start_ours(args, db, workdir)
        bare: Server | None = None
        runs: list[RunResult] = []
        try:
            patients = [make_patient(rng, k) for k in range(args.patients)]
            prime(ours, args.workers, rng)
            print(f"seeding {args.patients:,} patients ({args.patients * 3:,} resources)...", flush=True)
            stats = seed_http(ours, patients, args.bundle_size, args.import_clients, rng)
            print(
                f"  import: {stats.resources:,} resources in {stats.seconds:.1f} s"
                f" = {stats.per_second:,.0f}/s"
            )
            seeded = [p for p in patients if p.res_id]
            if len(seeded) < len(patients) // 2:
                raise SystemExit("seeding failed for most patients; see the messages above")
            analyze(db)
            bare = start_bare(args, db, workdir)
            bare.auth = ours.auth  # the same request bytes; the bare app ignores the header

            reads = read_reqs(seeded, rng)
            if check_once(ours, reads[0], {200}) != check_once(bare, reads[0], {200}):
                raise SystemExit("the bare endpoint does not return the same bytes as the FHIR read")
            idents = identifier_reqs(seeded, rng)
            names = name_birthdate_reqs(seeded, rng)
            for req in (idents[0], names[0]):
                total = json.loads(check_once(ours, req, {200})).get("total")
                if not total:
                    raise SystemExit(f"sanity check: {req.path} found nothing")

            print("measuring...", flush=True)
            ours_reads, bare_reads = [], []
            for _ in range(args.read_rounds):
                ours_reads.append(measure(lg, ours, "read", reads, args))
                bare_reads.append(measure(lg, bare, "read", reads, args))
            bare.stop()
            runs += [median_run(ours_reads), median_run(bare_reads)]
            runs.append(measure(lg, ours, "search-identifier", idents, args))
            runs.append(measure(lg, ours, "search-name-birthdate", names, args))
            runs.append(measure(lg, ours, "create", create_reqs(rng, 5_000_000), args))
            own = seeded[: min(len(seeded), 400)]
            check_once(ours, update_reqs(ours, own[-1:])[0], {200})
            runs.append(
                measure(
                    lg,
                    ours,
                    "update-if-match",
                    update_reqs(ours, own),
                    args,
                    update=True,
                    refresh=lambda: update_reqs(ours, own),
                )
            )
        finally:
            ours.stop()
            if bare is not None:
                bare.stop()
            if not args.keep_db:
                db.drop()

        scale = run_scale(args, workdir, lg) if args.scale else None

    ours_read, bare_read = runs[0], runs[1]
    loads = [x for r in runs for x in r.loadavg_before[:1]]
    results: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "commit": commit,
        "label": args.label,
        "source": args.source or "installed package",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "db": args.db,
        "database": db.name or "sqlite file in a temporary directory",
        "patients": args.patients,
        "workers": args.workers,
        "threads": args.threads,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "read_rounds": args.read_rounds,
        "loadgen": lg.name,
        "import": {**asdict(stats), "resources_per_s": round(stats.per_second, 1)},
        "runs": [asdict(r) for r in runs],
        "read_rounds_detail": {
            "ours": [asdict(r) for r in ours_reads],
            "bare": [asdict(r) for r in bare_reads],
        },
        "ratios": {
            "read_rps": ours_read.rps / bare_read.rps if bare_read.rps else 0.0,
            "read_p95": ours_read.p95_ms / bare_read.p95_ms if bare_read.p95_ms else 0.0,
        },
        "goals": {
            "read_rps_ratio_min": GOAL_READ_RATIO,
            "import_pg_resources_per_s_min": GOAL_IMPORT_PG,
            "scale_p95_ratio_max": GOAL_SCALE_P95_RATIO,
        },
        "loadavg_range": f"{min(loads):.2f}-{max(loads):.2f}" if loads else "n/a",
        "scale": scale,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = Path(args.output) if args.output else RESULTS_DIR / f"core-{args.db}-{started:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print()
    print(markdown(results))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
