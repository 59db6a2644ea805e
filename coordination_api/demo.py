"""A small fictional CPTS to try the server with: ``coordination demo`` (``make demo``).

What it loads lives in ``fhir_profiles/data/demo``: ``cpts.json`` (a collection Bundle: the CPTS and a
hospital, a coordinator, a GP, a nurse and a pharmacist with their PractitionerRoles in the CPTS's
area, three patients with INS of the ANS test range (INS-NIR-TEST OID) and their cercles de soins, one
objection), ``accounts.json`` (the logins, the hospital client and its senders, a practice-software
client) and ``discharge.json`` (the message a discharge sends, dated when it is written).

Every resource carries the tag ``DEMO_TAG`` and a fixed id, and is written through the repository as
an update-as-create (R4 3.1.0.4.1): a body equal to the stored one writes no version, so a second run
changes nothing. A database holding people or organisations without that tag, or logins and clients
of its own, is refused unless ``force``: the demo is not meant to mix with real data.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Flask
from sqlalchemy import select

import fhir_profiles
from auth.schema import oauth_user
from coordination_api.accounts import create_practitioner_user
from coordination_api.config import DispatchSettings
from coordination_api.coordination.protocol_library import LoadResult, load_definitions
from coordination_api.core.writes import find_matches
from coordination_api.fhir.context import Services
from coordination_api.fhir.resources import validate_resource

DATA_DIR = fhir_profiles.DATA_DIR / "demo"
DEMO_SYSTEM = "https://coordination.cpts.fr/fhir/CodeSystem/demo"
DEMO_TAG = f"{DEMO_SYSTEM}|demo"
# Who and what a CPTS is made of: one of these without the demo tag is someone's real data.
PEOPLE_TYPES = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "HealthcareService",
    "CareTeam",
    "Consent",
)
CLIENT_PREFIX = "demo: "
USER_PREFIX = "demo-"
DISCHARGE_FILE = "demo-discharge.json"
CREDENTIALS_FILE = "demo-credentials.json"
# The practice-software client is public (PKCE): a fixed verifier is harmless for a fictional CPTS and
# lets the printed commands be pasted as they are.
PKCE_VERIFIER = "demo-pkce-verifier-cpts-demo-sur-loire-0123456789"


class DemoRefusedError(Exception):
    """The database holds data that is not the demo's (run again with ``force``)."""


@dataclass
class DemoResult:
    """What a run did."""

    resources: LoadResult = field(default_factory=LoadResult)
    protocols: LoadResult = field(default_factory=LoadResult)
    users_created: list[str] = field(default_factory=list)
    clients_created: list[str] = field(default_factory=list)
    hospital_client: str = ""
    hospital_secret: str | None = None
    practice_client: str = ""

    @property
    def changed(self) -> bool:
        return bool(
            self.resources.created
            or self.resources.updated
            or self.protocols.created
            or self.protocols.updated
            or self.users_created
            or self.clients_created
        )


def _read(name: str) -> Any:
    return json.loads((DATA_DIR / name).read_text(encoding="utf-8"))


def demo_resources() -> list[dict[str, Any]]:
    """The demo CPTS's resources, in the order they are written (referenced ones first)."""
    return [entry["resource"] for entry in _read("cpts.json")["entry"]]


def accounts() -> dict[str, Any]:
    data: dict[str, Any] = _read("accounts.json")
    return data


def foreign_data(app: Flask) -> list[str]:
    """What in the database is not the demo's (a few examples per kind; empty when none)."""
    svc: Services = app.extensions["coordination"]
    found: list[str] = []
    with svc.repo.reading() as conn:
        for resource_type in PEOPLE_TYPES:
            for stored in find_matches(conn, svc, resource_type, [("_tag:not", DEMO_TAG)], limit=3):
                found.append(f"{resource_type}/{stored.res_id}")
        users = conn.scalars(select(oauth_user.c.username).order_by(oauth_user.c.username)).all()
    found += [f"login {u}" for u in users if not u.startswith(USER_PREFIX)][:3]
    clients = app.extensions["auth"].store.list_clients()
    found += [f"client {c['name']!r}" for c in clients if not str(c["name"]).startswith(CLIENT_PREFIX)][:3]
    return found


def load(app: Flask, out_dir: Path, *, force: bool = False, now: datetime | None = None) -> DemoResult:
    """Load the demo CPTS (idempotent) and write the discharge to try in ``out_dir``."""
    if not force:
        foreign = foreign_data(app)
        if foreign:
            raise DemoRefusedError(
                "this database holds data that is not the demo's ("
                + ", ".join(foreign)
                + "); use an empty database, or --force to add the demo CPTS beside it"
            )
    svc: Services = app.extensions["coordination"]
    result = DemoResult()
    result.protocols = load_definitions(svc, mode="missing")  # the library, as `db upgrade` loads it
    with svc.repo.writing() as conn:
        for resource in demo_resources():
            body = validate_resource(copy.deepcopy(resource))
            stored, created = svc.repo.update(conn, body["resourceType"], body["id"], body)
            if created:
                result.resources.created += 1
            elif stored.unchanged:
                result.resources.unchanged += 1
            else:
                result.resources.updated += 1
    _logins(app, result)
    _clients(app, out_dir, result)
    write_discharge(out_dir, now)
    return result


