"""Practitioners' accounts: a login and the Practitioner resource it acts as (fhirUser)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from auth.schema import login_failure, oauth_token, oauth_user
from auth.secrets import hash_password
from connectors.errors import ConnectorError
from coordination_api.core.writes import find_matches
from coordination_api.integrations.annuaire_sync import practitioner_details
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
    with svc.repo.writing() as conn:
        found = find_matches(conn, svc, "Practitioner", [("identifier", f"{RPPS_SYSTEM}|{rpps}")])
        practitioner_id = (
            found[0].res_id if found else svc.repo.create(conn, "Practitioner", practitioner).res_id
        )
    if not found and not practitioner.get("name") and notify is not None:
        directory = app.extensions.get("directory")
        why = (
            "the directory gave none"
            if directory is not None and directory.configured
            else "no directory is configured (COORDINATION_ANNUAIRE_BASE_URL)"
        )
        notify(
            f"Practitioner/{practitioner_id} was created without a name: no --family/--given and {why}; "
            "give it one with a FHIR update"
        )
    try:
        auth.store.create_user(username, password, practitioner_id, rpps)
    except IntegrityError as exc:
        raise AccountError(f"user {username} or RPPS {rpps} exists already") from exc
    return str(practitioner_id)


def _from_directory(app: Flask, rpps: str, notify: Callable[[str], None] | None) -> dict[str, Any] | None:
    try:
        found = practitioner_details(app, rpps)
    except ConnectorError as exc:
        log.warning("directory look-up for a new account failed: %s", exc)
        if notify is not None:
            notify(f"the directory could not be asked ({exc}); the Practitioner has no name yet")
        return None
    pairs = {(i.get("system"), i.get("value")) for i in (found or {}).get("identifier") or []}
    return found if found is not None and (RPPS_SYSTEM, rpps) in pairs else None


# -- operators' commands (`coordination users list|disable|enable|passwd`) -------------------------


def list_users(app: Flask) -> list[dict[str, Any]]:
    """Every login, oldest first (never the password hash: only whether there is one)."""
    u = oauth_user
    with app.extensions["auth"].store.engine.connect() as conn:
        rows = conn.execute(
            select(
                u.c.username, u.c.rpps, u.c.practitioner_id, u.c.disabled, u.c.password_hash.is_not(None)
            ).order_by(u.c.created_at, u.c.username)
        ).all()
    return [
        {
            "username": r[0],
            "rpps": r[1],
            "practitioner_id": r[2],
            "disabled": bool(r[3]),
            "password": bool(r[4]),
        }
        for r in rows
    ]


def set_disabled(app: Flask, username: str, disabled: bool) -> int:
    """Disable (or enable) a login. Disabling also revokes every token issued to it, access and
    refresh alike (each request looks its token up: they stop working at once); returns how many.
    A disabled login cannot sign in (password or Pro Santé Connect) nor refresh (auth/store.py)."""
    u, t = oauth_user, oauth_token
    with app.extensions["auth"].store.engine.begin() as conn:
        found = conn.execute(update(u).where(u.c.username == username).values(disabled=disabled)).rowcount
        if not found:
            raise AccountError(f"no user {username}")
        if not disabled:
            return 0
        return int(
            conn.execute(
                update(t).where(t.c.username == username, t.c.revoked.is_(False)).values(revoked=True)
            ).rowcount
        )


def set_password(app: Flask, username: str, password: str) -> None:
    """A new password (at least 12 characters); the login's failure counters are cleared and the
    tokens issued with the old one revoked (a password is changed when it may have leaked)."""
    if len(password) < 12:
        raise AccountError("the password must have at least 12 characters")
    u, t = oauth_user, oauth_token
    with app.extensions["auth"].store.engine.begin() as conn:
        found = conn.execute(
            update(u)
            .where(u.c.username == username)
            .values(password_hash=hash_password(password), failed_logins=0, locked_until=0)
        ).rowcount
        if not found:
            raise AccountError(f"no user {username}")
        conn.execute(delete(login_failure).where(login_failure.c.username == username))
        conn.execute(update(t).where(t.c.username == username, t.c.revoked.is_(False)).values(revoked=True))
