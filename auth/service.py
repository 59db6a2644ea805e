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
from auth.server import TokenPolicy, Urls, build_server
from auth.store import AuthStore


@dataclass(frozen=True)
class AuthConfig:
    tokens: TokenPolicy
    login_attempts_per_minute: int = 120
    login_failures_per_address: int = 30
    login_max_failures: int = 5
    login_lockout_seconds: int = 300


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
    ) -> None:
        self.engine = engine
        self.config = config
        self.urls = urls
        self.issuer = issuer
        self.store = AuthStore(engine)
        # Retired signing keys stay published while tokens they signed may still be presented.
        self.keys = KeyStore(engine, publish_retired_for=config.tokens.access_ttl + 3600)
        self.server: AuthorizationServer = build_server(self.store, self.keys, urls, config.tokens, issuer)
        self.patient_choices = patient_choices or (lambda _p: [])
        # Where the token lookup gets its DBAPI connection (the app shares the request's own).
        self.raw: Callable[[], AbstractContextManager[Any]] = self._pooled
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._token_sql = (
            "SELECT client_id, practitioner_id, username, scope, patient, jti, expires_at, revoked "
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
        client_id, practitioner_id, username, scope, patient, jti, expires_at, revoked = row
        if revoked:
            raise UnauthenticatedError("The access token has been revoked", "invalid_token")
        if expires_at <= time.time():
            raise UnauthenticatedError("The access token has expired", "invalid_token")
        return Principal(
            client_id=client_id,
            scopes=smart.ScopeSet.parse(scope),
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
