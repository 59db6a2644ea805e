"""Clients, users, codes and tokens as authlib sees them (its ClientMixin/TokenMixin hooks)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin, TokenMixin

from auth import scopes as smart
from auth.secrets import same_digest

PRIVATE_KEY_JWT = "private_key_jwt"
CLIENT_SECRET_BASIC = "client_secret_basic"  # noqa: S105 - a method name, not a secret
NONE = "none"
AUTH_METHODS = (CLIENT_SECRET_BASIC, PRIVATE_KEY_JWT, NONE)


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    name: str
    auth_method: str
    secret_hash: str | None
    scope: str
    redirect_uris: list[str]
    jwks: str | None
    jwks_uri: str | None
    revoked: bool = False

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        return " ".join(smart.granted(smart.split(scope), smart.split(self.scope)))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # RFC 6749 3.1.2.3 / OAuth 2.0 Security BCP 4.1.3: exact string comparison, no prefix match.
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return same_digest(self.secret_hash, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if method == "client_assertion_jwt":
            method = PRIVATE_KEY_JWT
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and bool(self.redirect_uris)

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type == "client_credentials":
            # SMART Backend Services: confidential clients only.
            return self.auth_method != NONE
        if grant_type in {"authorization_code", "refresh_token"}:
            return bool(self.redirect_uris)
        return False

    @property
    def confidential(self) -> bool:
        return self.auth_method != NONE


@dataclass
class User:
    username: str
    practitioner_id: str
    rpps: str
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_user_id(self) -> str:
        return self.username


@dataclass
class AuthorizationCode(AuthorizationCodeMixin):  # type: ignore[misc]
    code_hash: str
    client_id: str
    username: str
    redirect_uri: str
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None
    aud: str | None
    patient: str | None
    auth_time: int
    expires_at: int

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> str | None:
        return None

    def get_amr(self) -> list[str] | None:
        return ["pwd"]


@dataclass
class Token(TokenMixin):  # type: ignore[misc]
    token_hash: str
    jti: str
    family: str
    client_id: str
    username: str | None
    practitioner_id: str | None
    scope: str
    patient: str | None
    aud: str | None
    issued_at: int
    expires_at: int
    refresh_hash: str | None
    refresh_expires_at: int | None
    refresh_used: bool
    revoked: bool

    def check_client(self, client: Client) -> bool:
        return self.client_id == client.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_at - self.issued_at

    def is_expired(self) -> bool:
        return self.expires_at <= int(time.time())

    def is_refresh_expired(self) -> bool:
        return self.refresh_expires_at is None or self.refresh_expires_at <= int(time.time())

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> str | None:
        return self.username

    def get_client(self) -> str:
        return self.client_id
