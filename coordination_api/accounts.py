"""Practitioners' accounts: a login and the Practitioner resource it acts as (fhirUser)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy.exc import IntegrityError

from fhir_profiles.french_identifiers import RPPS as RPPS_SYSTEM
from fhir_profiles.french_identifiers import check_rpps


class AccountError(Exception):
    pass


def create_practitioner_user(
    app: Flask, username: str, rpps: str, password: str | None, family: str | None, given: str | None
) -> str:
    """Create (or reuse, by RPPS) the Practitioner, then the login; returns the Practitioner id."""
    if not username or len(username) > 150 or not username.isprintable():
        raise AccountError("username must be 1 to 150 printable characters")
    problem = check_rpps(rpps)
    if problem:
        raise AccountError(problem)
    if password is not None and len(password) < 12:
        raise AccountError("the password must have at least 12 characters")
    auth = app.extensions["auth"]
    if auth.store.user(username) is not None:
        raise AccountError(f"user {username} exists already")
    if auth.store.user_by_rpps(rpps) is not None:
        raise AccountError(f"RPPS {rpps} has a login already")
    svc = app.extensions["coordination"]
    practitioner: dict[str, Any] = {
        "resourceType": "Practitioner",
        "identifier": [{"system": RPPS_SYSTEM, "value": rpps}],
        "active": True,
    }
    name: dict[str, Any] = {}
    if family:
        name["family"] = family
    if given:
        name["given"] = given.split()
    if name:
        practitioner["name"] = [name]
    from coordination_api.fhir.write_common import find_matches

    with svc.repo.writing() as conn:
        found = find_matches(conn, svc, "Practitioner", [("identifier", f"{RPPS_SYSTEM}|{rpps}")])
        practitioner_id = (
            found[0].res_id if found else svc.repo.create(conn, "Practitioner", practitioner).res_id
        )
    try:
        auth.store.create_user(username, password, practitioner_id, rpps)
    except IntegrityError as exc:
        raise AccountError(f"user {username} or RPPS {rpps} exists already") from exc
    return str(practitioner_id)
