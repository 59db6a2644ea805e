"""The authorization server, assembled from authlib's spec modules (RFC 6749, 7523, 7636, 7662, 7009).

Only the storage hooks and SMART rules are ours; the protocol logic is authlib's.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import has_request_context
from flask import request as flask_request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from auth import messages
from auth import scopes as smart
from auth.keys import ALG, KeyStore
from auth.models import CLIENT_SECRET_BASIC, NONE, PRIVATE_KEY_JWT, AuthorizationCode, Client, Token, User
from auth.secrets import digest, random_token
from auth.store import AuthStore
from connectors import http
from connectors.errors import ConnectorError, Failure

# SMART Backend Services (client-confidential-asymmetric): RS384 and ES384 MUST be supported. Only
# asymmetric algorithms: "none" and HMAC are refused, which also defeats RS/HS key confusion.
ASSERTION_ALGORITHMS = ["RS384", "ES384", "RS256", "ES256", "RS512", "ES512", "PS256", "PS384", "PS512"]
JWKS_SERVICE = "client-jwks"  # names the fetch in ConnectorError (never shown to the client)
MAX_ASSERTION_LIFETIME = 300  # SMART: exp no more than five minutes in the future
REFRESH_SCOPES = ("offline_access", "online_access")


def patient_scoped(scope: str | None, patient: str | None) -> str:
    """``patient/`` scopes only with a patient in context: without one they are dropped (SMART App
    Launch 2, scopes-and-launch-context.html: patient-specific scopes are about "the patient in
    context"; the server may grant fewer scopes than asked, RFC 6749 3.3). The authorize step drops
    them already; this keeps any token that would carry them from reaching every patient."""
    kept = [
        s
        for s in smart.split(scope)
        if patient or (p := smart.parse_resource_scope(s)) is None or p.context != "patient"
    ]
    return " ".join(kept)


@dataclass(frozen=True)
class TokenPolicy:
    access_ttl: int = 300
    code_ttl: int = 60
    offline_ttl: int = 90 * 24 * 3600
    online_ttl: int = 12 * 3600


@dataclass(frozen=True)
class Urls:
    """Where this server is reached. ``fhir_base`` (links, discovery) may follow the request's Host;
    the audiences never do: ``audiences`` (access-token ``aud``, the authorize ``aud`` parameter) and
    ``token`` (client-assertion ``aud``) are the configured public base, or the reached base only
    when the Host is a loopback name or address (local development)."""

    fhir_base: Callable[[], list[str]]  # the configured public base first, else the base as reached
    token: Callable[[], list[str]]
    audiences: Callable[[], list[str]]


class JwksCache:
    """Client key sets from ``--jwks-url``: fetched through connectors/http.py and cached ``ttl`` seconds. An
    assertion with an unknown ``kid`` makes us fetch again (the client rotated its keys), but at most
    once in ``refetch_interval`` seconds per URL: in between the answer "no such key" is cached, so
    forged assertions cannot make us fetch on every request. A failed fetch is not retried for a
    tenth of that interval. One fetch at a time per URL."""

    def __init__(self, ttl: int = 300, timeout: float = 5.0, refetch_interval: int = 300) -> None:
        self.ttl = ttl
        self.timeout = timeout
        self.refetch_interval = refetch_interval
        # url -> (expires, fetched at, key set); url -> time of the last failed fetch
        self._cache: dict[str, tuple[float, float, dict[str, Any]]] = {}
        self._failed: dict[str, float] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _usable(self, url: str, kid: str | None, now: float) -> dict[str, Any] | None:
        cached = self._cache.get(url)
        if cached is None:
            return None
        expires, fetched, data = cached
        known = kid is None or any(k.get("kid") == kid for k in data.get("keys", []) if isinstance(k, dict))
        if now < expires and (known or now - fetched < self.refetch_interval):
            return data
        return None

    def get(self, url: str, kid: str | None) -> dict[str, Any]:
        found = self._usable(url, kid, time.monotonic())
        if found is not None:
            return found
        with self._guard:
            lock = self._locks.setdefault(url, threading.Lock())
        with lock:
            now = time.monotonic()
            found = self._usable(url, kid, now)  # fetched by another thread meanwhile
            if found is not None:
                return found
            cached = self._cache.get(url)
            if now - self._failed.get(url, -1e18) < self.refetch_interval / 10:
                if cached is not None:
                    return cached[2]
                raise InvalidClientError(
                    description=messages.ASSERTION + "the client's JWKS URL could not be fetched"
                )
            try:
                data = self._fetch(url)
            except ConnectorError as exc:
                self._failed[url] = now
                if cached is not None:
                    return cached[2]
                raise InvalidClientError(
                    description=messages.ASSERTION + "the client's JWKS URL could not be fetched"
                ) from exc
            if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
                self._failed[url] = now
                raise InvalidClientError(
                    description=messages.ASSERTION + "the client's JWKS URL did not return a JWK Set"
                )
            self._cache[url] = (now + self.ttl, now, data)
            return data

    def _fetch(self, url: str) -> Any:
        """One GET through connectors/http.py: not retried (a token request waits on it), not
        redirected (the registered URL is the one trusted), a fresh session (requests sessions are
        not shared between threads)."""
        settings = http.HttpSettings(connect_timeout=self.timeout, read_timeout=self.timeout, retries=0)
        with http.session(settings, {"Accept": "application/json"}) as s:
            response = http.call(JWKS_SERVICE, s, settings, "GET", url)
            try:
                if not 200 <= response.status_code < 300:
                    raise ConnectorError(
                        JWKS_SERVICE, Failure.BAD_ANSWER, f"answered HTTP {response.status_code}"
                    )
                return http.json_body(JWKS_SERVICE, response)
            finally:
                response.close()


class PrivateKeyJwt(JWTBearerClientAssertion):  # type: ignore[misc]
    """private_key_jwt client authentication (RFC 7523 2.2 / 3, SMART Backend Services)."""

    CLIENT_AUTH_METHOD = PRIVATE_KEY_JWT

    def __init__(self, store: AuthStore, urls: Urls, jwks_cache: JwksCache) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self.store = store
        self.urls = urls
        self.jwks_cache = jwks_cache
        self._kid: str | None = None

    def get_audiences(self) -> list[str]:
        # RFC 7523 3 item 3: our token endpoint's configured public URL, never the Host header.
        audiences = self.urls.token()
        if not audiences:
            raise InvalidClientError(
                description="this server's public base URL is not configured (COORDINATION_PUBLIC_BASE_URL)"
            )
        return audiences

    def extract_assertion(self, assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
        headers, claims = super().extract_assertion(assertion)
        self._kid = headers.get("kid") if isinstance(headers.get("kid"), str) else None
        if headers.get("alg") not in ASSERTION_ALGORITHMS:
            raise InvalidClientError(
                description=messages.ASSERTION
                + f"alg {headers.get('alg')!r} is not accepted (use RS384 or ES384)"
            )
        return headers, claims

    def resolve_client_public_key(self, client: Client) -> KeySet:
        if client.jwks:
            data = json.loads(client.jwks)
        elif client.jwks_uri:
            data = self.jwks_cache.get(client.jwks_uri, self._kid)
        else:
            raise InvalidClientError(
                description=messages.ASSERTION + "the client has no registered public keys"
            )
        public = {
            "keys": [k for k in data.get("keys", []) if isinstance(k, dict) and k.get("kty") in {"RSA", "EC"}]
        }
        try:
            return KeySet.import_key_set(public)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError) as exc:
            raise InvalidClientError(
                description=messages.ASSERTION + "the client's registered public keys are not usable"
            ) from exc

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict[str, Any]:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGORITHMS)
        except (JoseError, ValueError) as exc:
            raise InvalidClientError(
                description=messages.ASSERTION
                + "the signature does not match the client's registered keys (check kid and alg)"
            ) from exc
        self.verify_claims(token.claims)
        return dict(token.claims)

    def verify_claims(self, claims: Any) -> None:
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp > time.time() + MAX_ASSERTION_LIFETIME + self.leeway:
            raise InvalidClientError(
                description=messages.ASSERTION + "'exp' is missing or more than five minutes ahead"
            )
        super().verify_claims(claims)

    def validate_jti(self, claims: dict[str, Any], jti: Any) -> bool:
        if not isinstance(jti, str) or not jti:
            return False
        return self.store.claim_assertion_jti(str(claims["sub"]), jti, int(claims["exp"]))


class AccessTokens(JWTBearerTokenGenerator):  # type: ignore[misc]
    """RFC 9068 JWT access tokens signed with our key; refresh tokens only for offline/online_access."""

    def __init__(self, keys: KeyStore, urls: Urls, policy: TokenPolicy, issuer: Callable[[], str]) -> None:
        super().__init__(issuer="", alg=ALG, refresh_token_generator=lambda **_kw: random_token(40))
        self.keys = keys
        self.urls = urls
        self.policy = policy
        self.issuer_of = issuer

    def get_jwks(self) -> Any:
        return self.keys.signing_key()

    def get_audiences(self, client: Client, user: User | None, scope: str) -> str:
        # RFC 9068 2.2: aud is the resource server (our configured FHIR base), checked on every call.
        audiences = self.urls.audiences()
        if not audiences:
            raise InvalidRequestError(
                "This server's public base URL is not configured (COORDINATION_PUBLIC_BASE_URL)"
            )
        return audiences[0]

    def _get_expires_in(self, client: Client, grant_type: str) -> int:
        return self.policy.access_ttl

    def get_extra_claims(
        self, client: Client, grant_type: str, user: User | None, scope: str
    ) -> dict[str, Any]:
        if user is not None:
            return {"fhirUser": f"{self.urls.fhir_base()[0]}/Practitioner/{user.practitioner_id}"}
        return {}

    def generate(
        self,
        grant_type: str,
        client: Client,
        user: User | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        self.issuer = self.issuer_of()
        wants_refresh = any(s in smart.split(scope) for s in REFRESH_SCOPES)
        token: dict[str, Any] = super().generate(
            grant_type,
            client,
            user=user,
            scope=scope,
            expires_in=self.policy.access_ttl,
            include_refresh_token=include_refresh_token and wants_refresh and user is not None,
        )
        return token


def _claims(access_token: str) -> dict[str, Any]:
    """Claims of a token we just signed (no need to verify our own signature)."""
    payload = access_token.split(".")[1]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return data


class ClientCredentials(grants.ClientCredentialsGrant):  # type: ignore[misc]
    """SMART Backend Services: system/ scopes only, never more than the client was registered for."""

    TOKEN_ENDPOINT_AUTH_METHODS = [CLIENT_SECRET_BASIC, PRIVATE_KEY_JWT]

    def validate_requested_scope(self) -> None:
        client: Client = self.request.client
        requested = smart.split(self.request.payload.scope) or smart.split(client.scope)
        system = [
            s for s in requested if (p := smart.parse_resource_scope(s)) is not None and p.context == "system"
        ]
        allowed = smart.granted(system, smart.split(client.scope))
        if not allowed:
            raise InvalidScopeError(description="None of the requested scopes may be granted to this client")
        self.granted_scope = " ".join(allowed)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        token = self.generate_token(scope=self.granted_scope, include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class S256Only(CodeChallenge):  # type: ignore[misc]
    """PKCE (RFC 7636) is mandatory and only S256 is accepted (SMART App Launch 2: plain is forbidden)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        # authlib lets a request without code_challenge through; SMART 2 requires it of every client.
        if not grant.request.payload.data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge' (PKCE S256 is required)")
        if grant.request.payload.data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'")
        super().validate_code_verifier(grant, result)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [CLIENT_SECRET_BASIC, PRIVATE_KEY_JWT, NONE]

    store: AuthStore
    policy: TokenPolicy

    def validate_requested_scope(self) -> None:
        """The scope rule of docs/integration.md section 1: what cannot be granted is listed on the
        consent page and left out of the token response's ``scope`` (RFC 6749 3.3), never dropped
        silently; the request is refused with invalid_scope (RFC 6749 4.1.2.1) when it names no scope,
        when nothing can be granted, or when ``openid``/``fhirUser`` (the app wants to know who signs
        in) are not registered for the client."""
        client: Client = self.request.client
        requested = smart.split(self.request.payload.scope)
        if not requested:
            raise InvalidScopeError(
                description="'scope' is required: list what the app needs, e.g. 'openid fhirUser user/*.rs'"
            )
        decision = smart.decide_user_launch(requested, smart.split(client.scope))
        identity = [s for s, why in decision.refused if s in smart.IDENTITY_SCOPES]
        if identity:
            raise InvalidScopeError(
                description=f"this client is not registered for '{' '.join(identity)}' "
                "(the operator registers it with --scope including them)"
            )
        if not decision.granted:
            raise InvalidScopeError(
                description="none of the requested scopes can be granted to this client: "
                + "; ".join(f"{s} ({why})" for s, why in decision.refused)
            )
        self.request.scope_decision = decision

    def save_authorization_code(self, code: str, request: Any) -> None:
        user: User = request.user
        payload = request.payload
        decision: smart.Decision | None = getattr(request, "scope_decision", None)
        self.store.save_code(
            code,
            {
                "client_id": request.client.client_id,
                "username": user.username,
                "redirect_uri": payload.redirect_uri or request.client.get_default_redirect_uri(),
                "scope": patient_scoped(
                    " ".join(decision.granted) if decision is not None else "",
                    getattr(request, "launch_patient", None),
                ),
                "code_challenge": payload.data.get("code_challenge"),
                "code_challenge_method": payload.data.get("code_challenge_method"),
                "nonce": payload.data.get("nonce"),
                "aud": payload.data.get("aud"),
                "patient": getattr(request, "launch_patient", None),
                "auth_time": user.auth_time,
                "expires_at": int(time.time()) + self.policy.code_ttl,
            },
        )

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        row = self.store.take_code(code, client.client_id)
        return AuthorizationCode(**{k: v for k, v in row.items() if k != "used"}) if row else None

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Nothing to do: the code was marked used when taken (kept to detect replays)."""

    def authenticate_user(self, authorization_code: AuthorizationCode) -> User | None:
        return self.store.user(authorization_code.username)


class SmartOpenIDCode(OpenIDCode):  # type: ignore[misc]
    """OpenID Connect for the code grant (SMART App Launch 2 "scopes-and-launch-context": with
    ``openid fhirUser`` the token response carries an id_token whose ``fhirUser`` names the user's
    FHIR resource). Signed with the access tokens' key, published at /auth/jwks."""

    def __init__(self, keys: KeyStore, urls: Urls, policy: TokenPolicy, issuer: Callable[[], str]) -> None:
        super().__init__(require_nonce=False)
        self.keys = keys
        self.urls = urls
        self.policy = policy
        self.issuer_of = issuer

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        # A nonce travels in a single-use code (a replayed code is refused and revokes its grant):
        # there is nothing to look up beforehand.
        return False

    def resolve_client_private_key(self, client: Client) -> Any:
        return self.keys.signing_key()

    def get_client_algorithm(self, client: Client) -> str:
        return ALG

    def get_encode_header(self, client: Client) -> dict[str, Any]:
        key = self.keys.signing_key()
        return {"alg": ALG, "kid": key.kid, "typ": "JWT"}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": self.issuer_of(),
            "aud": [client.client_id],
            "iat": now,
            "exp": now + self.policy.access_ttl,
        }

    def generate_user_info(self, user: User, scope: str) -> UserInfo:
        info = UserInfo(sub=user.username)
        if "fhirUser" in smart.split(scope):
            info["fhirUser"] = f"{self.urls.fhir_base()[0]}/Practitioner/{user.practitioner_id}"
        return info


