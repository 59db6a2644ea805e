"""Opaque page tokens: the query, the page position and the snapshot bound (R4 search.html#paging).

Search pages also carry a keyset cursor (the sort key values and pk of the row a page starts after,
or ends before): later pages do not shift when resources are deleted or updated meanwhile.

Tokens are signed (HMAC-SHA256 with a key derived from the server secret, see web/http.py), so a
client cannot edit one (raise ``_count`` past the cap, point it at another query or position); a
page size read back is also clamped to the configured cap, in case the cap was lowered since.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import orjson

from coordination_api.errors import Category, FhirError


@dataclass(frozen=True)
class Signer:
    """The request's signing key and page-size cap (set per request by the FHIR blueprint)."""

    key: bytes
    max_count: int


# Outside a request (never for links we serve): a per-process key, tokens valid in this process only.
_FALLBACK = Signer(secrets.token_bytes(32), 2**62)
_signer: ContextVar[Signer] = ContextVar("page_token_signer", default=_FALLBACK)


def use_signer(signer: Signer) -> None:
    _signer.set(signer)


def _mac(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()[:20]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class PageToken:
    params: list[tuple[str, str]]
    offset: int
    count: int
    bound: int  # highest pk (search) or latest timestamp (history) visible to this paging session
    after: list[Any] | None = None  # keyset cursor (search only)
    backward: bool = False  # the page ends before the cursor (a previous link)

    def encode(self) -> str:
        data: dict[str, Any] = {"p": self.params, "o": self.offset, "c": self.count, "b": self.bound}
        if self.after is not None:
            data["k"] = self.after
            if self.backward:
                data["r"] = True
        raw = orjson.dumps(data)
        payload = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        return f"{payload}.{_mac(_signer.get().key, payload)}"

    @classmethod
    def decode(cls, token: str) -> PageToken:
        signer = _signer.get()
        payload, _, mac = token.partition(".")
        if not hmac.compare_digest(mac.encode(), _mac(signer.key, payload).encode()):
            raise FhirError(
                Category.INVALID, "Invalid _page token: it was not issued by this server or was altered"
            )
        token = payload
        try:
            padded = token + "=" * (-len(token) % 4)
            data = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
            pairs = data["p"]
            if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs
            ):
                raise TypeError("parameters")
            numbers = [data["o"], data["c"], data["b"]]
            # Only what encode() writes: whole numbers in range (offsets and bounds go into SQL as is).
            if not all(type(n) is int and 0 <= n <= _MAX for n in numbers):
                raise ValueError("numbers")
            after = data.get("k")
            if after is not None and not (
                isinstance(after, list) and all(v is None or type(v) in (int, float, str) for v in after)
            ):
                raise TypeError("cursor")
            backward = data.get("r", False)
            if type(backward) is not bool:
                raise TypeError("direction")
            count = min(numbers[1], signer.max_count)
            return cls([(k, v) for k, v in pairs], numbers[0], count, numbers[2], after, backward)
        except (binascii.Error, ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
            raise FhirError(Category.INVALID, "Invalid or corrupted _page token") from exc


_MAX = 2**62
