"""The national directory (ANS Annuaire Santé) in our data: mapping, idempotent upserts, sync of a
CPTS's members, and enrichment of practitioners and organizations a discharge named.

The directory's resources carry its own ids, profiles (as-dp-*), extensions and identifier systems;
ours keep what our profiles accept and what coordination needs: identifiers (RPPS / idNatPs, FINESS
/ idNatSt, with the directory's FINESS system ``http://finess.sante.gouv.fr`` renamed to FR Core's),
names, qualifications, telecoms, addresses, types and codes, the active flag. Every write goes
through our normal path (R4 structure + French identifier rules, then the repository in one write
transaction: history, search index, subscriptions' outbox), keyed by a national identifier so that
running it again changes nothing (conditional create, then an update only when something differs).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy.engine import Connection

from connectors import annuaire
from connectors.annuaire import AnnuaireSante, Directory, Member, NullDirectory, reference_id
from connectors.errors import ConnectorError
from connectors.http import HttpSettings
from coordination_api import jobs
from coordination_api.config import AnnuaireSettings, Settings
from coordination_api.coordination import namespaces
from coordination_api.core.services import Services
from coordination_api.core.validation import validate_resource
from coordination_api.core.writes import create_in, find_matches, one_match, update_in
from coordination_api.errors import Category, FhirError
from coordination_api.storage.repository import Stored
from fhir_profiles.french_identifiers import FINESS, ID_NAT_PS, ID_NAT_ST, RPPS, check_finess, check_rpps

log = logging.getLogger(__name__)
ENRICH = "directory-enrich"
# Roles and services have no national identifier: the directory's own id keys them here.
SOURCE_SYSTEM = "urn:coordination:annuaire-sante:"
_SYSTEMS = {annuaire.FINESS: FINESS, annuaire.RPPS_V1: RPPS}  # directory system -> FR Core's

T = TypeVar("T")


# -- the directory of this application ---------------------------------------------------------


def build(settings: AnnuaireSettings) -> Directory:
    """The real client when a base URL is configured, else the Null directory (development)."""
    if not settings.base_url:
        return NullDirectory()
    http = HttpSettings(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        retries=settings.retries,
        backoff=settings.backoff,
        verify=settings.ca_bundle or True,
    )
    return AnnuaireSante(
        settings.base_url,
        settings.api_key,
        http,
        page_size=settings.page_size,
        max_pages=settings.max_pages,
        cache_ttl=settings.cache_ttl,
        cache_size=settings.cache_size,
    )


def init_app(app: Flask, settings: Settings) -> None:
    """The directory of this app, and the enrichment job kind (every worker process knows it)."""
    app.extensions["directory"] = build(settings.annuaire)
    jobs.register(app, ENRICH, enrich_job)


def of(app: Flask) -> Directory:
    directory: Directory = app.extensions.get("directory") or NullDirectory()
    return directory


# -- mapping: the directory's resources to ours ------------------------------------------------


def _pick(source: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: source[k] for k in keys if source.get(k) not in (None, "", [], {})}


def _items(value: Any, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Elements of a repeating element, each reduced to ``keys`` (extensions dropped)."""
    out = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, dict):
            picked = _pick(item, keys)
            if picked:
                out.append(picked)
    return out