class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [CLIENT_SECRET_BASIC, PRIVATE_KEY_JWT, NONE]
    INCLUDE_NEW_REFRESH_TOKEN = True

    store: AuthStore

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        token = self.store.refresh_token(refresh_token)
        if token is None or token.revoked or token.is_refresh_expired():
            return None
        # The presenting client (authenticated before this hook) must be the token's own before the
        # token is spent: a stolen token shown by another client is refused and stays valid for its
        # owner (RFC 6749 6: "validate the refresh token ... issued to the authenticated client").
        client: Client | None = getattr(self.request, "client", None)
        if client is None or not token.check_client(client):
            return None
        if not self.store.use_refresh_token(token):
            raise InvalidGrantError(description="Refresh token reused; the grant has been revoked")
        return token

    def authenticate_user(self, refresh_token: Token) -> User | None:
        return self.store.user(refresh_token.username) if refresh_token.username else None

    def revoke_old_credential(self, refresh_token: Token) -> None:
        """Rotation: the old refresh token was spent in authenticate_refresh_token."""


class Introspection(IntrospectionEndpoint):  # type: ignore[misc]
    """RFC 7662, for other GRADeS services: any registered confidential client may introspect."""

    CLIENT_AUTH_METHODS = [CLIENT_SECRET_BASIC, PRIVATE_KEY_JWT]

    store: AuthStore
    issuer_of: Callable[[], str]

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        if token_type_hint == "refresh_token":  # noqa: S105 - a hint name
            return self.store.refresh_token(token_string) or self.store.access_token(token_string)
        return self.store.access_token(token_string) or self.store.refresh_token(token_string)

    def check_permission(self, token: Token, client: Client, request: Any) -> bool:
        return client.confidential

    def introspect_token(self, token: Token) -> dict[str, Any]:
        out: dict[str, Any] = {
            "active": True,
            "scope": token.scope,
            "client_id": token.client_id,
            "token_type": "Bearer",
            "exp": token.expires_at,
            "iat": token.issued_at,
            "iss": self.issuer_of(),
            "sub": token.username or token.client_id,
            "jti": token.jti,
        }
        if token.aud:
            out["aud"] = token.aud
        if token.username:
            out["username"] = token.username
        if token.practitioner_id:
            out["fhirUser"] = f"{self.issuer_of()}/Practitioner/{token.practitioner_id}"
        if token.patient:
            out["patient"] = token.patient
        return out


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009. Revoking a refresh token revokes its whole grant (RFC 7009 2.1: SHOULD)."""

    CLIENT_AUTH_METHODS = [CLIENT_SECRET_BASIC, PRIVATE_KEY_JWT, NONE]

    store: AuthStore

    def query_token(self, token_string: str, token_type_hint: str | None) -> _Revocable | None:
        access = self.store.access_token(token_string)
        if access is not None:
            return _Revocable(access, False)
        refresh = self.store.refresh_token(token_string)
        return _Revocable(refresh, True) if refresh is not None else None

    def revoke_token(self, token: _Revocable, request: Any) -> None:
        self.store.revoke_token(token.token, whole_family=token.refresh)


class _Revocable:
    def __init__(self, token: Token, refresh: bool) -> None:
        self.token = token
        self.refresh = refresh

    def check_client(self, client: Client) -> bool:
        return self.token.check_client(client)


def token_row(token: dict[str, Any], request: Any, policy: TokenPolicy) -> dict[str, Any]:
    """The oauth_token row for a token authlib just generated."""
    claims = _claims(token["access_token"])
    now = int(time.time())
    code: AuthorizationCode | None = getattr(request, "authorization_code", None)
    previous: Token | None = getattr(request, "refresh_token", None)
    user: User | None = getattr(request, "user", None)
    if code is not None:
        family, patient, aud = code.code_hash, code.patient, code.aud
    elif isinstance(previous, Token):
        family, patient, aud = previous.family, previous.patient, previous.aud
    else:
        family, patient, aud = random_token(16), None, None
    refresh = token.get("refresh_token")
    offline = "offline_access" in smart.split(token.get("scope"))
    refresh_expires = now + (policy.offline_ttl if offline else policy.online_ttl) if refresh else None
    if (
        refresh_expires is not None
        and not offline
        and isinstance(previous, Token)
        and previous.refresh_expires_at
    ):
        # online_access: usable while the user's sign-in lasts (SMART App Launch 2,
        # scopes-and-launch-context): a refresh never pushes the end of the grant further.
        refresh_expires = min(refresh_expires, previous.refresh_expires_at)
    if patient:
        token["patient"] = patient
    return {
        "token_hash": digest(token["access_token"]),
        "jti": claims["jti"],
        "family": family,
        "client_id": request.client.client_id,
        "username": user.username if user else None,
        "practitioner_id": user.practitioner_id if user else None,
        "scope": token.get("scope") or "",
        "patient": patient,
        "aud": aud or (claims.get("aud") if isinstance(claims.get("aud"), str) else None),
        "issued_at": now,
        "expires_at": int(claims["exp"]),
        "refresh_hash": digest(refresh) if refresh else None,
        "refresh_expires_at": refresh_expires,
    }


class SmartAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """authlib's server, answering every OAuth error with a description a person can act on
    (auth/messages.py) instead of the library's sentence."""

    ENDPOINT_PATHS = ("/auth/introspect", "/auth/revoke")

    def handle_error_response(self, request: Any, error: OAuth2Error) -> Any:
        form = getattr(request, "form", None) if request is not None else None
        if form is None and has_request_context():
            form = flask_request.form
        endpoint = has_request_context() and flask_request.path in self.ENDPOINT_PATHS
        described = messages.plain(error, form, endpoint=endpoint)
        if described is not None:
            error.description = described
        return super().handle_error_response(request, error)


