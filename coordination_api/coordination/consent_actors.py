"""A Consent's deny actors given by identifier are resolved to the professional they name, or refused.

The opposition (CSP L.1110-4 III) is enforced from ``Consent.provision.actor.reference`` references
(auth.policy.consent_rows). An actor given only by identifier (an RPPS, a FINESS) would be stored and
ignored: the patient's objection would fail open. At every door (REST, transaction, import) such an
actor is resolved here, before the Consent is stored, to the one Practitioner, PractitionerRole or
Organization carrying that identifier (the reference is added, the identifier kept); none or several:
422, nothing stored. Only those directory types are looked up (any other ``reference.type``: 422 as a
literal reference of it), so the answer tells nothing about patient data out of the caller's reach.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from auth.policy import ACTOR_TYPES
from coordination_api.errors import Category, FhirError
from coordination_api.storage.schema import idx_token, resource
from fhir_profiles.french_identifiers import ID_NAT_PS, RPPS

_PERSON_SYSTEMS = frozenset({RPPS, ID_NAT_PS})

# Actors a deny can name and the rule enforces (auth.policy.ACTOR_TYPES), or that the rule never grants
# anything to (a deny naming them changes nothing, and is no fail-open).
_ENFORCEABLE = re.compile(
    r"^(Practitioner|PractitionerRole|Organization|RelatedPerson|Patient)/[A-Za-z0-9\-.]{1,64}$"
)
_PATIENT = re.compile(r"^Patient/[A-Za-z0-9\-.]{1,64}$")


def resolve(conn: Connection, res_type: str, res_id: str | None, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with each identifier-only actor of its provisions resolved (Consent only); an actor or
    a patient in any other form than the rule reads is refused (422), never stored and ignored."""
    if res_type != "Consent":
        return body
    patient = body.get("patient")
    if isinstance(patient, dict) and not _PATIENT.match(str(patient.get("reference", ""))):
        raise FhirError(
            Category.UNPROCESSABLE,
            "Consent.patient must reference a Patient of this server (Patient/<id>): the objection "
            "would not be enforced otherwise",
        )
    if isinstance(body.get("provision"), dict):
        _walk(conn, body["provision"], "provision")
    return body


def _walk(conn: Connection, provision: dict[str, Any], path: str) -> None:
    for i, actor in enumerate(provision.get("actor") or []):
        if isinstance(actor, dict) and isinstance(actor.get("reference"), dict):
            _resolve_actor(conn, actor["reference"], f"{path}.actor[{i}].reference")
    for i, child in enumerate(provision.get("provision") or []):
        if isinstance(child, dict):
            _walk(conn, child, f"{path}.provision[{i}]")


def _not_enforceable(path: str) -> FhirError:
    return FhirError(
        Category.UNPROCESSABLE,
        f"Consent.{path} must be a Practitioner, PractitionerRole, Organization, RelatedPerson or "
        "Patient of this server (Type/<id>): an objection to anyone else cannot be enforced",
    )


def _resolve_actor(conn: Connection, reference: dict[str, Any], path: str) -> None:
    if isinstance(reference.get("reference"), str):
        if not _ENFORCEABLE.match(reference["reference"]):
            raise _not_enforceable(path)
        return  # a literal local reference: auth.policy reads it as it is
    identifier = reference.get("identifier")
    if not isinstance(identifier, dict) or not identifier.get("value"):
        raise FhirError(
            Category.UNPROCESSABLE,
            f"Consent.{path} names no one: give a reference or an identifier (a Consent actor "
            "that cannot be resolved would leave the patient's objection unenforced)",
        )
    # Only directory data is resolved (ACTOR_TYPES, readable by every professional): this hook runs
    # before the write is judged, so a lookup of a patient's or any clinical resource's identifier
    # would tell the caller whether it exists (review 20 F2). Other types: by literal reference.
    wanted = reference.get("type")
    if wanted is not None and wanted not in ACTOR_TYPES:
        raise _not_enforceable(path)
    types = [wanted] if isinstance(wanted, str) else list(ACTOR_TYPES)
    t = idx_token
    stmt = (
        select(resource.c.res_type, resource.c.res_id)
        .join(t, t.c.res_pk == resource.c.pk)
        .where(
            t.c.res_type.in_(types),
            t.c.param == "identifier",
            t.c.code == str(identifier["value"]),
            resource.c.deleted.is_(False),
        )
        .distinct()
        .limit(2)
    )
    if identifier.get("system"):
        stmt = stmt.where(t.c.system == str(identifier["system"]))
    found = conn.execute(stmt).all()
    if len(found) != 1:
        who = f"{identifier.get('system') or ''}|{identifier['value']}"
        raise FhirError(
            Category.UNPROCESSABLE,
            f"Consent.{path}: the identifier {who} names "
            + ("no known professional or organization" if not found else "several resources")
            + "; the objection cannot be enforced, so the Consent is refused",
        )
    reference["reference"] = f"{found[0][0]}/{found[0][1]}"


def unique_rpps(conn: Connection, res_type: str, res_id: str | None, body: dict[str, Any]) -> dict[str, Any]:
    """One Practitioner per RPPS (409 otherwise): an RPPS names one person, whom a login (Pro Santé
    Connect) and a patient's objection by identifier must find, never a twin a practitioner made."""
    if res_type != "Practitioner":
        return body
    t = idx_token
    for identifier in body.get("identifier") or []:
        if not isinstance(identifier, dict) or identifier.get("system") not in _PERSON_SYSTEMS:
            continue
        value = str(identifier.get("value") or "")
        twin = conn.execute(
            select(resource.c.res_id)
            .join(t, t.c.res_pk == resource.c.pk)
            .where(
                t.c.res_type == "Practitioner",
                t.c.param == "identifier",
                t.c.system == identifier["system"],
                t.c.code == value,
                resource.c.deleted.is_(False),
                resource.c.res_id != (res_id or ""),
            )
            .limit(1)
        ).scalar()
        if twin is not None:
            raise FhirError(
                Category.CONFLICT,
                f"Practitioner/{twin} already carries the identifier {identifier['system']}|{value}: "
                "one Practitioner per professional",
                expression="Practitioner.identifier",
            )
    return body
