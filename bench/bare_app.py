"""Bare baseline for bench_core.py: the stored JSON of one resource by (type, id), nothing else.

No FHIR layer at all (no content negotiation, no ETag, no error OperationOutcome; the request id
is only echoed, because bench_core.py matches responses to requests by it):
one indexed SELECT through SQLAlchemy Core and the stored text sent back as is. It shows what the
same database, driver, Flask and gunicorn settings cost on their own, so the FHIR read can be
stated as a ratio of it.

Run it the way bench_core.py does::

    COORDINATION_DATABASE_URL=... gunicorn --chdir bench -k gthread -w 2 --threads 8 \\
        -b 127.0.0.1:8090 'bare_app:create_app()'
"""

from __future__ import annotations

import os

from flask import Flask, Response, request
from sqlalchemy import Engine, bindparam, create_engine, select
from sqlalchemy.sql import column, table

FHIR_JSON = "application/fhir+json"

# A lightweight table clause: no metadata, no reflection, the three columns the query needs.
resource = table("resource", column("res_type"), column("res_id"), column("content"))


def make_engine(url: str) -> Engine:
    """Plain engine; pool sizes like the server's (SQLite: 20 + 20, PostgreSQL: 10 + 10), no pre-ping."""
    if url.startswith("sqlite"):
        return create_engine(
            url,
            connect_args={"timeout": 60, "check_same_thread": False},
            pool_size=20,
            max_overflow=20,
        )
    return create_engine(url, pool_size=10, max_overflow=10)


def create_app(database_url: str | None = None) -> Flask:
    url = database_url or os.environ.get("COORDINATION_DATABASE_URL")
    if not url:
        raise RuntimeError("set COORDINATION_DATABASE_URL (the database bench_core.py seeded)")
    engine = make_engine(url)
    query = select(resource.c.content).where(
        resource.c.res_type == bindparam("t"),
        resource.c.res_id == bindparam("i"),
    )
    app = Flask(__name__)

    @app.get("/fhir/<res_type>/<res_id>")
    def read(res_type: str, res_id: str) -> Response:
        with engine.connect() as conn:
            content = conn.execute(query, {"t": res_type, "i": res_id}).scalar()
        # Echo X-Request-ID as the FHIR server does: bench_core.py times each request by it.
        headers = {"X-Request-ID": request.headers.get("X-Request-ID", "")}
        if content is None:
            return Response(b'{"resourceType":"OperationOutcome"}', 404, headers, content_type=FHIR_JSON)
        return Response(content, headers=headers, content_type=FHIR_JSON)

    @app.get("/readyz")
    def readyz() -> Response:
        return Response(b'{"status":"ready"}', content_type="application/json")

    return app
