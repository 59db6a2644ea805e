#!/usr/bin/env python3
"""MSSanté channel throughput (issue 8): notifications delivered per second by the email channel
(SMTP submission, STARTTLS, client certificate) vs the rest-hook channel, in the same run.

    python bench/bench_mssante.py --events 300

In one process: the app over a fresh SQLite file (or ``--db-url``), a local aiosmtpd that requires
STARTTLS and our client certificate (test PKI made with cryptography), a local HTTP receiver; one
Subscription per channel on ``Encounter?status=finished`` (id-only), N Encounters written, then a
delivery worker's passes timed until every event of the subscription is delivered. One SMTP
connection per notification (as the worker sends them one by one).
"""

from __future__ import annotations

import argparse
import ssl
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiosmtpd.controller import Controller  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from coordination_api.app import create_app  # noqa: E402
from coordination_api.config import (  # noqa: E402
    MssanteSettings,
    Settings,
    SubscriptionSettings,
)
from coordination_api.storage.migrate import upgrade  # noqa: E402
from coordination_api.storage.schema import subscription_outbox  # noqa: E402
from coordination_api.subscriptions.worker import Deliverer  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.pki import make_pki  # noqa: E402


class Count:
    def __init__(self) -> None:
        self.n = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.n += 1
        return "250 OK"


def pending(app: Any) -> int:
    o = subscription_outbox
    with app.extensions["coordination"].repo.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(o).where(o.c.status == "pending")) or 0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=300)
    p.add_argument("--db-url", default="")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-mss-"))
    pki = make_pki(work)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    inbox = Count()
    smtp_port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port, tls_context=context, require_starttls=True)
    smtp.start()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_a: Any) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    Thread(target=hook.serve_forever, daemon=True).start()
    settings = Settings(
        database_url=args.db_url or f"sqlite:///{work / 'bench.db'}",
        security_disabled=True,
        access_log=False,
        mssante=MssanteSettings(
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
            from_address="coordination@cpts.mssante.fr",
            client_cert=str(pki.client_cert),
            client_key=str(pki.client_key),
            ca_file=str(pki.ca),
        ),
    )
    app = create_app(settings)
    upgrade(app.extensions["coordination"].repo.engine)
    app.extensions["subscriptions"].config = SubscriptionSettings(
        batch_size=500, poll_interval=0.01, mail_domains=("*.mssante.fr",)
    )
    client = app.test_client()
    headers = {"Content-Type": "application/fhir+json"}
    results = {}
    for channel, endpoint in (
        ("email", "mailto:dr.bench@cabinet.mssante.fr"),
        ("rest-hook", f"http://127.0.0.1:{hook.server_address[1]}/hook"),
    ):
        sub = client.post(
            "/fhir/Subscription",
            json={
                "resourceType": "Subscription",
                "status": "requested",
                "reason": "bench",
                "criteria": "Encounter?status=finished",
                "channel": {"type": channel, "endpoint": endpoint},
            },
            headers=headers,
        ).get_json()
        deliverer = Deliverer(app)
        deliverer.run_once()  # handshake
        for _ in range(args.events):
            client.post(
                "/fhir/Encounter",
                json={
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                },
                headers=headers,
            )
        pending_before = pending(app)
        start = time.perf_counter()
        while pending(app):
            deliverer.run_once()
        seconds = time.perf_counter() - start
        deliverer.close()
        client.delete(f"/fhir/Subscription/{sub['id']}")
        results[channel] = pending_before / seconds
        print(
            f"{channel:9} {pending_before} notifications in {seconds:.2f} s: {results[channel]:.1f}/s",
            flush=True,
        )
    print(f"email / rest-hook = {results['email'] / results['rest-hook']:.2f}; mails received: {inbox.n}")
    smtp.stop()
    hook.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
