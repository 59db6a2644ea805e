"""A real local OpenID Connect provider shaped like Pro Santé Connect, for the tests: discovery, JWKS,
authorize (auto-approves the configured professional), token (RS256 ID tokens), UserInfo with
SubjectNameID, introspection. ``knobs`` make it misbehave the ways a login must survive."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, jsonify, redirect, request
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import make_server

CLIENT_ID = "cpts-coordination"
CLIENT_SECRET = "psc-test-secret"


@dataclass
class Provider:
    port: int = 0
    rpps: str = "10101010101"
    given: str = "Claire"
    family: str = "Durand"
    knobs: dict[str, Any] = field(default_factory=dict)
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "psc-1"}))
    authorize_requests: list[dict[str, str]] = field(default_factory=list)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}/auth/realms/esante-wallet"

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def _sign(self, claims: dict[str, Any], key: RSAKey | None = None) -> str:
        signer = key or self.key
        return jwt.encode({"alg": "RS256", "kid": signer.kid}, claims, signer)

    def id_token(self, nonce: str) -> str:
        k = self.knobs
        now = int(time.time())
        claims = {
            "iss": k.get("iss", self.issuer),
            "aud": k.get("aud", CLIENT_ID),
            "sub": "f:550dc1c8-d97b-4b1e-ac8c-8eb4471cf9dd:ANS",
            "iat": now,
            "exp": now - 3600 if k.get("expired") else now + 300,
            "nonce": k.get("nonce", nonce),
            "acr": k.get("acr", "eidas1"),
        }
        if claims["acr"] is None:
            del claims["acr"]
        other = RSAKey.generate_key(2048, parameters={"kid": "psc-1"}) if k.get("bad_signature") else None
        return self._sign(claims, other)

    def app(self) -> Flask:
        app = Flask("psc")
        base = "/auth/realms/esante-wallet"

        @app.get(f"{base}/.well-known/openid-configuration")
        def discovery() -> Response:
            root = self.issuer + "/protocol/openid-connect"
            return jsonify(
                issuer=self.issuer,
                authorization_endpoint=f"{root}/auth",
                token_endpoint=f"{root}/token",
                userinfo_endpoint=f"{root}/userinfo",
                introspection_endpoint=f"{root}/token/introspect",
                jwks_uri=f"{root}/certs",
            )

        @app.get(f"{base}/protocol/openid-connect/certs")
        def certs() -> Response:
            return jsonify(KeySet([self.key]).as_dict(private=False))

        @app.get(f"{base}/protocol/openid-connect/auth")
        def authorize() -> Response:
            args = request.args.to_dict()
            self.authorize_requests.append(args)
            code = secrets.token_urlsafe(16)
            self.codes[code] = {"nonce": args.get("nonce", ""), "redirect_uri": args["redirect_uri"]}
            query = urlencode({"code": code, "state": args.get("state", "")})
            return redirect(f"{args['redirect_uri']}?{query}")  # type: ignore[return-value]

        @app.post(f"{base}/protocol/openid-connect/token")
        def token() -> Response:
            auth = request.authorization
            if auth is None or (auth.username, auth.password) != (CLIENT_ID, CLIENT_SECRET):
                return Response('{"error": "invalid_client"}', 401, content_type="application/json")
            found = self.codes.pop(request.form.get("code", ""), None)
            if found is None or found["redirect_uri"] != request.form.get("redirect_uri"):
                return Response('{"error": "invalid_grant"}', 400, content_type="application/json")
            return jsonify(
                access_token="psc-access-" + secrets.token_urlsafe(8),
                token_type="Bearer",
                expires_in=120,
                id_token=self.id_token(found["nonce"]),
            )

        @app.get(f"{base}/protocol/openid-connect/userinfo")
        def userinfo() -> Response:
            info = {
                "sub": "f:550dc1c8-d97b-4b1e-ac8c-8eb4471cf9dd:ANS",
                "SubjectNameID": self.knobs.get("subject_name_id", "8" + self.rpps),
                "given_name": self.given,
                "family_name": self.family,
                "SubjectRefPro": {"exercices": [{"codeProfession": "10"}]},
            }
            if self.knobs.get("userinfo_jwt"):
                return Response(
                    self._sign({**info, "iss": self.issuer, "aud": CLIENT_ID}),
                    200,
                    content_type="application/jwt",
                )
            return jsonify(info)

        @app.post(f"{base}/protocol/openid-connect/token/introspect")
        def introspect() -> Response:
            return jsonify(active=not self.knobs.get("inactive"))

        return app


@contextmanager
def running_provider() -> Iterator[Provider]:
    provider = Provider()
    server = make_server("127.0.0.1", 0, provider.app(), threaded=True)
    provider.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