def _logins(app: Flask, result: DemoResult) -> None:
    store = app.extensions["auth"].store
    data = accounts()
    for user in data["users"]:
        if store.user(user["username"]) is not None:
            continue
        # The Practitioner exists already (demo-tagged, same RPPS): the login is bound to it.
        create_practitioner_user(
            app, user["username"], user["rpps"], data["password"], user["family"], user["given"]
        )
        result.users_created.append(user["username"])


def _clients(app: Flask, out_dir: Path, result: DemoResult) -> None:
    store = app.extensions["auth"].store
    data = accounts()
    active = {c["name"]: c["client_id"] for c in store.list_clients() if not c["revoked"]}
    hospital, practice = data["hospital"], data["practice_app"]
    saved = _saved_credentials(out_dir)
    if hospital["name"] in active:
        result.hospital_client = active[hospital["name"]]
        if saved.get("client_id") == result.hospital_client:
            result.hospital_secret = saved.get("client_secret")
    else:
        client_id, secret = store.create_client(
            hospital["name"], hospital["scope"], "client_secret_basic", [], None, None
        )
        result.hospital_client, result.hospital_secret = client_id, secret
        result.clients_created.append(hospital["name"])
        _save_credentials(out_dir, {"client_id": client_id, "client_secret": secret})
    # The senders this client may send as (issue 16): the FHIR endpoint and the HL7 v2 MSH-3^MSH-4.
    store.add_senders(result.hospital_client, hospital["senders"])
    if practice["name"] in active:
        result.practice_client = active[practice["name"]]
    else:
        result.practice_client, _none = store.create_client(
            practice["name"], practice["scope"], "none", [practice["redirect_uri"]], None, None
        )
        result.clients_created.append(practice["name"])


