"""Practitioners' accounts: a login and the Practitioner resource it acts as (fhirUser)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask
from sqlalchemy.exc import IntegrityError

from connectors.errors import ConnectorError
from fhir_profiles.french_identifiers import RPPS as RPPS_SYSTEM
from fhir_profiles.french_identifiers import check_rpps

log = logging.getLogger(__name__)


class AccountError(Exception):
    pass


def create_practitioner_user(
    app: Flask,
    username: str,
    rpps: str,
    password: str | None,
    family: str | None,
    given: str | None,
    *,
    notify: Callable[[str], None] | None = None,
) -> str:
    """Create (or reuse, by RPPS) the Practitioner, then the login; returns the Practitioner id.

    Without family and given names, a configured directory (Annuaire Santé) fills the names and
    qualifications; when it cannot answer the login is created all the same and ``notify`` hears why.
    """
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
    if family is None and given is None:
        practitioner = _from_directory(app, rpps, notify) or practitioner
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


def _from_directory(app: Flask, rpps: str, notify: Callable[[str], None] | None) -> dict[str, Any] | None:
    from coordination_api.directory import practitioner_details

    try:
        found = practitioner_details(app, rpps)
    except ConnectorError as exc:
        log.warning("directory look-up for a new account failed: %s", exc)
        if notify is not None:
            notify(f"the directory could not be asked ({exc}); the Practitioner has no name yet")
        return None
    pairs = {(i.get("system"), i.get("value")) for i in (found or {}).get("identifier") or []}
    return found if found is not None and (RPPS_SYSTEM, rpps) in pairs else None
