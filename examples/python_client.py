#!/usr/bin/env python3
"""A small Python client (requests): a system token, a search followed page by page, a create then an
update guarded by If-Match (docs/integration.md sections 1 and 3).

Token (SMART Backend Services, client credentials), either
- client_secret_basic: CLIENT_ID and CLIENT_SECRET, from
  ``coordination clients create --name X --scope "system/*.cruds" --json``; or
- private_key_jwt (preferred in production): CLIENT_ID, PRIVATE_KEY_FILE (PEM, RSA or EC P-384) and
  KEY_ID (the ``kid`` of its public key in the JWKS registered with
  ``coordination clients create --auth private_key_jwt --jwks-file jwks.json ...``). The assertion is
  signed with RS384 or ES384 (needs ``pip install joserfc``); its ``aud`` is the token URL.
Access tokens last ``expires_in`` seconds (300 by default); client-credentials tokens come without a
refresh token: ask for a new one shortly before expiry, as ``Token`` does here.

Environment: BASE_URL, CLIENT_ID, CLIENT_SECRET or PRIVATE_KEY_FILE and KEY_ID (examples/README.md).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import requests

BASE = os.environ.get("BASE_URL", "http://127.0.0.1:8080").rstrip("/")
FHIR = f"{BASE}/fhir"
TOKEN_URL = f"{BASE}/auth/token"
FHIR_JSON = "application/fhir+json"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class Token:
    """A client-credentials access token, renewed 30 s before it expires."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        self.value = ""
        self.expires_at = 0.0

    def _credentials(self) -> dict[str, Any]:
        client_id = os.environ["CLIENT_ID"]
        key_file = os.environ.get("PRIVATE_KEY_FILE")
        if not key_file:
            return {"auth": (client_id, os.environ["CLIENT_SECRET"])}  # client_secret_basic
        from joserfc import jwt  # private_key_jwt (SMART Backend Services)
        from joserfc.errors import InvalidKeyTypeError
        from joserfc.jwk import ECKey, RSAKey

        pem = open(key_file, "rb").read()  # noqa: SIM115 (read once)
        try:
            key: RSAKey | ECKey = RSAKey.import_key(pem)
        except InvalidKeyTypeError:
            key = ECKey.import_key(pem)  # an EC P-384 key
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": TOKEN_URL,
            "exp": now + 240,
            "jti": str(uuid.uuid4()),
        }
        alg = "RS384" if isinstance(key, RSAKey) else "ES384"
        header = {"alg": alg, "kid": os.environ["KEY_ID"], "typ": "JWT"}
        assertion = jwt.encode(header, claims, key, algorithms=[alg])
        return {"data": {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}}

    def header(self) -> dict[str, str]:
        if time.monotonic() > self.expires_at - 30:
            credentials = self._credentials()
            data = {"grant_type": "client_credentials", "scope": self.scope, **credentials.pop("data", {})}
            answer = requests.post(TOKEN_URL, data=data, timeout=30, **credentials)
            if answer.status_code != 200:  # RFC 6749 5.2: {"error": ..., "error_description": ...}
                sys.exit(f"python_client: token refused: {answer.status_code} {answer.text}")
            body = answer.json()
            self.value = body["access_token"]
            self.expires_at = time.monotonic() + int(body["expires_in"])
        return {"Authorization": f"Bearer {self.value}", "Accept": FHIR_JSON}


def check(answer: requests.Response, *statuses: int) -> requests.Response:
    if answer.status_code not in statuses:
        sys.exit(
            f"python_client: {answer.request.method} {answer.url}: {answer.status_code} {answer.text[:500]}"
        )
    return answer


def search(token: Token, query: str, **params: str) -> Iterator[dict[str, Any]]:
    """Every match of a search, following the Bundle's ``next`` links (opaque: use them as given)."""
    url: str | None = f"{FHIR}/{query}"
    first: dict[str, str] | None = params
    while url:
        bundle = check(requests.get(url, params=first, headers=token.header(), timeout=30), 200).json()
        first = None  # the next link carries the parameters
        for entry in bundle.get("entry", []):
            if entry.get("search", {}).get("mode", "match") == "match":
                yield entry["resource"]
        url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)


def main() -> None:
    token = Token("system/Patient.cruds")

    # Create three patients, then read them back two by two.
    family = f"Exemple-{uuid.uuid4().hex[:8]}"
    for given in ("Anne", "Bruno", "Chloé"):
        patient = {
            "resourceType": "Patient",
            "name": [{"family": family, "given": [given]}],
            "gender": "unknown",
        }
        check(requests.post(f"{FHIR}/Patient", json=patient, headers=token.header(), timeout=30), 201)
    found = list(search(token, "Patient", family=family, _count="2", _sort="given"))
    print(
        f"search: {len(found)} patients named {family}, 2 a page: {[p['name'][0]['given'][0] for p in found]}"
    )
    if len(found) != 3:
        sys.exit("python_client: expected 3 patients")

    # Update with If-Match: the ETag of the version read; a stale ETag answers 412.
    read = check(requests.get(f"{FHIR}/Patient/{found[0]['id']}", headers=token.header(), timeout=30), 200)
    etag = read.headers["ETag"]  # W/"1"
    changed = {**read.json(), "birthDate": "1950-01-01"}
    headers = {**token.header(), "Content-Type": FHIR_JSON, "If-Match": etag}
    updated = check(
        requests.put(f"{FHIR}/Patient/{found[0]['id']}", json=changed, headers=headers, timeout=30), 200
    )
    print(f"update with If-Match {etag}: 200, now {updated.headers['ETag']}")
    stale = requests.put(f"{FHIR}/Patient/{found[0]['id']}", json=changed, headers=headers, timeout=30)
    check(stale, 412)
    print(f"update with the stale {etag}: 412 ({stale.json()['issue'][0]['diagnostics']})")


if __name__ == "__main__":
    main()
