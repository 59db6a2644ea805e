"""Import throughput through transaction Bundles, in-process, on SQLite and PostgreSQL.

    python bench/bench_import.py [--db sqlite,postgresql] [--patients 3000] [--profile]

For each database: a fresh one (a SQLite file in a temporary directory, a PostgreSQL schema of its
own in ``--pg-url``'s database, dropped afterwards), migrated, then the real app (``create_app``,
security on, a backend-service token from our token endpoint) receives POST /fhir transaction
Bundles of 99 entries (33 Patients, each with its Encounter and Observation, linked by
``urn:uuid`` fullUrls), the shape the outside harness seeds with (/work/shared/perf/synth.py). One
client, in-process (the Flask test client): the figure is the server's work per resource, without
HTTP or concurrency. ``--profile`` runs cProfile over the timed Bundles and prints the top costs.
Bodies are built before the clock starts; the first two Bundles are not timed (model building).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, text

from coordination_api.app import create_app
from coordination_api.config import Settings
from coordination_api.storage.migrate import upgrade

SYNTH = Path("/work/shared/perf")
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def bundles(patients: int, per_bundle: int = 33) -> list[bytes]:
    sys.path.insert(0, str(SYNTH))
    import synth  # the harness's own generator (read only, outside the project)

    tag = uuid.uuid4().hex[:6]
    fams = synth.families(tag)
    return [
        orjson.dumps(synth.transaction_bundle(tag, start, min(per_bundle, patients - start), fams))
        for start in range(0, patients, per_bundle)
    ]


def _warm_up(client: Any, bodies: list[bytes], headers: dict[str, str]) -> None:
    """Not timed (and named, so that a py-spy profile can leave it out): models, compiled rules."""
    for body in bodies:
        assert client.post("/fhir", data=body, headers=headers).status_code == 200


def run(url: str, bodies: list[bytes], profile: bool) -> dict[str, Any]:
    settings = Settings(database_url=url, access_log=False, log_level="WARNING")
    app = create_app(settings)
    upgrade(app.extensions["coordination"].repo.engine)
    client = app.test_client()
    store = app.extensions["auth"].store
    client_id, secret = store.create_client("bench", "system/*.cruds", "client_secret_basic", [], None, None)
    answer = client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
        auth=(client_id, secret),
    )
    headers = {
        "Authorization": f"Bearer {answer.get_json()['access_token']}",
        "Content-Type": "application/fhir+json",
    }
    _warm_up(client, bodies[:2], headers)
    profiler = cProfile.Profile() if profile else None
    resources = 0
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    for body in bodies[2:]:
        response = client.post("/fhir", data=body, headers=headers)
        assert response.status_code == 200, response.get_data()[:300]
        resources += len(response.get_json()["entry"])
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - start
    app.extensions["audit_writer"].flush()
    app.extensions["coordination"].repo.engine.dispose()
    result: dict[str, Any] = {"resources": resources, "seconds": round(seconds, 2)}
    result["resources_per_s"] = round(resources / seconds, 1)
    if profiler:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(25)
        result["profile"] = out.getvalue()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bodies = bundles(args.patients + 66)
    for db in args.db.split(","):
        if db == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                result = run(f"sqlite:///{tmp}/bench.db", bodies, args.profile)
        else:
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            admin = create_engine(args.pg_url)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            sep = "&" if "?" in args.pg_url else "?"
            try:
                result = run(f"{args.pg_url}{sep}options=-csearch_path%3D{schema}", bodies, args.profile)
            finally:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
        print(result.pop("profile", ""))
        print(db, result)


if __name__ == "__main__":
    main()
