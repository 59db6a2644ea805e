"""Opaque page tokens: the normalized query, the offset and the snapshot bound (R4 search.html#paging)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import orjson

from coordination_api.errors import Category, FhirError


@dataclass(frozen=True)
class PageToken:
    params: list[tuple[str, str]]
    offset: int
    count: int
    bound: int  # highest pk (search) or latest timestamp (history) visible to this paging session

    def encode(self) -> str:
        raw = orjson.dumps({"p": self.params, "o": self.offset, "c": self.count, "b": self.bound})
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> PageToken:
        try:
            padded = token + "=" * (-len(token) % 4)
            data = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
            params = [(str(k), str(v)) for k, v in data["p"]]
            return cls(params, int(data["o"]), int(data["c"]), int(data["b"]))
        except (binascii.Error, ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
            raise FhirError(Category.INVALID, "Invalid or corrupted _page token") from exc
