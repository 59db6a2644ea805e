"""Every script in examples/ runs, as written, against a live ``coordination serve`` (issue 19).

One server for the module: a fresh SQLite database, the clients, senders and professionals the examples
name (registered with the CLI as examples/README.md says), a stand-in PDSm for ``$dmp-push``. Scripts
are found by glob: a new example without an entry in ``SETUP`` fails here until it has one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from joserfc.jwk import RSAKey

from tests.support.net import free_port
from tests.support.served import CLI, wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SYSTEM_SENDERS = ("urn:oid:1.2.250.1.71.4.2.2|1330000001", "SIH^CHU", "750100125")
NURSE = ("infirmiere", "10000000601", "Moreau", "Claire")
COORDINATOR = ("coordinatrice", "10000000602", "Roux", "Anne")
PASSWORD = "mot-de-passe-exemple-1"
REDIRECT = "http://127.0.0.1:9/callback"

# The environment each example needs beyond BASE_URL (the values come from ``Live``); a list runs the
# example once per entry.
SETUP: dict[str, list[tuple[str, ...]]] = {
    "process_message.sh": [("system",)],
    "nde.sh": [("system",)],
    "hl7v2_http.sh": [("system",)],
    "hl7v2_mllp.py": [("mllp",)],
    "careteam.sh": [("system",)],
    "apply.sh": [("system",)],
    "task_accept.py": [("system", "app", "nurse")],
    "subscription.py": [("system",)],
    "export.py": [("system",)],
    "dmp_push.py": [("system",)],
    "python_client.py": [("system",), ("private_key_jwt",)],
}


def scripts() -> list[str]:
    found = sorted(
        p.name for p in EXAMPLES.iterdir() if p.suffix in {".sh", ".py"} and not p.name.startswith("_")
    )
    assert found, "no examples found"
    return found


class Pdsm(BaseHTTPRequestHandler):
    """A stand-in PDSm (IHE MHD ITI-65 recipient): every transaction is stored, each entry 201."""

    def do_POST(self) -> None:
        bundle = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        entries = [
            {"response": {"status": "201 Created", "location": f"{e['resource']['resourceType']}/{i}"}}
            for i, e in enumerate(bundle.get("entry", []))
        ]
        body = json.dumps(
            {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@dataclass
class Live:
    base: str
    env: dict[str, dict[str, str]]
    log: Path


def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> Any:
    done = subprocess.run([CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if shutil.which("jq") is None or shutil.which("curl") is None:
        pytest.fail("the shell examples need curl and jq (examples/README.md)")
    tmp = tmp_path_factory.mktemp("examples")
    pdsm = ThreadingHTTPServer(("127.0.0.1", 0), Pdsm)
    threading.Thread(target=pdsm.serve_forever, daemon=True).start()
    port, mllp = free_port(), free_port()
    (tmp / "metrics").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COORDINATION_")}
    env.update(
        COORDINATION_DATABASE_URL=f"sqlite:///{tmp / 'examples.db'}",
        COORDINATION_ACCESS_LOG="false",
        COORDINATION_SUBSCRIPTION_POLL_INTERVAL="0.1",
        COORDINATION_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}/fhir",
        COORDINATION_EXPORT_DIR=str(tmp / "exports"),
        COORDINATION_MLLP_SENDERS="SIH^CHU",
        COORDINATION_DMP_RECIPIENT_URL=f"http://127.0.0.1:{pdsm.server_address[1]}/fhir",
        PROMETHEUS_MULTIPROC_DIR=str(tmp / "metrics"),
    )
    _cli(env, "db", "upgrade")
    log = tmp / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [CLI, "serve", "--port", str(port), "--mllp-port", str(mllp)], env=env, stdout=out, stderr=out
        )
    try:
        senders = [a for s in SYSTEM_SENDERS for a in ("--sender", s)]
        system = _cli(
            env, "clients", "create", "--name", "CH Exemple", "--scope", "system/*.cruds", *senders, "--json"
        )
        app = _cli(
            env,
            *("clients", "create", "--name", "Logiciel de cabinet", "--auth", "none"),
            *("--redirect-uri", REDIRECT, "--scope", "openid fhirUser user/*.cruds offline_access", "--json"),
        )
        key = RSAKey.generate_key(2048, parameters={"kid": "exemple-1"}, private=True)
        (tmp / "key.pem").write_bytes(key.as_pem(private=True))
        (tmp / "jwks.json").write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
        signed = _cli(
            env,
            *("clients", "create", "--name", "GRADeS", "--auth", "private_key_jwt"),
            *("--jwks-file", str(tmp / "jwks.json"), "--scope", "system/*.cruds", "--json"),
        )
        for username, rpps, family, given in (NURSE, COORDINATOR):
            _cli(
                env,
                *(
                    "users",
                    "create",
                    "--username",
                    username,
                    "--rpps",
                    rpps,
                    "--family",
                    family,
                    "--given",
                    given,
                ),
                *("--password-stdin", "--json"),
                stdin=PASSWORD + "\n",
            )
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return requests.get(f"{base}/readyz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, 90, "serve ready", step=0.1)
        plain = {k: v for k, v in os.environ.items() if not k.startswith("COORDINATION_")}
        yield Live(
            base,
            {
                "base": {**plain, "BASE_URL": base},
                "system": {"CLIENT_ID": system["client_id"], "CLIENT_SECRET": system["client_secret"]},
                "private_key_jwt": {
                    "CLIENT_ID": signed["client_id"],
                    "PRIVATE_KEY_FILE": str(tmp / "key.pem"),
                    "KEY_ID": "exemple-1",
                },
                "app": {"APP_CLIENT_ID": app["client_id"], "APP_REDIRECT_URI": REDIRECT},
                "nurse": {"NURSE_USERNAME": NURSE[0], "NURSE_PASSWORD": PASSWORD},
                "mllp": {"MLLP_HOST": "127.0.0.1", "MLLP_PORT": str(mllp)},
            },
            log,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        pdsm.shutdown()
        pdsm.server_close()


@pytest.mark.parametrize("name", scripts())
def test_example_runs_against_a_live_server(live: Live, name: str) -> None:
    assert name in SETUP, f"examples/{name} has no test setup: add it to SETUP in {Path(__file__).name}"
    command = (
        ["bash", str(EXAMPLES / name)] if name.endswith(".sh") else [sys.executable, str(EXAMPLES / name)]
    )
    for needs in SETUP[name]:
        env = dict(live.env["base"])
        for part in needs:
            env.update(live.env[part])
        for attempt in ("first run", "second run"):  # examples are safe to run again
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=EXAMPLES)
            assert done.returncode == 0, (
                f"examples/{name} ({', '.join(needs)}, {attempt}) exited {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )


def test_every_example_file_is_used() -> None:
    """Each request file in examples/ is named by a script (or by the docs), so none is left untested."""
    texts = " ".join(p.read_text(encoding="utf-8") for p in EXAMPLES.iterdir() if p.suffix in {".sh", ".py"})
    data = [p.name for p in EXAMPLES.iterdir() if p.suffix in {".json", ".hl7"}]
    assert data
    assert [n for n in data if n not in texts] == []


def test_setup_names_only_existing_examples() -> None:
    assert sorted(set(SETUP) - set(scripts())) == []


def test_the_docs_link_only_existing_examples() -> None:
    root = EXAMPLES.parent
    for doc in (root / "docs" / "integration.md", root / "README.md", EXAMPLES / "README.md"):
        text = doc.read_text(encoding="utf-8")
        named = set(re.findall(r"examples/([A-Za-z0-9_.-]+\.(?:json|hl7|sh|py|md))", text))
        named |= (
            set(re.findall(r"\]\(([A-Za-z0-9_-]+\.(?:json|hl7|sh|py))\)", text))
            if doc.parent == EXAMPLES
            else set()
        )
        assert named, doc
        assert sorted(n for n in named if not (EXAMPLES / n).is_file()) == [], doc
