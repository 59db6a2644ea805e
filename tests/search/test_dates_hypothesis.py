"""Date prefixes against a small reference implementation of R4 search.html#prefix range semantics.

Both the searched value and the stored value are ranges (their precision gives the range; a Period
spans from its start's low end to its end's high end, open ends are infinite). Hypothesis draws
values from a narrow window around a year boundary so that ranges meet, nest and overlap often.
"""

from __future__ import annotations

import calendar
import itertools
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.conftest import Fhir
from tests.support.search import observation, put

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
INFINITY = 2**63

_VALUE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2}))?)?)?"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def reference_range(text: str) -> tuple[int, int]:
    """[low, high] in epoch microseconds, both included, of a date/dateTime/instant at its precision."""
    match = _VALUE.fullmatch(text)
    assert match, text
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if month is None:
        return _micros(datetime(int(year), 1, 1, tzinfo=UTC)), _micros(
            datetime(int(year) + 1, 1, 1, tzinfo=UTC)
        ) - 1
    if day is None:
        start = datetime(int(year), int(month), 1, tzinfo=UTC)
        days = calendar.monthrange(int(year), int(month))[1]
        return _micros(start), _micros(start + timedelta(days=days)) - 1
    if hour is None:
        start = datetime(int(year), int(month), int(day), tzinfo=UTC)
        return _micros(start), _micros(start + timedelta(days=1)) - 1
    offset = timedelta(0)
    if zone != "Z":
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])) * (1 if zone[0] == "+" else -1)
    start = datetime(int(year), int(month), int(day), int(hour), int(minute), tzinfo=timezone(offset))
    if second is None:
        return _micros(start), _micros(start + timedelta(minutes=1)) - 1
    start += timedelta(seconds=int(second))
    if fraction is None:
        return _micros(start), _micros(start + timedelta(seconds=1)) - 1
    start += timedelta(microseconds=int(fraction.ljust(6, "0")))
    return _micros(start), _micros(start) + 10 ** (6 - len(fraction)) - 1


def reference_match(prefix: str, search: tuple[int, int], target: tuple[int, int]) -> bool:
    """The "range" column of the R4 prefix table, to the letter."""
    s_low, s_high = search
    t_low, t_high = target
    contained = s_low <= t_low and t_high <= s_high
    above = t_high > s_high  # the range above the search value intersects the target
    below = t_low < s_low  # the range below the search value intersects the target
    return {
        "eq": contained,
        "ne": not contained,
        "gt": above,
        "lt": below,
        "ge": above or contained,
        "le": below or contained,
        "sa": t_low > s_high,
        "eb": t_high < s_low,
    }[prefix]


# -- strategies: values on a narrow grid around 2025-12-31 / 2026-01-01 ---------------------------

ZONES = ("Z", "+01:00", "-05:00", "+05:30")


@st.composite
def date_texts(draw: st.DrawFn, precisions: tuple[str, ...]) -> str:
    precision = draw(st.sampled_from(precisions))
    year = draw(st.sampled_from([2025, 2026]))
    if precision == "year":
        return f"{year}"
    month = draw(st.sampled_from([1, 12]))
    if precision == "month":
        return f"{year}-{month:02d}"
    day = draw(st.sampled_from([1, 2, 31]))
    if precision == "day":
        return f"{year}-{month:02d}-{day:02d}"
    hour = draw(st.sampled_from([0, 4, 12, 23]))
    minute = draw(st.sampled_from([0, 30, 59]))
    zone = draw(st.sampled_from(ZONES))
    if precision == "minute":
        return f"{year}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}{zone}"
    second = draw(st.sampled_from([0, 59]))
    text = f"{year}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    if precision == "fraction":
        text += "." + draw(st.sampled_from(["0", "5", "250", "999", "000001"]))
    return text + zone


SEARCH_VALUES = date_texts(("year", "month", "day", "minute", "second", "fraction"))
DATE_TIMES = date_texts(("year", "month", "day", "second"))
INSTANTS = date_texts(("fraction",))


@st.composite
def targets(draw: st.DrawFn) -> dict[str, Any]:
    """An Observation.effective[x]: dateTime, instant or Period (possibly open at either end)."""
    kind = draw(st.sampled_from(["dateTime", "instant", "period"]))
    if kind == "dateTime":
        return {"effectiveDateTime": draw(DATE_TIMES)}
    if kind == "instant":
        return {"effectiveInstant": draw(INSTANTS)}
    start = draw(st.none() | DATE_TIMES)
    end = draw(st.none() | DATE_TIMES)
    if start and end and len(start) != len(end):
        end = None  # per-1 (start <= end) cannot be decided across precisions: writes refuse such periods
    if start and end and reference_range(start)[0] > reference_range(end)[1]:
        start, end = end, start
    period = {key: value for key, value in (("start", start), ("end", end)) if value}
    return {"effectivePeriod": period} if period else {"effectiveDateTime": draw(DATE_TIMES)}


def target_range(effective: dict[str, Any]) -> tuple[int, int]:
    if "effectivePeriod" in effective:
        period = effective["effectivePeriod"]
        low = reference_range(period["start"])[0] if "start" in period else -INFINITY
        high = reference_range(period["end"])[1] if "end" in period else INFINITY
        return low, high
    return reference_range(next(iter(effective.values())))


def test_reference_ranges_follow_precision() -> None:
    day = reference_range("2026-01-01")
    assert day[1] - day[0] == 86_400_000_000 - 1
    assert reference_range("2026-01-01T00:30:00+01:00")[0] == reference_range("2025-12-31T23:30:00Z")[0]
    assert reference_range("2026-01-01T00:00:00.5Z") == (
        reference_range("2026-01-01")[0] + 500_000,
        reference_range("2026-01-01")[0] + 599_999,
    )


def test_date_prefixes_match_reference_semantics(fhir: Fhir) -> None:
    counter = itertools.count()

    @settings(max_examples=40, deadline=None, database=None)
    @given(target=targets(), search=SEARCH_VALUES)
    # "ge" is "gt or eq": a stay that overlaps the start of the searched day only is not ge that day.
    @example(target={"effectivePeriod": {"start": "2025-12-31", "end": "2026-01-01"}}, search="2026-01-01")
    @example(target={"effectivePeriod": {"start": "2026-01-01", "end": "2026-01-02"}}, search="2026-01-01")
    @example(target={"effectivePeriod": {"end": "2025-12-31"}}, search="2026")
    @example(target={"effectiveInstant": "2026-01-01T00:00:00.000001Z"}, search="2025-12-31T19:00:00-05:00")
    def check(target: dict[str, Any], search: str) -> None:
        oid = f"h{next(counter)}"
        put(fhir, observation(oid, **target))
        expected = {p for p in PREFIXES if reference_match(p, reference_range(search), target_range(target))}
        found = {
            p
            for p in PREFIXES
            if fhir.ids(f"Observation?_id={oid}&date={p}{search.replace('+', '%2B')}") == {oid}
        }
        assert found == expected, (target, search)

    check()
