"""The security services of one application, built once from plain settings (no Flask app here)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from sqlalchemy import Engine

from auth import scopes as smart
from auth.keys import KeyStore
from auth.models import Token
from auth.policy import Principal
from auth.secrets import digest
from auth.server import TokenPolicy, Urls, build_server, patient_scoped
from auth.store import AuthStore, Backoff


@dataclass(frozen=True)
class AuthConfig:
    """Login throttling (numbers documented in docs/security.md section 7):

    - per address, counted before any check: ``login_attempts_per_minute`` attempts a minute and
      ``login_failures_per_address`` failures in 10 minutes, then 429;
    - per (username, address): after ``login_max_failures`` consecutive failures the username is
      locked from that address for ``login_lockout_seconds``, doubled at each further failure, at
      most ``login_lockout_max_seconds``;
    - per username from every address: after ``login_account_max_failures`` the same backoff, at
      most ``login_account_lockout_max_seconds`` (short: this lock is the one a distributed
      attacker could inflict on a victim; the victim can still log in with Pro Santé Connect).
    Usernames are counted whether or not they exist; counters are forgotten after a day without
    failures and reset by a successful login. ``jwks_refetch_seconds``: a client's JWKS URL is
    fetched again for an unknown ``kid`` at most once in this many seconds."""

    tokens: TokenPolicy
    login_attempts_per_minute: int = 120
    login_failures_per_address: int = 30
    login_max_failures: int = 5
    login_lockout_seconds: int = 60
    login_lockout_max_seconds: int = 3600
    login_account_max_failures: int = 20
    login_account_lockout_max_seconds: int = 900
    jwks_refetch_seconds: int = 300

    def backoff(self) -> tuple[Backoff, Backoff]:
        """(per username and address, per username)."""
        return (
            Backoff(self.login_max_failures, self.login_lockout_seconds, self.login_lockout_max_seconds),
            Backoff(
                self.login_account_max_failures,
                self.login_lockout_seconds,
                self.login_account_lockout_max_seconds,
            ),
        )


class UnauthenticatedError(Exception):
    """No usable bearer token (RFC 6750 3.1: 401 with WWW-Authenticate)."""

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


class AuthService:
    def __init__(
        self,
        engine: Engine,
        config: AuthConfig,
        urls: Urls,
        issuer: Callable[[], str],
        patient_choices: Callable[[str], list[tuple[str, str]]] | None = None,
        practitioner_name: Callable[[str], str | None] | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.urls = urls
        self.issuer = issuer
        self.store = AuthStore(engine)
        # Retired signing keys stay published while tokens they signed may still be presented.
        self.keys = KeyStore(engine, publish_retired_for=config.tokens.access_ttl + 3600)
        self.server: AuthorizationServer = build_server(
            self.store, self.keys, urls, config.tokens, issuer, config.jwks_refetch_seconds
        )
        self.patient_choices = patient_choices or (lambda _p: [])
        # The name on a Practitioner resource (shown on the consent page), None when it has none.
        self.practitioner_name = practitioner_name or (lambda _p: None)
        # Where the token lookup gets its DBAPI connection (the app shares the request's own).
        self.raw: Callable[[], AbstractContextManager[Any]] = self._pooled
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._token_sql = (
            "SELECT client_id, practitioner_id, username, scope, patient, jti, expires_at, revoked, aud "
            f"FROM oauth_token WHERE token_hash = {mark}"
        )

    def principal(self, authorization: str | None) -> Principal:
        """The caller of a bearer-token request (RFC 6750 2.1), looked up on every request so that a
        revoked token stops working at once."""
        if not authorization:
            raise UnauthenticatedError("A Bearer token is required")
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise UnauthenticatedError("The Authorization header must be 'Bearer <token>'", "invalid_request")
        row = self._lookup(digest(value))
        if row is None:
            raise UnauthenticatedError("The access token is not known", "invalid_token")
        client_id, practitioner_id, username, scope, patient, jti, expires_at, revoked, aud = row
        if revoked:
            raise UnauthenticatedError("The access token has been revoked", "invalid_token")
        if expires_at <= time.time():
            raise UnauthenticatedError("The access token has expired", "invalid_token")
        # RFC 9068 4 / RFC 8707: a token minted for another resource server (another base) is refused.
        if (aud or "").rstrip("/") not in {a.rstrip("/") for a in self.urls.audiences()}:
            raise UnauthenticatedError("The access token is not meant for this server (aud)", "invalid_token")
        return Principal(
            client_id=client_id,
            scopes=smart.ScopeSet.parse(patient_scoped(scope, patient)),
            practitioner_id=practitioner_id,
            username=username,
            patient_id=patient,
            token_jti=jti,
        )

    @contextmanager
    def _pooled(self) -> Iterator[Any]:
        connection = self.engine.raw_connection()
        try:
            yield connection
        finally:
            connection.close()

    def _lookup(self, token_hash: str) -> tuple[Any, ...] | None:
        # The hot path of every API call: one pooled DBAPI statement, no statement building.
        with self.raw() as connection:
            cursor = connection.cursor()
            cursor.execute(self._token_sql, (token_hash,))
            row = cursor.fetchone()
            cursor.close()
        return tuple(row) if row is not None else None

    def token(self, access_token: str) -> Token | None:
        return self.store.access_token(access_token)
