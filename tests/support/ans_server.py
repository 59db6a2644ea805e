"""A local stand-in for the ANS directory's FHIR API (gateway.api.esante.gouv.fr/fhir/v2), for tests
and the bench: a real HTTP server on 127.0.0.1 (werkzeug, in a thread) answering searches the way the
real one does (searchset Bundles, HAPI-style ``_getpages`` next links, ``_include``, the
``ESANTE-API-KEY`` header), with failure modes switched on by the test.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

RPPS = "https://rpps.esante.gouv.fr"
ID_NAT_PS = "urn:oid:1.2.250.1.71.4.2.1"
FINESS = "http://finess.sante.gouv.fr"
ID_NAT_ST = "urn:oid:1.2.250.1.71.4.2.2"
V2_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
PROFESSION = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
DEGREE = "https://mos.esante.gouv.fr/NOS/TRE_R48-DiplomeEtatFrancais/FHIR/TRE-R48-DiplomeEtatFrancais"
ROLE_GENRE = "https://mos.esante.gouv.fr/NOS/TRE_R22-GenreActivite/FHIR/TRE-R22-GenreActivite"
API_KEY = "test-key-1234-5678"
PREFIX = "/fhir/v2"
META_SOURCE = "https://annuaire.sante.fr"


def practitioner(pid: str, rpps: str, family: str, given: str, profession: str = "10") -> dict[str, Any]:
    """A Practitioner shaped like the API's (as-dp-practitioner: idNatPs and RPPS, name,
    qualifications, MSS mailbox), with the extensions and meta we do not keep."""
    return {
        "resourceType": "Practitioner",
        "id": pid,
        "meta": {
            "versionId": "1",
            "source": META_SOURCE,
            "profile": [
                "https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/as-dp-practitioner"
            ],
        },
        "language": "fr",
        "identifier": [
            {
                "use": "official",
                "type": {"coding": [{"system": V2_0203, "code": "IDNPS"}]},
                "system": ID_NAT_PS,
                "value": "8" + rpps,
            },
            {
                "use": "official",
                "type": {"coding": [{"system": V2_0203, "code": "RPPS"}]},
                "system": RPPS,
                "value": rpps,
            },
        ],
        "active": True,
        "name": [{"use": "usual", "prefix": ["DR"], "family": family, "given": [given]}],
        "telecom": [{"system": "email", "value": f"{given.lower()}.{family.lower()}@medecin.mssante.fr"}],
        "qualification": [
            {"code": {"coding": [{"system": DEGREE, "code": "DE05", "display": "Docteur en médecine"}]}},
            {
                "extension": [{"url": "https://example.invalid/ext", "valueString": "dropped"}],
                "code": {"coding": [{"system": PROFESSION, "code": profession, "display": "Médecin"}]},
            },
        ],
    }


def organization(oid: str, finess: str, name: str) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": oid,
        "meta": {"source": META_SOURCE},
        "extension": [{"url": "https://example.invalid/org-ext", "valueString": "dropped"}],
        "identifier": [
            {"system": ID_NAT_ST, "value": "1" + finess},
            {"system": FINESS, "value": finess},
        ],
        "active": True,
        "name": name,
        "telecom": [{"system": "phone", "value": "0556000000"}],
        "address": [{"line": ["1 rue des Soins"], "postalCode": "33000", "city": "Bordeaux"}],
    }


def role(rid: str, pid: str, oid: str) -> dict[str, Any]:
    return {
        "resourceType": "PractitionerRole",
        "id": rid,
        "meta": {"source": META_SOURCE},
        "identifier": [{"system": "https://annuaire.sante.fr/idSituationExercice", "value": rid}],
        "active": True,
        "practitioner": {"reference": f"Practitioner/{pid}"},
        "organization": {"reference": f"Organization/{oid}"},
        "code": [{"coding": [{"system": ROLE_GENRE, "code": "GENR01"}]}],
    }


def service(sid: str, oid: str, name: str) -> dict[str, Any]:
    return {
        "resourceType": "HealthcareService",
        "id": sid,
        "identifier": [{"system": "https://annuaire.sante.fr/idActivite", "value": sid}],
        "active": True,
        "providedBy": {"reference": f"Organization/{oid}"},
        "name": name,
        "location": [{"reference": f"Location/{sid}-loc"}],
    }


@dataclass
class Dataset:
    resources: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def add(self, *items: dict[str, Any]) -> None:
        for item in items:
            self.resources.setdefault(item["resourceType"], {})[item["id"]] = item

    def of(self, resource_type: str) -> list[dict[str, Any]]:
        return list(self.resources.get(resource_type, {}).values())


def cpts_dataset(members: int = 5) -> Dataset:
    """A CPTS with ``members`` doctors (one of them with two roles), a service; another hospital,
    a practitioner the directory refuses-to-us (a 10-digit RPPS), and its organization."""
    data = Dataset()
    data.add(organization("001-01-1001", "330000001", "CPTS Bordeaux Rive Droite"))
    data.add(service("hs-1", "001-01-1001", "Coordination des parcours"))
    for n in range(members):
        pid = f"003-{n:06d}"
        data.add(practitioner(pid, f"1000000{n:04d}", f"Nom{n}", f"Prenom{n}"))
        data.add(role(f"pr-{n}", pid, "001-01-1001"))
    data.add(role("pr-second", "003-000000", "001-01-1001"))
    # What the discharge messages of tests/coordination name (RPPS 10003456789, FINESS 750100125).
    data.add(practitioner("003-777", "10003456789", "Martin", "Paul", profession="10"))
    data.add(organization("001-01-750", "750100125", "Hôpital Nord (Annuaire)"))
    bad = practitioner("003-bad", "1000000999", "Faux", "Numero")  # 10 digits: our rules refuse it
    data.add(
        organization("001-01-2002", "330000002", "CPTS avec une erreur"),
        bad,
        role("pr-bad", "003-bad", "001-01-2002"),
    )
    data.add(practitioner("003-ok2", "10000002002", "Juste", "Bon"), role("pr-ok2", "003-ok2", "001-01-2002"))
    return data


class DirectoryServer:
    """The server. ``failure``: None, "500", "503", "slow", "not-json", "wrong-type", "loop",
    "foreign-next", "no-include"; ``failures_left``: how many requests fail (then it recovers;
    None: all). ``requests``: what it was asked (path, query) since the last reset."""

    def __init__(self, data: Dataset, api_key: str = API_KEY) -> None:
        self.data = data
        self.api_key = api_key
        self.failure: str | None = None
        self.failures_left: int | None = None
        self.slow_seconds = 1.5
        self.requests: list[tuple[str, str]] = []
        self.keys_seen: set[str] = set()
        self._pages: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]], int]] = {}
        self._lock = threading.Lock()
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_Quiet
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.base_url = f"http://127.0.0.1:{self._server.server_port}{PREFIX}"

    def start(self) -> DirectoryServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.failure, self.failures_left = None, None
            self.requests.clear()
            self.keys_seen.clear()
            self._pages.clear()

    def fail(self, mode: str, times: int | None = None) -> None:
        with self._lock:
            self.failure, self.failures_left = mode, times

    def _failing(self) -> str | None:
        with self._lock:
            if self.failure is None:
                return None
            if self.failures_left is not None:
                if self.failures_left <= 0:
                    return None
                self.failures_left -= 1
            return self.failure

    # -- WSGI --------------------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        request = Request(environ)
        response = self._answer(request)
        return response(environ, start_response)  # type: ignore[no-any-return]

    def _json(self, body: Any, status: int = 200) -> Response:
        return Response(orjson.dumps(body), status=status, content_type="application/fhir+json")

    def _answer(self, request: Request) -> Response:
        with self._lock:
            self.requests.append((request.path, unquote(request.query_string.decode())))
            self.keys_seen.add(request.headers.get("ESANTE-API-KEY", ""))
        if request.headers.get("ESANTE-API-KEY") != self.api_key:
            return self._json(_outcome("security", "Invalid API key"), 401)
        failure = self._failing()
        if failure in {"500", "503"}:
            return self._json(_outcome("exception", "backend down"), int(failure))
        if failure == "slow":
            time.sleep(self.slow_seconds)
        if failure == "not-json":
            return Response("<html>Gateway maintenance</html>", status=200, content_type="text/html")
        if failure == "wrong-type":
            return self._json({"resourceType": "Patient", "id": "x"})
        path = request.path.removeprefix(PREFIX).strip("/")
        args = request.args
        if not path and "_getpages" in args:
            return self._page(request, args["_getpages"], int(args.get("_getpagesoffset", "0")), failure)
        if path not in {"Practitioner", "PractitionerRole", "Organization", "HealthcareService"}:
            return self._json(_outcome("not-supported", f"unknown path {path}"), 404)
        matches = [r for r in self.data.of(path) if _matches(r, args)]
        includes: list[dict[str, Any]] = []
        if args.get("_include") == "PractitionerRole:practitioner" and failure != "no-include":
            includes = [{"resource": "include"}]  # marker: resolved per page
        count = min(int(args.get("_count", "20")), 1000)
        token = uuid.uuid4().hex
        with self._lock:
            self._pages[token] = (matches, includes, count)
        return self._page(request, token, 0, failure)

    def _page(self, request: Request, token: str, offset: int, failure: str | None) -> Response:
        with self._lock:
            found = self._pages.get(token)
        if found is None:
            return self._json(_outcome("not-found", "search expired"), 410)
        matches, includes, count = found
        page = matches[offset : offset + count]
        base = f"{request.host_url.rstrip('/')}{PREFIX}"
        entries = [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in page
        ]
        if includes:
            people = self.data.resources.get("Practitioner", {})
            wanted = dict.fromkeys(r["practitioner"]["reference"].split("/")[-1] for r in page)
            entries += [
                {"fullUrl": f"{base}/Practitioner/{p}", "resource": people[p], "search": {"mode": "include"}}
                for p in wanted
                if p in people
            ]
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "id": uuid.uuid4().hex,
            "meta": {"lastUpdated": "2026-11-23T10:00:00.000+01:00"},
            "type": "searchset",
            "total": len(matches),
            "link": [{"relation": "self", "url": request.url}],
            "entry": entries,
        }
        if offset + count < len(matches):
            url = (
                f"{base}?_getpages={token}&_getpagesoffset={offset + count}"
                f"&_count={count}&_bundletype=searchset"
            )
            if failure == "loop" and offset > 0:
                url = request.url  # the next page is this one again
            elif failure == "foreign-next":
                url = url.replace("127.0.0.1", "directory.elsewhere.example")
            bundle["link"].append({"relation": "next", "url": url})
        return self._json(bundle)


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def _outcome(code: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }


def _ref_id(reference: Any) -> str:
    return str((reference or {}).get("reference", "")).split("/")[-1]


def _matches(resource: dict[str, Any], args: Any) -> bool:
    for name, value in args.items(multi=True):
        if name.startswith("_") and name != "_id":
            continue
        options = value.split(",")
        if name == "_id":
            ok = resource["id"] in options
        elif name == "identifier":
            pairs = {f"{i.get('system')}|{i.get('value')}" for i in resource.get("identifier", [])}
            ok = any(o in pairs for o in options)
        elif name == "organization":
            ref = resource.get("organization") or resource.get("providedBy")
            ok = _ref_id(ref) in options
        elif name == "practitioner":
            ok = _ref_id(resource.get("practitioner")) in options
        elif name == "active":
            ok = str(resource.get("active", True)).lower() == value
        else:
            return False  # unknown parameters match nothing here
        if not ok:
            return False
    return True