def _saved_credentials(out_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((out_dir / CREDENTIALS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_credentials(out_dir: Path, credentials: dict[str, Any]) -> None:
    """The client secret is stored hashed; a copy for the person trying the demo (owner-only)."""
    path = out_dir / CREDENTIALS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(credentials, handle, indent=2)


def discharge_message(now: datetime | None = None) -> dict[str, Any]:
    """The hospital's discharge of the demo's first patient (85, home), dated ``now``.

    Protocol windows start at the end of the stay (coordination/protocols), and an offer holds within them
    (Task.restriction.period): a message dated now gives offers that hold for the next days. The
    message id and the visit number are new each time, so that each file is a new stay."""
    moment = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0) - timedelta(minutes=1)
    stamp = moment.strftime("%Y%m%d%H%M%S")
    message: dict[str, Any] = _read("discharge.json")
    message["timestamp"] = _instant(moment)
    header, encounter = message["entry"][0], message["entry"][1]["resource"]
    header["resource"]["id"] = f"demo-sortie-{stamp}"
    header["fullUrl"] = f"urn:uuid:{_uuid_of(stamp)}"
    encounter["identifier"][0]["value"] = f"DEMO-SEJOUR-{stamp}"
    encounter["period"] = {"start": _instant(moment - timedelta(days=6)), "end": _instant(moment)}
    return message


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _uuid_of(stamp: str) -> str:
    digest = hashlib.sha256(f"demo-sortie-{stamp}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-8{digest[17:20]}-{digest[20:32]}"


def write_discharge(out_dir: Path, now: datetime | None = None) -> Path:
    path = out_dir / DISCHARGE_FILE
    path.write_text(json.dumps(discharge_message(now), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


def pkce_challenge(verifier: str = PKCE_VERIFIER) -> str:
    """RFC 7636 S256."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def authorize_url(base: str, client_id: str, redirect_uri: str, scope: str) -> str:

    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": "demo",
            "aud": f"{base}/fhir",
            "code_challenge": pkce_challenge(),
            "code_challenge_method": "S256",
        }
    )
    return f"{base}/auth/authorize?{query}"


_JSON_FIELD = "| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')"
_NOT_SHOWN = "<the secret printed when the client was created>"


def next_steps(result: DemoResult, base: str, out_dir: Path) -> str:
    """What to try next, as the command prints it."""
    data = accounts()
    users = {u["username"]: u for u in data["users"]}
    nurse = users["demo-infirmiere"]
    practice, hospital = data["practice_app"], data["hospital"]
    discharge = out_dir / DISCHARGE_FILE
    here = Path.cwd()
    shown = discharge.relative_to(here) if discharge.is_relative_to(here) else discharge
    secret = result.hospital_secret or _NOT_SHOWN
    where = (
        f"(a copy is in {out_dir / CREDENTIALS_FILE}, owner-only)"
        if result.hospital_secret
        else "(stored hashed: printed once, by the run that created the client)"
    )
    lines = ["", f"Logins (fictional professionals; password for all: {data['password']}):"]
    lines += [
        f"  {name:<20} {u['given']} {u['family']}, {u['title']}  ({u['practitioner']})"
        for name, u in users.items()
    ]
    lines += [
        "",
        f"Hospital client (client_secret_basic; senders {', '.join(hospital['senders'])}):",
        f"  client_id:     {result.hospital_client}",
        f"  client_secret: {secret}  {where}",
        f"Practice-software client (public, PKCE): {result.practice_client}",
        "",
        f"Try it, with the server running (make run) at {base}:",
        "",
        f"1. The hospital sends a discharge: Lucienne Moreau, 85, goes home (body in {shown}).",
        f"   export CLIENT_ID={result.hospital_client} CLIENT_SECRET='{secret}'",
        '   TOKEN=$(curl -s -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials '
        f"-d 'scope={hospital['scope']}' {base}/auth/token {_JSON_FIELD}",
        '   curl -s -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/fhir+json" '
        f"--data-binary @{shown} '{base}/fhir/$process-message'",
        "   The protocol 'retour-domicile-personne-agee' starts: the IDEL visit is offered to Inès Bonnet",
        "   and the medication reconciliation to Pierre Aubert (professionals of her area: she has no nurse",
        "   or pharmacist in her cercle de soins); the GP visit goes to Dr Hugo Lambert, her médecin",
        "   traitant. Offers nobody accepts escalate to Camille Roche, the coordinator.",
        "   (Each `make demo` writes a new discharge dated now: offers hold 48 to 72 h after it.)",
        "",
        "2. The nurse sees her offers. Sign in as demo-infirmiere in a browser:",
        "   " + authorize_url(base, result.practice_client, practice["redirect_uri"], practice["scope"]),
        f"   then copy code=... from the address the browser lands on ({practice['redirect_uri']}?code=...):",
        "   USER_TOKEN=$(curl -s -d grant_type=authorization_code -d code=CODE "
        f"-d client_id={result.practice_client} -d redirect_uri={practice['redirect_uri']} "
        f"-d code_verifier={PKCE_VERIFIER} {base}/auth/token {_JSON_FIELD}",
        f"   curl -s -H \"Authorization: Bearer $USER_TOKEN\" '{base}/fhir/{nurse['worklist']}'",
        "   Her offers: the requested Tasks for a nurse that she may see, i.e. offered to her",
        "   (restriction.recipient: PractitionerRole/demo-role-infirmiere; businessStatus: offered-area).",
        "   Each professional's worklist query (sign in as them the same way):",
        *(f"     {name:<20} {u['worklist']}" for name, u in users.items()),
        "   Accept an offer: PUT /fhir/Task/{id} with If-Match, status accepted and owner = her",
        "   PractitionerRole (docs/integration.md section 3).",
        "",
        f"3. The coordinators' pages: {base}/app/ (sign in as demo-coordinatrice: the discharges to follow,",
        "   the Tasks nobody took, hers; as demo-infirmiere: « Accepter la tâche » on her offers), and each",
        f"   patient's pathway at {base}/app/patients/<id>.",
        "",
        "Colette Garnier objects to Pierre Aubert (Consent deny): he is not offered her Tasks and",
        "cannot read her record, although he is in her cercle de soins.",
        f"Demo data is tagged {DEMO_TAG}; never use these passwords on a server others can reach.",
    ]
    return "\n".join(lines)


COORDINATOR = "Practitioner/demo-coordinatrice"
COORDINATOR_ROLE = "coordinateur-parcours"  # her role in the demo's cercles de soins


def coordinator_warnings(settings: DispatchSettings) -> list[str]:
    """Where the configured coordinator (config.DispatchSettings) is not the demo's."""
    out = []
    if settings.coordinator and settings.coordinator != COORDINATOR:
        out.append(
            f"COORDINATION_DISPATCH_COORDINATOR is {settings.coordinator}: escalated Tasks go there, "
            f"not to the demo's coordinator ({COORDINATOR})"
        )
    elif not settings.coordinator and settings.coordinator_role != COORDINATOR_ROLE:
        out.append(
            f"COORDINATION_DISPATCH_COORDINATOR_ROLE is {settings.coordinator_role!r}: the demo's "
            f"coordinator has the role {COORDINATOR_ROLE!r} in the cercles de soins, so she neither "
            "coordinates the demo patients nor receives escalated Tasks"
        )
    return out


def summary(result: DemoResult) -> str:
    if not result.changed:
        return (
            "Nothing to do: the demo CPTS is already loaded "
            f"({result.resources.unchanged} resources, logins and clients unchanged)."
        )
    r = result.resources
    return (
        f"Demo CPTS loaded: resources {r.created} created, {r.updated} updated, {r.unchanged} unchanged; "
        f"logins created: {', '.join(result.users_created) or 'none'}; "
        f"clients created: {len(result.clients_created)}; protocol library: {result.protocols.summary()}."
    )
