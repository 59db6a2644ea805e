"""Action timings relative to the trigger (R4 PlanDefinition.action.timing[x], relatedAction offsets)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from coordination_api.coordination.protocols.model import fhir_instant
from coordination_api.errors import Category, FhirError

_UNITS = {
    "s": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "wk": 7 * 86400.0,
    "mo": 30 * 86400.0,
    "a": 365 * 86400.0,
}
_UNIT_WORDS = {
    "second": "s",
    "minute": "min",
    "hour": "h",
    "day": "d",
    "week": "wk",
    "month": "mo",
    "year": "a",
}


def _duration(quantity: Any, where: str) -> timedelta:
    if not isinstance(quantity, dict) or not isinstance(quantity.get("value"), int | float):
        raise FhirError(Category.UNPROCESSABLE, f"{where} has no numeric value", expression=where)
    unit = str(quantity.get("code") or quantity.get("unit") or "")
    unit = _UNIT_WORDS.get(unit.lower().rstrip("s"), unit) if unit not in _UNITS else unit
    if unit not in _UNITS:
        raise FhirError(
            Category.UNPROCESSABLE,
            f"{where}: unit '{unit}' is not a UCUM time unit ({', '.join(_UNITS)})",
            expression=where,
        )
    seconds = float(quantity["value"]) * _UNITS[unit]
    if not 0 <= seconds <= _MAX_DELAY_SECONDS:
        raise FhirError(
            Category.UNPROCESSABLE, f"{where}: a delay must be between 0 and 100 years", expression=where
        )
    return timedelta(seconds=seconds)


# A protocol's delays are days to months; beyond a century is a typo (and overflows datetime).
_MAX_DELAY_SECONDS = 100 * 365.25 * 86400

Window = tuple[datetime, datetime | None]


def window_of(element: dict[str, Any], base: datetime, where: str) -> Window | None:
    """``timingDuration`` (within D of the base) or ``timingRange`` (between low and high after it)."""
    if "timingDuration" in element:
        return base, base + _duration(element["timingDuration"], f"{where}.timingDuration")
    if "timingRange" in element:
        rng = element["timingRange"] or {}
        low = _duration(rng["low"], f"{where}.timingRange.low") if "low" in rng else timedelta(0)
        high = _duration(rng["high"], f"{where}.timingRange.high") if "high" in rng else None
        return base + low, (base + high) if high is not None else None
    return None


def related_window(action: dict[str, Any], windows: dict[str, Window], where: str) -> Window | None:
    """``relatedAction`` after(-start|-end) another action, shifted by its offset."""
    for related in action.get("relatedAction") or []:
        target = windows.get(str(related.get("actionId")))
        relationship = related.get("relationship")
        if target is None or relationship not in {"after", "after-end", "after-start"}:
            continue
        base = target[0] if relationship == "after-start" else (target[1] or target[0])
        offset = {k.replace("offset", "timing"): v for k, v in related.items() if k.startswith("offset")}
        return window_of(offset, base, f"{where}.relatedAction") or (base, None)
    return None


def period_of(window: Window) -> dict[str, str]:
    start, end = window
    period = {"start": fhir_instant(start)}
    if end is not None:
        period["end"] = fhir_instant(end)
    return period


# -- applicability ---------------------------------------------------------------------------------