def build_server(
    store: AuthStore,
    keys: KeyStore,
    urls: Urls,
    policy: TokenPolicy,
    issuer: Callable[[], str],
    jwks_refetch_seconds: int = 300,
) -> SmartAuthorizationServer:
    def save_token(token: dict[str, Any], request: Any) -> None:
        store.save_token(token_row(token, request, policy))

    server = SmartAuthorizationServer(query_client=store.client, save_token=save_token)
    server.register_token_generator("default", AccessTokens(keys, urls, policy, issuer))
    jwks = JwksCache(refetch_interval=jwks_refetch_seconds)
    server.register_client_auth_method(PRIVATE_KEY_JWT, PrivateKeyJwt(store, urls, jwks))
    # authlib instantiates grants and endpoints per request from classes: bind our store to
    # subclasses made for this server, so that two applications in one process stay apart.
    code_grant = type("CodeGrant", (AuthorizationCodeGrant,), {"store": store, "policy": policy})
    server.register_grant(ClientCredentials)
    server.register_grant(code_grant, [S256Only(required=True), SmartOpenIDCode(keys, urls, policy, issuer)])
    server.register_grant(type("RefreshGrant", (RefreshTokenGrant,), {"store": store}))
    server.register_endpoint(
        type("IntrospectionEndpoint", (Introspection,), {"store": store, "issuer_of": staticmethod(issuer)})
    )
    server.register_endpoint(type("RevocationEndpoint", (Revocation,), {"store": store}))
    return server