def _concept(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    concept = _pick(value, ("text",))
    codings = _items(value.get("coding"), ("system", "version", "code", "display"))
    if codings:
        concept["coding"] = codings
    return concept or None


def _concepts(value: Any) -> list[dict[str, Any]]:
    concepts = (_concept(v) for v in value) if isinstance(value, list) else ()
    return [c for c in concepts if c]


def _identifiers(source: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for identifier in source.get("identifier") or []:
        if not isinstance(identifier, dict):
            continue
        system, value = identifier.get("system"), identifier.get("value")
        if not isinstance(system, str) or not isinstance(value, str) or not value:
            continue
        mapped: dict[str, Any] = {"system": _SYSTEMS.get(system, system), "value": value}
        if identifier.get("use") in {"usual", "official", "temp", "secondary", "old"}:
            mapped["use"] = identifier["use"]
        type_ = _concept(identifier.get("type"))
        if type_:
            mapped["type"] = type_
        if (mapped["system"], value) not in {(i["system"], i["value"]) for i in out}:
            out.append(mapped)
    return out


def _telecoms(source: dict[str, Any]) -> list[dict[str, Any]]:
    return _items(source.get("telecom"), ("system", "value", "use", "rank"))


def _put(body: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` when the directory gave something usable (R4 json.html: no empty elements)."""
    if value:
        body[key] = value


def practitioner_body(source: dict[str, Any]) -> dict[str, Any]:
    """Our Practitioner from the directory's: identifiers (RPPS derived from idNatPs when only the
    latter is given), names, qualifications, telecoms."""
    identifiers = _identifiers(source)
    systems = {i["system"] for i in identifiers}
    if RPPS not in systems:
        for i in list(identifiers):
            if i["system"] == ID_NAT_PS and i["value"].startswith("8") and not check_rpps(i["value"][1:]):
                identifiers.append({"system": RPPS, "value": i["value"][1:]})
                break
    body: dict[str, Any] = {"resourceType": "Practitioner", "identifier": identifiers}
    if isinstance(source.get("active"), bool):
        body["active"] = source["active"]
    _put(body, "name", _items(source.get("name"), ("use", "text", "family", "given", "prefix", "suffix")))
    _put(body, "telecom", _telecoms(source))
    qualifications = []
    for q in source.get("qualification") or []:
        code = _concept(q.get("code")) if isinstance(q, dict) else None
        if code:
            qualification: dict[str, Any] = {"code": code}
            if isinstance(q.get("period"), dict):
                qualification["period"] = _pick(q["period"], ("start", "end"))
            qualifications.append(qualification)
    _put(body, "qualification", qualifications)
    return body


def organization_body(source: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Organization", "identifier": _identifiers(source)}
    if isinstance(source.get("active"), bool):
        body["active"] = source["active"]
    body.update(_pick(source, ("name",)))
    if isinstance(source.get("alias"), list):
        _put(body, "alias", [a for a in source["alias"] if isinstance(a, str) and a])
    _put(body, "type", _concepts(source.get("type")))
    _put(body, "telecom", _telecoms(source))
    address_fields = ("use", "type", "text", "line", "city", "district", "postalCode", "country")
    _put(body, "address", _items(source.get("address"), address_fields))
    return body


def _source_identifier(resource_type: str, source: dict[str, Any]) -> dict[str, Any]:
    return {"system": SOURCE_SYSTEM + resource_type, "value": str(source["id"])}


def role_body(source: dict[str, Any], practitioner: str, organization: str) -> dict[str, Any]:
    """Our PractitionerRole: ``practitioner``/``organization`` are our references."""
    body: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "identifier": [*_identifiers(source), _source_identifier("PractitionerRole", source)],
        "practitioner": {"reference": practitioner},
        "organization": {"reference": organization},
    }
    if isinstance(source.get("active"), bool):
        body["active"] = source["active"]
    if isinstance(source.get("period"), dict):
        _put(body, "period", _pick(source["period"], ("start", "end")))
    for key in ("code", "specialty"):
        _put(body, key, _concepts(source.get(key)))
    _put(body, "telecom", _telecoms(source))
    return body


def service_body(source: dict[str, Any], organization: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "HealthcareService",
        "identifier": [*_identifiers(source), _source_identifier("HealthcareService", source)],
        "providedBy": {"reference": organization},
    }
    if isinstance(source.get("active"), bool):
        body["active"] = source["active"]
    body.update(_pick(source, ("name", "comment")))
    for key in ("category", "type", "specialty"):
        _put(body, key, _concepts(source.get(key)))
    _put(body, "telecom", _telecoms(source))
    return body


# -- idempotent upserts ------------------------------------------------------------------------


def key_identifier(body: dict[str, Any]) -> dict[str, Any]:
    """The identifier that names this resource here: RPPS, FINESS, then the national ids, then the
    directory's id (roles, services)."""
    by_system: dict[str, dict[str, Any]] = {i["system"]: i for i in reversed(body.get("identifier") or [])}
    for system in (RPPS, FINESS, ID_NAT_PS, ID_NAT_ST, SOURCE_SYSTEM + body["resourceType"]):
        if system in by_system:
            return by_system[system]
    raise FhirError(
        Category.REQUIRED,
        f"The directory's {body['resourceType']} has no RPPS, FINESS or national identifier",
        expression=f"{body['resourceType']}.identifier",
    )


def _token(value: str) -> str:
    for char in "\\|,$":  # R4 search.html#escaping
        value = value.replace(char, "\\" + char)
    return value


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in {"id", "meta"}}


def merged(current: dict[str, Any], incoming: dict[str, Any]) -> dict[str, Any]:
    """The stored resource brought up to date: the directory's elements replace ours, identifiers
    are united (a local IPP-like identifier stays), elements the directory does not map stay."""
    out = _content(current)
    for key, value in incoming.items():
        if key == "identifier":
            known = {(i.get("system"), i.get("value")) for i in out.get("identifier") or []}
            out["identifier"] = [
                *(out.get("identifier") or []),
                *(i for i in value if (i["system"], i["value"]) not in known),
            ]
        else:
            out[key] = value
    return out


def upsert(conn: Connection, svc: Services, body: dict[str, Any]) -> tuple[str, Stored]:
    """Create, update or leave one resource keyed by its identifier: ("created" | "updated" |
    "unchanged", stored). FhirError when our rules refuse it."""
    with namespaces.writing_as(_own_namespace):  # the directory's keys are added by this sync only
        return _upsert(conn, svc, body)


def _own_namespace(system: str) -> bool:
    return system.startswith(SOURCE_SYSTEM)


def _upsert(conn: Connection, svc: Services, body: dict[str, Any]) -> tuple[str, Stored]:
    resource_type = body["resourceType"]
    key = key_identifier(body)
    params = [("identifier", f"{_token(key['system'])}|{_token(key['value'])}")]
    match = one_match(
        conn,
        svc,
        resource_type,
        params,
        lambda n: f"{n} {resource_type} resources have the identifier {key['system']}|{key['value']}",
    )
    matches = [match] if match is not None else []
    if not matches:
        criteria = "identifier=" + "|".join(quote(_token(key[k]), safe="") for k in ("system", "value"))
        result = create_in(conn, svc, resource_type, validate_resource(body, resource_type), criteria)
        assert result.stored is not None
        if result.status == 201:
            return "created", result.stored
        matches = [result.stored]  # created by a concurrent writer meanwhile: update it below
    current = matches[0]
    stored_content = _content(current.json())
    new = merged(stored_content, body)
    if new == stored_content:
        return "unchanged", current
    new = validate_resource({**new, "id": current.res_id}, resource_type)
    result = update_in(conn, svc, resource_type, current.res_id, new)
    assert result.stored is not None
    return "updated", result.stored


# -- sync of an organization's members ---------------------------------------------------------


@dataclass
class SyncSummary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def records(self) -> int:
        return self.created + self.updated + self.unchanged + self.failed

    def count(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    def fail(self, what: str, reason: str) -> None:
        self.failed += 1
        if len(self.errors) < 20:  # the first ones say enough; identifiers only, no patient data
            self.errors.append(f"{what}: {reason}")

    def render(self) -> str:
        rate = self.records / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"created {self.created}, updated {self.updated}, unchanged {self.unchanged}, "
            f"failed {self.failed} ({self.records} records in {self.seconds:.1f} s, {rate:.0f}/s)"
        ]
        lines += [f"  {e}" for e in self.errors]
        return "\n".join(lines)


class DirectoryError(Exception):
    """The directory does not know what was asked (no partial import happened)."""


def _batches(items: Iterator[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_one(
    conn: Connection, svc: Services, summary: SyncSummary, what: str, body: Callable[[], dict[str, Any]]
) -> Stored | None:
    """One record in its own savepoint: a refusal by our rules fails this record only."""
    savepoint = conn.begin_nested()
    try:
        outcome, stored = upsert(conn, svc, body())
    except FhirError as exc:
        savepoint.rollback()
        summary.fail(what, exc.diagnostics)
        return None
    savepoint.commit()
    summary.count(outcome)
    return stored


def sync_organization(
    svc: Services,
    directory: Directory,
    organization: str,
    progress: Callable[[int, int | None], None] | None = None,
    batch_size: int = 200,
) -> SyncSummary:
    """Import an organization (FINESS or directory id), its HealthcareServices, its PractitionerRoles
    and their Practitioners. Idempotent: a second run counts everything unchanged. ConnectorError
    when the directory fails (what was committed before stays: running it again resumes)."""
    started = time.perf_counter()
    summary = SyncSummary()
    source = directory.organization(organization)
    if source is None:
        raise DirectoryError(f"the directory has no organization {organization}")
    services = list(directory.healthcare_services(source["id"]))  # no network inside a write
    with svc.repo.writing() as conn:
        org = _write_one(
            conn, svc, summary, f"Organization/{source['id']}", lambda: organization_body(source)
        )
        if org is None:
            summary.seconds = time.perf_counter() - started
            return summary
        org_ref = f"Organization/{org.res_id}"
        for hs in services:
            _write_one(
                conn, svc, summary, f"HealthcareService/{hs['id']}", partial(service_body, hs, org_ref)
            )
    people: dict[str, str | None] = {}  # directory Practitioner id -> our reference (None: failed)
    seen: set[str] = set()  # the directory ids of the roles listed this time
    done = 0
    for batch in _batches(directory.organization_members(source["id"]), batch_size):
        with svc.repo.writing() as conn:
            for member in batch:
                seen.add(str(member.role.get("id")))
                _sync_member(conn, svc, summary, member, org_ref, people)
        done += len(batch)
        if progress is not None:
            progress(done, batch[0].total)
    with svc.repo.writing() as conn:
        _end_unlisted_roles(conn, svc, summary, org_ref, seen)
    summary.seconds = time.perf_counter() - started
    return summary


def _end_unlisted_roles(
    conn: Connection, svc: Services, summary: SyncSummary, org_ref: str, seen: set[str]
) -> None:
    """A role the directory no longer lists for this organization (the professional left) is made
    inactive once the whole member list was read: an affiliation is access to the patients whose care
    team names the organization (auth/policy), so a stale one must not outlive the directory's."""
    system = SOURCE_SYSTEM + "PractitionerRole"
    ours = find_matches(
        conn, svc, "PractitionerRole", [("organization", org_ref), ("active", "true")], limit=100_000
    )
    for role in ours:
        body = role.json()
        ids = [i.get("value") for i in body.get("identifier") or [] if i.get("system") == system]
        if not ids or ids[0] in seen:
            continue  # not from the directory (an operator's), or still listed
        body["active"] = False
        _write_one(conn, svc, summary, f"PractitionerRole/{ids[0]}", partial(dict, body))


def _sync_member(
    conn: Connection,
    svc: Services,
    summary: SyncSummary,
    member: Member,
    org_ref: str,
    people: dict[str, str | None],
) -> None:
    role = member.role
    who = reference_id(role.get("practitioner"), "Practitioner")
    if member.practitioner is None or who is None:
        summary.fail(f"PractitionerRole/{role['id']}", "the directory gave no Practitioner for it")
        return
    if who not in people:
        person = member.practitioner
        stored = _write_one(conn, svc, summary, f"Practitioner/{who}", lambda: practitioner_body(person))
        people[who] = f"Practitioner/{stored.res_id}" if stored is not None else None
    practitioner_ref = people[who]
    if practitioner_ref is None:
        summary.fail(f"PractitionerRole/{role['id']}", "its Practitioner was refused")
        return
    _write_one(
        conn,
        svc,
        summary,
        f"PractitionerRole/{role['id']}",
        lambda: role_body(role, practitioner_ref, org_ref),
    )


# -- enrichment: practitioners and organizations a discharge named -----------------------------


def enqueue_enrichment(conn: Connection, svc: Services, resource_type: str, number: str) -> None:
    """In the caller's write transaction: look ``number`` (RPPS or FINESS) up later, once.

    Nothing is queued without a configured directory (the Null one would answer nobody)."""
    if not svc.settings.annuaire.base_url:
        return
    field_name = "rpps" if resource_type == "Practitioner" else "finess"
    jobs.enqueue(conn, ENRICH, {"type": resource_type, field_name: number}, key=f"{resource_type}|{number}")


def enrich_job(app: Flask, payload: dict[str, Any]) -> None:
    """Fetch a Practitioner (RPPS) or Organization (FINESS) from the directory and merge it into
    ours. A directory that is down raises a retryable ConnectorError: the job runs again later."""
    svc: Services = app.extensions["coordination"]
    directory = of(app)
    resource_type = payload.get("type")
    if resource_type == "Practitioner" and not check_rpps(str(payload.get("rpps", ""))):
        source = directory.practitioner(payload["rpps"])
        body = practitioner_body(source) if source is not None else None
    elif resource_type == "Organization" and not check_finess(str(payload.get("finess", ""))):
        source = directory.organization(payload["finess"])
        body = organization_body(source) if source is not None else None
    else:
        raise jobs.JobError(f"not a directory enrichment: {resource_type!s:.40}")
    if body is None:
        log.info("directory enrichment: %s not in the directory", resource_type)
        return
    try:
        with svc.repo.writing() as conn:
            upsert(conn, svc, body)
    except FhirError as exc:
        raise jobs.JobError(f"the directory's {resource_type} was refused: {exc.diagnostics}") from exc


def practitioner_details(app: Flask, rpps: str) -> dict[str, Any] | None:
    """Our Practitioner body from the directory (validated), for a new account; None when the
    directory is not configured or does not know the RPPS. ConnectorError when it is down."""
    directory = of(app)
    if not directory.configured:
        return None
    source = directory.practitioner(rpps)
    if source is None:
        return None
    try:
        return validate_resource(practitioner_body(source), "Practitioner")
    except FhirError as exc:
        log.warning("the directory's Practitioner for a new account was refused: %s", exc.diagnostics)
        return None


# -- `coordination directory` ------------------------------------------------------------------


@click.group("directory")
def directory_group() -> None:
    """The national directory (Annuaire Santé): import a CPTS's members."""


@directory_group.command("sync")
@click.option("--organization", required=True, help="FINESS number or the directory's organization id")
@with_appcontext
def directory_sync(organization: str) -> None:
    """Import an organization, its services, its PractitionerRoles and their Practitioners (again:
    what changed only)."""
    directory = of(current_app)
    if not directory.configured:
        raise click.ClickException("no directory configured (COORDINATION_ANNUAIRE_BASE_URL)")
    if not (annuaire.is_finess(organization) or annuaire.is_directory_id(organization)):
        raise click.ClickException("--organization takes a FINESS number or a directory id")
    bar: Any = None

    def progress(done: int, total: int | None) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=total or done, label="members", file=sys.stderr)
            bar.__enter__()
        if total is None and done > bar.length:
            bar.length = done
        bar.update(done - bar.pos)

    try:
        summary = sync_organization(current_app.extensions["coordination"], directory, organization, progress)
    except DirectoryError as exc:
        raise click.ClickException(str(exc)) from exc
    except ConnectorError as exc:
        raise click.ClickException(f"{exc} (what was imported before stays; run it again)") from exc
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    click.echo(summary.render())
    if summary.failed:
        sys.exit(1)
