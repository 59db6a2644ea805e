"""Plain, actionable ``error_description`` values for every OAuth error we answer.

authlib and joserfc describe failures in their own words ("The client cannot authenticate with
methods: [...]", "Invalid 'code' in request."); the server rewrites them here, once, before the
response is built. RFC 6749 5.2 / 4.1.2.1: ``error_description`` is ASCII without '"' and '\\'.
"""

from __future__ import annotations

import re
from typing import Any

from authlib.oauth2 import OAuth2Error
from flask import has_request_context, request

UNKNOWN_CLIENT = "unknown client or wrong secret"
NO_CLIENT_AUTH = (
    "client authentication required: HTTP Basic client_id:client_secret, a client_assertion "
    "(private_key_jwt), or client_id in the form for a public client"
)
ASSERTION = "client assertion (private_key_jwt): "

# authlib's sentences (exact), by error code, and ours instead.
_EXACT: dict[tuple[str, str], str] = {
    ("invalid_client", "The client does not exist on this server."): UNKNOWN_CLIENT,
    ("invalid_client", "Missing 'client_id' parameter."): "missing 'client_id'",
    ("invalid_client", "Missing claim: 'sub'"): ASSERTION + "'sub' (your client_id) is missing",
    ("invalid_client", "Invalid claim: 'sub'"): ASSERTION + "'sub' must be your client_id (a string)",
    ("invalid_client", "Issuer and Subject MUST match."): ASSERTION
    + "'iss' and 'sub' must both be your client_id",
    ("invalid_client", "Missing JWT ID."): ASSERTION + "'jti' is missing (a new random value each time)",
    ("invalid_client", "JWT ID is used before."): ASSERTION
    + "this 'jti' was already used: sign a new assertion for each request",
    ("invalid_client", "Invalid JWT assertion."): ASSERTION + "not a signed JWT (header.payload.signature)",
    ("invalid_client", "Invalid JWT payload."): ASSERTION + "the payload is not a JSON object",
    ("invalid_client", "The client cannot authenticate with method: private_key_jwt"): (
        "this client is not registered for private_key_jwt"
    ),
    ("invalid_client", "The token is expired"): ASSERTION + "expired ('exp' is in the past)",
    ("invalid_request", "Missing 'code' in request."): "missing 'code'",
    ("invalid_grant", "Invalid 'code' in request."): (
        "the code is unknown, expired or already used (a code works once, within 60 seconds)"
    ),
    ("invalid_grant", "Invalid 'redirect_uri' in request."): (
        "'redirect_uri' must be the one sent to /auth/authorize"
    ),
    ("invalid_grant", "There is no 'user' for this code."): "the user of this code no longer exists",
    (
        "invalid_grant",
        "Code challenge failed.",
    ): "'code_verifier' does not match the code_challenge (PKCE S256)",
    (
        "invalid_request",
        "Invalid 'code_verifier'",
    ): "'code_verifier' must be 43 to 128 characters [A-Za-z0-9-._~]",
    (
        "invalid_request",
        "Invalid 'code_challenge'",
    ): "'code_challenge' must be the base64url SHA-256 of the verifier",
    ("invalid_request", "Missing 'refresh_token' in request."): "missing 'refresh_token'",
    ("invalid_request", "There is no 'user' for this token."): "the user of this token no longer exists",
    ("invalid_request", "Missing 'redirect_uri' in request."): (
        "missing 'redirect_uri' (the client has several registered)"
    ),
}
_PATTERNS: list[tuple[str, re.Pattern[str], str]] = [
    ("invalid_client", re.compile(r"^Missing claim: '(\w+)'$"), ASSERTION + "the '{0}' claim is missing"),
    (
        "invalid_client",
        re.compile(r"^Invalid claim: '(aud)'$"),
        ASSERTION + "'aud' must be this server's token URL",
    ),
    ("invalid_client", re.compile(r"^Invalid claim: '(\w+)'$"), ASSERTION + "the '{0}' claim is not valid"),
    (
        "invalid_request",
        re.compile(r"^Redirect URI .* is not supported by client\.$"),
        ("'redirect_uri' is not registered for this client (exact match required)"),
    ),
    ("invalid_request", re.compile(r"^Multiple '(\w+)' in request\.$"), "'{0}' is given more than once"),
    (
        "unauthorized_client",
        re.compile(r"^The client is not authorized to use 'grant_type=(\w+)'$"),
        (
            "this client may not use grant_type={0} (client_credentials: confidential clients only; "
            "authorization_code and refresh_token: clients with a redirect URI)"
        ),
    ),
]
# Errors authlib raises without a description, by (code, where).
_BARE: dict[tuple[str, str], str] = {
    ("invalid_grant", "refresh_token"): (
        "the refresh token is unknown, expired, revoked or was issued to another client: sign in again"
    ),
    ("invalid_scope", "refresh_token"): "a refresh may only ask for scopes of the original grant",
    ("invalid_request", "endpoint"): "missing 'token'",
    ("unsupported_token_type", "endpoint"): "'token_type_hint' must be access_token or refresh_token",
    ("invalid_grant", "endpoint"): "this token was issued to another client",
}

_NOT_ALLOWED = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


def ascii_description(text: str) -> str:
    """RFC 6749 5.2: error_description characters are %x20-21 / %x23-5B / %x5D-7E."""
    return _NOT_ALLOWED.sub("?", text)[:500]


def plain(error: OAuth2Error, form: Any = None, endpoint: bool = False) -> str | None:
    """Our description of ``error``: ``form`` is the request's form (for the grant type and whether
    the client presented any credentials), ``endpoint`` True on /auth/introspect and /auth/revoke."""
    code = str(getattr(error, "error", "") or "")
    raw = error.get_error_description() if hasattr(error, "get_error_description") else error.description
    default = type(error).description
    description = raw if raw and raw != default else None
    if (
        code == "invalid_client"
        and description is not None
        and description.startswith("The client cannot authenticate with methods")
    ):
        return UNKNOWN_CLIENT if _presented_credentials(form) else NO_CLIENT_AUTH
    if description is not None:
        mapped = _EXACT.get((code, description))
        if mapped is not None:
            return mapped
        for pattern_code, pattern, template in _PATTERNS:
            match = pattern.match(description) if pattern_code == code else None
            if match is not None:
                return template.format(*match.groups())
        return ascii_description(description)
    where = "endpoint" if endpoint else str(_get(form, "grant_type") or "")
    bare = _BARE.get((code, where))
    return bare if bare is not None else (ascii_description(raw) if raw else None)


def _get(form: Any, name: str) -> Any:
    return form.get(name) if form is not None else None


def _presented_credentials(form: Any) -> bool:
    header = request.headers.get("Authorization") if has_request_context() else None
    return bool(header or _get(form, "client_id") or _get(form, "client_assertion"))
