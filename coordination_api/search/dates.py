"""FHIR date/dateTime/instant values as closed ranges of epoch microseconds (R4 search.html#date)."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

MIN_US = -(2**62)
MAX_US = 2**62

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY = 86_400_000_000


class InvalidDateError(ValueError):
    """The text is not a FHIR date, dateTime or instant."""


def _us(dt: datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_range(text: str) -> tuple[int, int]:
    """Return the [low, high] microsecond range a (partial) date covers; no zone means UTC."""
    match = _DATE_RE.match(text.strip())
    if not match:
        raise InvalidDateError(f"'{text}' is not a valid FHIR date/dateTime")
    parts = match.groupdict()
    try:
        year = int(parts["y"])
        # High bounds are low + span in integer microseconds: low + timedelta would overflow
        # datetime at the end of year 9999 (9999-12-31 is a valid FHIR date).
        if parts["m"] is None:
            low = datetime(year, 1, 1, tzinfo=UTC)
            return _us(low), _us(low) + (366 if calendar.isleap(year) else 365) * _DAY - 1
        month = int(parts["m"])
        if parts["d"] is None:
            low = datetime(year, month, 1, tzinfo=UTC)
            return _us(low), _us(low) + calendar.monthrange(year, month)[1] * _DAY - 1
        day = int(parts["d"])
        if parts["H"] is None:
            low = datetime(year, month, day, tzinfo=UTC)
            return _us(low), _us(low) + _DAY - 1
        tz: timezone = UTC
        if parts["tz"] and parts["tz"] != "Z":
            sign = 1 if parts["tz"][0] == "+" else -1
            hours, minutes = int(parts["tz"][1:3]), int(parts["tz"][4:6])
            tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
        hour, minute = int(parts["H"]), int(parts["M"])
        if parts["S"] is None:
            low = datetime(year, month, day, hour, minute, tzinfo=tz)
            return _us(low), _us(low) + 60_000_000 - 1
        second = int(parts["S"])
        if second == 60:  # leap second: clamp
            second = 59
        fraction = parts["f"]
        low = datetime(year, month, day, hour, minute, second, tzinfo=tz)
        if fraction:
            digits = fraction[1:]
            micro = int((digits + "000000")[:6])
            # Precision of the fraction given (capped at microseconds).
            step = 10 ** max(0, 6 - len(digits))
            return _us(low) + micro, _us(low) + micro + step - 1
        return _us(low), _us(low) + 1_000_000 - 1
    except (ValueError, OverflowError) as exc:  # e.g. month 13, Feb 30, a zone beyond ±24 h
        raise InvalidDateError(f"'{text}' is not a valid FHIR date/dateTime: {exc}") from exc


def format_instant(us: int) -> str:
    """Format epoch microseconds as a FHIR instant with millisecond precision."""
    dt = _EPOCH + timedelta(microseconds=us)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def format_http_date(us: int) -> str:
    """RFC 9110 IMF-fixdate, for Last-Modified."""
    return format_datetime(_EPOCH + timedelta(microseconds=us), usegmt=True)
