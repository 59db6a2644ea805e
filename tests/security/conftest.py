"""Helpers for the security properties: hypothesis profiles, cheap user tokens, a clean database."""

from __future__ import annotations

import os
import time
import uuid

from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings

from auth.schema import auth_metadata
from auth.secrets import digest, random_token
from coordination_api.storage.schema import metadata
from tests.conftest import Fhir

# "ci": a fixed seed and few examples for `make test`; "long": HYPOTHESIS_PROFILE=long for a deep run.
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "long",
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    PROFILE = "ci"

# Tokens and signing material survive a reset: a world is rebuilt under the same bearer tokens.
_KEEP = {"signing_key", "server_secret", "oauth_client", "oauth_token", "oauth_user"}


def reset(app: Flask) -> None:
    """Empty every FHIR and derived-access table (one hypothesis example = one fresh world)."""
    app.extensions["audit_writer"].flush()
    engine = app.extensions["coordination"].repo.engine
    with engine.begin() as conn:
        for table in [*reversed(metadata.sorted_tables), *reversed(auth_metadata.sorted_tables)]:
            if table.name not in _KEEP:
                conn.execute(table.delete())


def mint_token(app: Flask, scope: str, practitioner_id: str | None = None) -> str:
    """An opaque access token saved through the real auth store (what /auth/token saves after a login:
    the bearer lookup reads only this row), without the cost of a browser login per practitioner."""
    token = random_token()
    now = int(time.time())
    app.extensions["auth"].store.save_token(
        {
            "token_hash": digest(token),
            "jti": uuid.uuid4().hex,
            "family": random_token(16),
            "client_id": "security-tests",
            "username": f"user-{practitioner_id}" if practitioner_id else None,
            "practitioner_id": practitioner_id,
            "scope": scope,
            "patient": None,
            "aud": "http://localhost/fhir",  # the test client's base (loopback: accepted)
            "issued_at": now,
            "expires_at": now + 3600,
            "refresh_hash": None,
            "refresh_expires_at": None,
        }
    )
    return token


def as_bearer(app: Flask, token: str) -> Fhir:
    client: FlaskClient = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return Fhir(client)
