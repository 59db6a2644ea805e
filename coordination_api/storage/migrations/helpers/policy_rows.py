"""Frozen for migrations 0003 and 0006: the access-policy rows of a CareTeam, a Consent, a
PractitionerRole and a Task, as ``auth/policy.py`` derived them when this copy was taken (its
``care_team_rows``, ``consent_rows``, ``affiliation_rows``, ``task_access_rows`` and their date helpers,
unchanged). Each function returns rows for the columns its table has at the revision that creates it.

Never edit these: a change of the rule that needs existing rows rewritten is a new migration with its
own copy.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime
from typing import Any

ACTOR_TYPES = ("Practitioner", "PractitionerRole", "Organization")
_REF = re.compile(r"^(Practitioner|PractitionerRole|Organization|Patient)/([A-Za-z0-9\-.]{1,64})$")
_NEVER = 2**62
_LONG_AGO = -(2**62)
_LEAP_SECOND = re.compile(r"(T\d{2}:\d{2}):60(\.\d+)?")
OPEN_TASK_STATUSES = frozenset({"requested", "received", "accepted", "ready", "in-progress", "on-hold"})


class _UnreadableDateError(ValueError):
    pass


def _ref(reference: Any) -> tuple[str, str] | None:
    if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
        return None
    match = _REF.search(reference["reference"].split("/_history/")[0])
    return (match.group(1), match.group(2)) if match else None


def _instant(text: Any, *, end: bool) -> int | None:
    if text is None:
        return None
    if not isinstance(text, str) or not text:
        raise _UnreadableDateError(repr(text))
    text = _LEAP_SECOND.sub(r"\1:59.999999", text)
    try:
        if len(text) == 4:
            low, step = datetime(int(text), 1, 1, tzinfo=UTC), "year"
        elif len(text) == 7:
            low, step = datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC), "month"
        elif len(text) == 10:
            low, step = datetime.fromisoformat(text).replace(tzinfo=UTC), "day"
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return int(moment.timestamp() * 1_000_000)
    except (ValueError, OverflowError) as exc:
        raise _UnreadableDateError(text) from exc
    start = int(low.timestamp() * 1_000_000)
    if not end:
        return start
    if step == "year":
        days = 366 if calendar.isleap(low.year) else 365
    elif step == "month":
        days = calendar.monthrange(low.year, low.month)[1]
    else:
        days = 1
    return start + days * 86_400_000_000 - 1


def _period(period: Any, *, grant: bool = True) -> tuple[int | None, int | None]:
    if not isinstance(period, dict):
        return None, None
    bounds: list[int | None] = []
    for key, end in (("start", False), ("end", True)):
        try:
            bounds.append(_instant(period.get(key), end=end))
        except _UnreadableDateError:
            if not grant:
                bounds.append(None)
            else:
                bounds.append(_LONG_AGO if end else _NEVER)
    return bounds[0], bounds[1]


def _narrow(
    outer: tuple[int | None, int | None], inner: tuple[int | None, int | None]
) -> tuple[int | None, int | None]:
    starts = [v for v in (outer[0], inner[0]) if v is not None]
    ends = [v for v in (outer[1], inner[1]) if v is not None]
    return (max(starts) if starts else None, min(ends) if ends else None)


def care_team_rows(careteam: dict[str, Any]) -> list[dict[str, Any]]:
    """care_team_access: patient_id, member, start_us, end_us."""
    if careteam.get("status") != "active":
        return []
    subject = _ref(careteam.get("subject"))
    if subject is None or subject[0] != "Patient":
        return []
    team_period = _period(careteam.get("period"))
    rows = []
    for participant in careteam.get("participant") or []:
        member = _ref(participant.get("member")) if isinstance(participant, dict) else None
        if member is None or member[0] not in ACTOR_TYPES:
            continue
        start, end = _narrow(team_period, _period(participant.get("period")))
        rows.append(
            {"patient_id": subject[1], "member": f"{member[0]}/{member[1]}", "start_us": start, "end_us": end}
        )
    return rows


def consent_rows(consent: dict[str, Any]) -> list[dict[str, Any]]:
    """consent_deny: patient_id, actor, start_us, end_us."""
    if consent.get("status") != "active":
        return []
    patient = _ref(consent.get("patient"))
    if patient is None or patient[0] != "Patient":
        return []
    rows: list[dict[str, Any]] = []

    def walk(provision: Any, inherited: str | None, bounds: tuple[int | None, int | None]) -> None:
        if not isinstance(provision, dict):
            return
        kind = provision.get("type") or inherited
        bounds = _narrow(bounds, _period(provision.get("period"), grant=False))
        if kind == "deny":
            actors = [_ref(a.get("reference")) for a in provision.get("actor") or [] if isinstance(a, dict)]
            names = [f"{a[0]}/{a[1]}" for a in actors if a is not None and a[0] in ACTOR_TYPES]
            if not provision.get("actor"):
                names = ["*"]
            for name in names:
                rows.append(
                    {"patient_id": patient[1], "actor": name, "start_us": bounds[0], "end_us": bounds[1]}
                )
        for child in provision.get("provision") or []:
            walk(child, None, bounds)

    walk(consent.get("provision"), None, (None, None))
    return rows


def affiliation_rows(role: dict[str, Any]) -> list[dict[str, Any]]:
    """practitioner_affiliation: practitioner_id, role_id, organization, start_us, end_us."""
    if role.get("active") is False:
        return []
    practitioner = _ref(role.get("practitioner"))
    if practitioner is None or practitioner[0] != "Practitioner":
        return []
    organization = _ref(role.get("organization"))
    start, end = _period(role.get("period"))
    return [
        {
            "practitioner_id": practitioner[1],
            "role_id": str(role.get("id", "")),
            "organization": f"Organization/{organization[1]}" if organization else None,
            "start_us": start,
            "end_us": end,
        }
    ]


def task_access_rows(task: dict[str, Any]) -> list[dict[str, Any]]:
    """task_access: patient_id, member, kind (offer | owner), start_us, end_us."""
    patient = _ref(task.get("for"))
    status = task.get("status")
    if patient is None or patient[0] != "Patient" or status not in OPEN_TASK_STATUSES:
        return []
    rows: list[dict[str, Any]] = []
    if status == "requested":
        restriction = task.get("restriction")
        if not isinstance(restriction, dict):
            restriction = {}
        start, end = _period(restriction.get("period"))
        for recipient in restriction.get("recipient") or []:
            actor = _ref(recipient)
            if actor is not None and actor[0] in ACTOR_TYPES:
                rows.append(
                    {
                        "patient_id": patient[1],
                        "member": f"{actor[0]}/{actor[1]}",
                        "kind": "offer",
                        "start_us": start,
                        "end_us": end,
                    }
                )
    owner = _ref(task.get("owner"))
    if owner is not None and owner[0] in ACTOR_TYPES:
        rows.append(
            {
                "patient_id": patient[1],
                "member": f"{owner[0]}/{owner[1]}",
                "kind": "owner",
                "start_us": None,
                "end_us": None,
            }
        )
    return rows
