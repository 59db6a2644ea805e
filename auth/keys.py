"""Our token-signing keys: created on first use, rotated on demand, published on jwks_uri.

Rotation (``coordination keys rotate``) makes a new key the signing key; retired keys stay
published until every token they signed has expired (RFC 7517 key sets; SMART 2 jwks_uri).
"""

from __future__ import annotations

import time
from typing import Any

from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import Engine, insert, select, update

from auth.schema import signing_key

ALG = "RS256"


class KeyStore:
    def __init__(self, engine: Engine, publish_retired_for: int) -> None:
        self.engine = engine
        self.publish_retired_for = publish_retired_for
        self._cache: dict[str, RSAKey] = {}

    def _load(self, kid: str, pem: str) -> RSAKey:
        key = self._cache.get(kid)
        if key is None:
            key = RSAKey.import_key(pem, {"kid": kid, "alg": ALG, "use": "sig"})
            self._cache[kid] = key
        return key

    def _create(self) -> str:
        key = RSAKey.generate_key(2048, private=True)
        kid = key.thumbprint()
        with self.engine.begin() as conn:
            conn.execute(
                insert(signing_key).values(
                    kid=kid,
                    alg=ALG,
                    private_pem=key.as_pem(private=True).decode(),
                    created_at=int(time.time()),
                )
            )
        return kid

    def signing_key(self) -> RSAKey:
        """The newest active key (created when there is none)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(signing_key.c.kid, signing_key.c.private_pem)
                .where(signing_key.c.retired_at.is_(None))
                .order_by(signing_key.c.created_at.desc(), signing_key.c.kid)
                .limit(1)
            ).first()
        if row is None:
            self._create()
            return self.signing_key()
        return self._load(row.kid, row.private_pem)

    def rotate(self) -> str:
        """A new signing key; the previous ones are retired (still published for a while)."""
        kid = self._create()
        with self.engine.begin() as conn:
            conn.execute(
                update(signing_key)
                .where(signing_key.c.retired_at.is_(None), signing_key.c.kid != kid)
                .values(retired_at=int(time.time()))
            )
        return kid

    def public_jwks(self) -> dict[str, Any]:
        horizon = int(time.time()) - self.publish_retired_for
        self.signing_key()  # make sure there is one to publish
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(signing_key.c.kid, signing_key.c.private_pem).where(
                    (signing_key.c.retired_at.is_(None)) | (signing_key.c.retired_at >= horizon)
                )
            ).all()
        keys = [self._load(r.kid, r.private_pem) for r in rows]
        data: dict[str, Any] = dict(KeySet(list(keys)).as_dict(private=False))
        return data
