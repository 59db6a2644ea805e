"""What a page reads and writes, through the same search, read and write core as the FHIR API and the
same access decision point (the request's Principal, ``fhir/access``); every access noted for the
request's AuditEvent. Views never query resource tables themselves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import g
from sqlalchemy import ColumnElement
from sqlalchemy.engine import Connection

from auth import policy
from auth.browser import service
from coordination_api.config import DispatchSettings
from coordination_api.core import writes
from coordination_api.core.versions import version_number
from coordination_api.errors import Category, FhirError
from coordination_api.fhir import access
from coordination_api.fhir.context import services
from coordination_api.search import projection
from coordination_api.search.executor import run_search
from coordination_api.search.projection import Projection, Tally
from coordination_api.search.query import SearchQuery
from coordination_api.storage.repository import Stored, now_us
from coordination_api.web.http import base_url


@dataclass(frozen=True)
class Found:
    """A search's answer: the matches and the included resources (as JSON), and whether a next page
    exists (pages never ask for ``Bundle.total``)."""

    matches: list[dict[str, Any]]
    included: list[dict[str, Any]]
    more: bool


def _note_query(resource_type: str, params: list[tuple[str, str]]) -> None:
    record = g.get("audit")
    if record is not None:
        line = f"{resource_type}?{urlencode(params)}"
        record.query = f"{record.query}\n{line}" if record.query else line


def search(resource_type: str, params: list[tuple[str, str]]) -> Found:
    """``GET /fhir/<resource_type>?<params>`` for the signed-in user, first page only (``_count``
    is capped as the API caps it): the same scopes check, compiler, care-team filter and audit."""
    svc = services()
    if not any(name == "_total" for name, _value in params):
        params = [*params, ("_total", "none")]  # pages show rows, never the API's Bundle.total
    with svc.repo.reading() as conn:
        query = _compiled(conn, resource_type, params)
        result = run_search(conn, svc.repo, query, svc.settings.max_include_results)
        access.note_results(conn, result.matches + result.included)
    return Found([s.json() for s in result.matches], [s.json() for s in result.included], result.has_next)


def _compiled(conn: Connection, resource_type: str, params: list[tuple[str, str]]) -> SearchQuery:
    """The API's search for the signed-in user: scopes, compiler, care-team filter, query noted."""
    access.require(resource_type, "s")
    _note_query(resource_type, params)
    query = services().compiler.compile(
        resource_type, params, base_url=base_url(), strict=True, hop_guard=access.hop_guard
    )
    access.secure(query)
    return query


def index_values(
    resource_type: str, params: list[tuple[str, str]], columns: dict[str, ColumnElement[Any]]
) -> Projection:
    """The first page of the same search as ``search``, each match with a few index values instead
    of its JSON (``search/projection.project``): to rank many rows and read whole only those shown.
    The matches are audited as a search's are."""
    with services().repo.reading() as conn:
        query = _compiled(conn, resource_type, params)
        found = projection.project(conn, query, columns)
        access.note_results(conn, found.matches)
    return found


def tally(
    resource_type: str,
    by: tuple[str, str],
    targets: list[str],
    status: str,
    date: str | None = None,
) -> list[Tally]:
    """The ``resource_type`` resources she may search that point at ``targets`` through ``by``,
    counted per target and ``status`` code by the database (``search/projection.tally``) with the
    API's care-team filter; the patients whose data was counted are audited as for a count."""
    if not targets:
        return []
    with services().repo.reading() as conn:
        # The search of the type with no criterion (the access filter only): the tally binds the
        # targets itself, as one list (the audit notes the search as the API would spell it).
        query = _compiled(conn, resource_type, [])
        _note_query(resource_type, [(by[0], ",".join(f"{by[1]}/{t}" for t in targets))])
        found, patients = projection.tally(conn, query, by, targets, status, date)
    access.note_patients(patients)
    return found


def read(resource_type: str, res_id: str) -> dict[str, Any]:
    """``GET /fhir/<resource_type>/<res_id>`` for the signed-in user (404, 410, 403 as the API)."""
    access.require(resource_type, "r")
    stored, reach = access.read_current(resource_type, res_id)
    if stored is None or stored.deleted:
        raise FhirError(Category.NOT_FOUND, f"{resource_type}/{res_id} is not known")
    access.check_reach(stored, reach)
    return stored.json()


def update(resource_type: str, res_id: str, body: dict[str, Any], version: str) -> Stored:
    """``PUT /fhir/<resource_type>/<res_id>`` with ``If-Match: W/"<version>"``: the guard, the offers'
    accept rule and dispatch's first-to-accept judge it as they judge the API's update."""
    if version_number(version) is None:
        raise FhirError(Category.INVALID, "The form's version is not a version number")
    result = writes.update(services(), access.principal(), resource_type, res_id, body, f'W/"{version}"')
    assert result.stored is not None
    return result.stored


def my_refs() -> list[str]:
    """The references that stand for the signed-in practitioner now (herself, her roles and
    organizations), as the care-team rule reckons them (``policy.actor_refs``); once per request."""
    cached: list[str] | None = g.get("page_refs")
    if cached is None:
        who = access.principal()
        assert who.practitioner_id is not None
        with services().repo.engine.connect() as conn:
            cached = g.page_refs = policy.actor_refs(conn, who.practitioner_id, now_us())
    return cached


def coordinated(refs: list[str], patients: set[str], now: int, dispatch: DispatchSettings) -> set[str]:
    """Of ``patients``, those she coordinates (the rule that lets a coordinator give a Task)."""
    if not patients:
        return set()
    with services().repo.engine.connect() as conn:
        return policy.coordinated_patients(
            conn,
            refs,
            patients,
            now,
            coordinator=dispatch.coordinator,
            coordinator_role=dispatch.coordinator_role,
        )


def practitioner_name() -> str | None:
    """The signed-in practitioner's name as her Practitioner resource gives it."""
    who = access.principal()
    return service().practitioner_name(who.practitioner_id) if who.practitioner_id else None
