"""Checks of a client registration (``coordination clients create``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from auth import scopes as smart


class RegistrationError(ValueError):
    pass


def check_registration(
    scope: str, auth_method: str, jwks_file: str | None, jwks_url: str | None, redirect_uris: list[str]
) -> dict[str, Any] | None:
    """Validate the registration; returns the public JWKS read from ``jwks_file`` if any."""
    names = smart.split(scope)
    if not names:
        raise RegistrationError("--scope must list at least one scope")
    unknown = [n for n in names if not smart.is_known(n)]
    if unknown:
        raise RegistrationError(f"unsupported scopes: {' '.join(unknown)}")
    for uri in redirect_uris:
        parts = urlsplit(uri)
        if parts.scheme not in {"https", "http"} or not parts.netloc or parts.fragment:
            raise RegistrationError(f"redirect URI {uri!r} must be an absolute http(s) URL without fragment")
    if auth_method == "private_key_jwt":
        if bool(jwks_file) == bool(jwks_url):
            raise RegistrationError("private_key_jwt needs exactly one of --jwks-file or --jwks-url")
    elif jwks_file or jwks_url:
        raise RegistrationError("--jwks-file/--jwks-url are for --auth private_key_jwt")
    if auth_method == "none" and not redirect_uris:
        raise RegistrationError("a public client (--auth none) needs --redirect-uri")
    if jwks_url is not None and urlsplit(jwks_url).scheme not in {"https", "http"}:
        raise RegistrationError("--jwks-url must be an http(s) URL")
    if jwks_file is None:
        return None
    try:
        data = json.loads(Path(jwks_file).read_text(encoding="utf-8"))
        keys = [k for k in data.get("keys", []) if isinstance(k, dict)]
        if not keys:
            raise RegistrationError("the JWKS file holds no keys")
        if any("d" in k or k.get("kty") not in {"RSA", "EC"} for k in keys):
            raise RegistrationError("the JWKS file must hold public RSA or EC keys only")
        KeySet.import_key_set({"keys": keys})
    except (OSError, ValueError, AttributeError, JoseError) as exc:
        raise RegistrationError(f"the JWKS file is not a usable JWK Set: {exc}") from exc
    return {"keys": keys}
