"""What a plan is built from, read from the store: the subject, encounter, care circle, definitions."""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from coordination_api.coordination.protocols.model import (
    ApplyParameters,
    Context,
    Member,
    parse_instant,
)
from coordination_api.core.services import Services
from coordination_api.core.writes import find_matches
from coordination_api.errors import Category, FhirError
from coordination_api.storage.engine import placeholder
from coordination_api.storage.repository import Repository, Stored
from fhir_profiles.fhirpath_safety import ExpressionLimits

_REF = re.compile(r"^[A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
_MAX_READ = 200


def _check_reference(value: str | None, name: str, types: tuple[str, ...]) -> None:
    if value is None:
        return
    if not _REF.match(value) or value.split("/", 1)[0] not in types:
        raise FhirError(
            Category.INVALID,
            f"Parameter '{name}' must be a reference {' or '.join(t + '/[id]' for t in types)}",
            expression=f"Parameters.parameter.where(name='{name}')",
        )


def _current(conn: Connection, svc: Services, reference: str) -> Stored | None:
    resource_type, res_id = reference.split("/", 1)
    stored = svc.repo.current(conn, resource_type, res_id)
    return None if stored is None or stored.deleted else stored


def covers(period: Any, moment: datetime) -> bool:
    if not isinstance(period, dict):
        return True
    start, end = parse_instant(period.get("start")), parse_instant(period.get("end"))
    return (start is None or start <= moment) and (end is None or moment <= end)


def _members(care_teams: list[dict[str, Any]], now: datetime) -> list[Member]:
    out = []
    for team in care_teams:
        for participant in team.get("participant") or []:
            member = (participant.get("member") or {}).get("reference")
            if not isinstance(member, str) or not covers(participant.get("period"), now):
                continue
            roles = frozenset(
                (str(c.get("system")), str(c.get("code")))
                for role in participant.get("role") or []
                for c in role.get("coding") or []
            )
            out.append(Member(roles, member))
    return out


def _search(
    conn: Connection, svc: Services, resource_type: str, params: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Server-side lookups (the care circle, definitions): not limited by the caller's reach."""
    return [s.json() for s in find_matches(conn, svc, resource_type, params, limit=_MAX_READ)]


def subject_stored(conn: Connection, svc: Services, params: ApplyParameters) -> Stored:
    """The subject Patient (a reference that names no Patient: 422)."""
    _check_reference(params.subject, "subject", ("Patient",))
    stored = _current(conn, svc, params.subject)
    if stored is None:
        raise FhirError(
            Category.UNPROCESSABLE,
            f"The subject {params.subject} is not known",
            expression="Parameters.parameter.where(name='subject')",
        )
    return stored


def load_context(conn: Connection, svc: Services, params: ApplyParameters) -> Context:
    """The patient, the encounter and the patient's active care circle."""
    _check_reference(params.encounter, "encounter", ("Encounter",))
    _check_reference(params.practitioner, "practitioner", ("Practitioner", "PractitionerRole"))
    _check_reference(params.organization, "organization", ("Organization",))
    patient = subject_stored(conn, svc, params).json()
    encounter = None
    if params.encounter is not None:
        stored = _current(conn, svc, params.encounter)
        encounter = stored.json() if stored is not None else None
        subject = ((encounter or {}).get("subject") or {}).get("reference")
        if encounter is None or subject != params.subject:
            raise FhirError(
                Category.UNPROCESSABLE,
                f"The encounter {params.encounter} is not known, or is not an encounter of the subject",
                expression="Parameters.parameter.where(name='encounter')",
            )
    now = datetime.now(UTC).replace(microsecond=0)
    trigger = parse_instant(((encounter or {}).get("period") or {}).get("end")) or now
    care_teams = [
        team
        for team in _search(conn, svc, "CareTeam", [("patient", params.subject), ("status", "active")])
        if covers(team.get("period"), now)
    ]

    def service_requests() -> list[dict[str, Any]]:
        return _search(conn, svc, "ServiceRequest", [("patient", params.subject), ("status", "active")])

    settings = svc.settings
    limits = ExpressionLimits(regex_timeout=settings.expression_regex_timeout)
    return Context(
        params,
        patient,
        encounter,
        trigger,
        now,
        care_teams,
        _members(care_teams, now),
        service_requests,
        limits=limits,
    )


def find_by_canonical(
    conn: Connection, svc: Services, resource_type: str, canonical: str
) -> dict[str, Any] | None:
    """The definition a canonical names (``url`` or ``url|version``); an active one first."""
    url, _, version = canonical.partition("|")
    cached = definitions(conn, svc, resource_type)
    if cached is None:
        params = [("url", url)] + ([("version", version)] if version else [])
        found = _search(conn, svc, resource_type, params)
    else:  # the same matches as the search: url exact (uri), version exact (token code)
        candidates = (stored.json() for stored in cached)
        found = [r for r in candidates if r.get("url") == url and version in ("", r.get("version"))]
    found.sort(key=lambda r: (r.get("status") != "active", str(r.get("version") or "")))
    return found[0] if found else None


# -- definitions cache ------------------------------------------------------------------------------
# A discharge starts every triggered protocol: it read all PlanDefinitions and searched each
# ActivityDefinition it names, in the discharge's write transaction (on SQLite, with the write lock
# held). Definitions change rarely: the current rows of a definition type are kept per process and
# reused while a stamp read in the caller's transaction (count, versions, pks, last update of that
# type's rows) is unchanged; any create, update or delete changes it (issue 21).

_CACHE_LIMIT = 2000  # beyond this many rows of a type, the search as before


@dataclass(frozen=True)
class _Definitions:
    stamp: tuple[Any, ...]
    rows: tuple[Stored, ...]


_DEFINITIONS: weakref.WeakKeyDictionary[Repository, dict[str, _Definitions]] = weakref.WeakKeyDictionary()
_STAMP_SQL = (
    "SELECT count(*), coalesce(sum(r.version), 0), coalesce(sum(r.pk), 0), coalesce(max(r.last_updated), 0),"
    " coalesce(sum((SELECT count(*) FROM idx_compartment c WHERE c.res_pk = r.pk)), 0)"
    " FROM resource r WHERE r.res_type = {m}"
)


def definitions(conn: Connection, svc: Services, resource_type: str) -> tuple[Stored, ...] | None:
    """The current (not deleted) rows of a definition type as the caller's transaction sees them, or
    None when they cannot be cached: too many, or one of them is in a patient's compartment (then
    what a caller may see of them depends on the caller: the search applies the access rule)."""
    mark = placeholder(conn.dialect.paramstyle)
    stamp = tuple(conn.exec_driver_sql(_STAMP_SQL.format(m=mark), (resource_type,)).one())
    count, compartments = int(stamp[0]), int(stamp[4])
    if count > _CACHE_LIMIT or compartments:
        return None
    per_type = _DEFINITIONS.setdefault(svc.repo, {})
    known = per_type.get(resource_type)
    if known is None or known.stamp != stamp:
        current = tuple(svc.repo.current_of_type(conn, resource_type))
        known = per_type[resource_type] = _Definitions(stamp, current)
    return known.rows


# -- timing ----------------------------------------------------------------------------------------
