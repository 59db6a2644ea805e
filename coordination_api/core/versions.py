"""Version ETags as the If-Match and If-None-Match headers carry them (R4 http.html#versioning)."""

from __future__ import annotations

import re

from coordination_api.errors import Category, FhirError

_ETAG = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')


def parse_etag(value: str | None, header: str) -> int | None:
    if value is None or value.strip() == "":
        return None
    match = _ETAG.match(value)
    if not match:
        raise FhirError(Category.INVALID, f"{header} '{value}' is not a version ETag like W/\"3\"")
    return int(match.group(1))
