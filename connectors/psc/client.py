"""The OpenID Connect client of Pro Santé Connect: discovery, JWKS, code flow, ID token checks."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from connectors import http
from connectors.errors import ConnectorError, Failure
from connectors.psc.errors import NOT_CONFIGURED, SERVICE, refused
from connectors.psc.mapping import PscIdentity, identity

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]


@dataclass(frozen=True)
class PscClientSettings:
    discovery_url: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    scopes: str = "openid scope_all"
    acr_values: str = "eidas1"
    introspect: bool = False
    leeway: int = 60
    http: http.HttpSettings = field(default_factory=http.HttpSettings)


class ProSanteConnect(Protocol):
    configured: bool

    def authorization_url(self, state: str, nonce: str, redirect_uri: str) -> str: ...

    def login(self, code: str, redirect_uri: str, nonce: str) -> PscIdentity: ...


class NullProSanteConnect:
    """Not configured: no PSC button, no PSC routes."""

    configured = False

    def authorization_url(self, state: str, nonce: str, redirect_uri: str) -> str:
        raise ConnectorError(SERVICE, Failure.NOT_CONFIGURED, NOT_CONFIGURED)

    def login(self, code: str, redirect_uri: str, nonce: str) -> PscIdentity:
        raise ConnectorError(SERVICE, Failure.NOT_CONFIGURED, NOT_CONFIGURED)


class PscClient:
    configured = True

    def __init__(self, settings: PscClientSettings) -> None:
        self.settings = settings
        self._session = http.session(settings.http, {"Accept": "application/json"})
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None

    def _get_json(self, url: str, **kwargs: Any) -> Any:
        response = http.call(SERVICE, self._session, self.settings.http, "GET", url, **kwargs)
        try:
            return http.json_body(SERVICE, response)
        finally:
            response.close()

    def metadata(self) -> dict[str, Any]:
        with self._lock:
            if self._metadata is None:
                found = self._get_json(self.settings.discovery_url)
                needed = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
                if not isinstance(found, dict) or any(not isinstance(found.get(k), str) for k in needed):
                    raise ConnectorError(SERVICE, Failure.BAD_ANSWER, "the discovery document is incomplete")
                self._metadata = found
            return self._metadata

    def _key_set(self, refresh: bool = False) -> KeySet:
        with self._lock:
            keys = self._keys
        if keys is None or refresh:
            raw = self._get_json(self.metadata()["jwks_uri"])
            try:
                keys = KeySet.import_key_set(raw)
            except (JoseError, ValueError, TypeError, KeyError) as exc:
                raise ConnectorError(
                    SERVICE, Failure.BAD_ANSWER, "the provider's JWKS is not usable"
                ) from exc
            with self._lock:
                self._keys = keys
        return keys

    def _decode(self, token: str) -> dict[str, Any]:
        """A JWT signed by the provider (a key rotated since we fetched the JWKS: fetched again once)."""
        try:
            try:
                decoded = jwt.decode(token, self._key_set(), algorithms=ALGORITHMS)
            except InvalidKeyIdError:
                decoded = jwt.decode(token, self._key_set(refresh=True), algorithms=ALGORITHMS)
        except (JoseError, ValueError) as exc:
            raise refused(f"a token from the provider does not verify ({type(exc).__name__})") from exc
        return dict(decoded.claims)

    def check(self) -> str:
        """A cheap call (``coordination connectors check``): the discovery document and its JWKS."""
        keys = self._key_set(refresh=True)
        return f"discovery document and JWKS read ({len(keys.keys)} key(s))"

    def authorization_url(self, state: str, nonce: str, redirect_uri: str) -> str:
        s = self.settings
        query = {
            "response_type": "code",
            "client_id": s.client_id,
            "redirect_uri": redirect_uri,
            "scope": s.scopes,
            "state": state,
            "nonce": nonce,
            "acr_values": s.acr_values,
        }
        endpoint = self.metadata()["authorization_endpoint"]
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}"

    def check_id_token(self, token: str, nonce: str) -> dict[str, Any]:
        """OpenID Connect Core 3.1.3.7."""
        claims = self._decode(token)
        s, now = self.settings, int(time.time())
        if claims.get("iss") != self.metadata()["issuer"]:
            raise refused("the ID token was not issued by the configured provider (iss)")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if s.client_id not in audiences:
            raise refused("the ID token is not meant for this server (aud)")
        if not isinstance(claims.get("exp"), int) or claims["exp"] + s.leeway < now:
            raise refused("the ID token has expired")
        if isinstance(claims.get("iat"), int) and claims["iat"] - s.leeway > now:
            raise refused("the ID token is issued in the future")
        if not nonce or claims.get("nonce") != nonce:
            raise refused("the ID token's nonce is not the one of this login (replay?)")
        # acr_values is only a request (OpenID Connect Core 3.1.2.1, 5.5.1.1 voluntary claim): the
        # level actually reached is the ID token's acr, and a login below the one asked is refused.
        wanted = s.acr_values.split()
        if wanted and claims.get("acr") not in wanted:
            raise refused(f"the ID token's acr is not the level this login asked for ({' '.join(wanted)})")
        return claims

    def login(self, code: str, redirect_uri: str, nonce: str) -> PscIdentity:
        s = self.settings
        meta = self.metadata()
        response = http.call(
            SERVICE,
            self._session,
            s.http,
            "POST",
            meta["token_endpoint"],
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri},
            auth=(s.client_id, s.client_secret or ""),
        )
        try:
            tokens = http.json_body(SERVICE, response)
        finally:
            response.close()
        if not isinstance(tokens, dict) or not isinstance(tokens.get("id_token"), str):
            raise ConnectorError(SERVICE, Failure.BAD_ANSWER, "the token answer has no id_token")
        claims = self.check_id_token(tokens["id_token"], nonce)
        access = str(tokens.get("access_token") or "")
        if s.introspect and meta.get("introspection_endpoint"):
            self._introspect(meta["introspection_endpoint"], access)
        info = claims
        if meta.get("userinfo_endpoint") and access:
            info = {**claims, **self._userinfo(meta["userinfo_endpoint"], access, claims)}
        return identity(info)

    def _userinfo(self, url: str, access: str, claims: dict[str, Any]) -> dict[str, Any]:
        response = http.call(
            SERVICE,
            self._session,
            self.settings.http,
            "GET",
            url,
            headers={"Authorization": f"Bearer {access}"},
        )
        try:
            if response.headers.get("Content-Type", "").split(";")[0].strip() == "application/jwt":
                info = self._decode(response.text.strip())
            else:
                info = http.json_body(SERVICE, response)
        finally:
            response.close()
        if not isinstance(info, dict):
            raise ConnectorError(SERVICE, Failure.BAD_ANSWER, "the UserInfo answer is not an object")
        # OpenID Connect Core 5.3.2: the UserInfo sub must equal the ID token's.
        if info.get("sub") is not None and info.get("sub") != claims.get("sub"):
            raise refused("the UserInfo answer is about someone else (sub)")
        return info

    def _introspect(self, url: str, access: str) -> None:
        s = self.settings
        response = http.call(
            SERVICE,
            self._session,
            s.http,
            "POST",
            url,
            data={"token": access},
            auth=(s.client_id, s.client_secret or ""),
        )
        try:
            answer = http.json_body(SERVICE, response)
        finally:
            response.close()
        if not isinstance(answer, dict) or answer.get("active") is not True:
            raise refused("the provider says the access token is not active")
