"""Version ETags as the If-Match and If-None-Match headers carry them (R4 http.html#versioning)."""

from __future__ import annotations

import re

from coordination_api.errors import Category, FhirError

_ETAG = re.compile(r'^\s*(?:W/)?"?([0-9]+)"?\s*$')
# Versions are 64-bit integers in the database (SQLite INTEGER, PostgreSQL bigint): a longer number
# names no version and must not reach a bound parameter (both drivers refuse it: a 500, review 24).
_VERSION = re.compile(r"[0-9]{1,18}")


def version_number(text: str) -> int | None:
    """A version id as a number (ASCII digits that fit the database's integer), else None."""
    return int(text) if _VERSION.fullmatch(text) else None


def parse_etag(value: str | None, header: str) -> int | None:
    if value is None or value.strip() == "":
        return None
    match = _ETAG.match(value)
    number = version_number(match.group(1)) if match else None
    if number is None:
        raise FhirError(Category.INVALID, f"{header} '{value}' is not a version ETag like W/\"3\"")
    return number
