"""Notification Bundles (Backport IG "Notifications": a history Bundle whose first entry is the
SubscriptionStatus, in R4 the backport-subscription-status-r4 Parameters)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from coordination_api.search.dates import format_instant
from coordination_api.storage.repository import Repository, Stored, now_us
from coordination_api.subscriptions import model


@dataclass(frozen=True)
class Event:
    number: int
    focus: str  # Type/id/_history/version
    created_us: int


def _ref(base: str, relative: str) -> str:
    return f"{base.rstrip('/')}/{relative}" if base else relative


@dataclass(frozen=True)
class Notice:
    """What a SubscriptionStatus says: the subscription, its status, the notification type
    (handshake, heartbeat, event-notification, query-status, query-event), the events so far, the
    events carried, the payload content (empty, id-only, full-resource) and our base URL."""

    spec: model.Spec
    status: str
    kind: str
    events_since_start: int
    events: list[Event]
    content: str
    base: str


def status_parameters(notice: Notice) -> dict[str, Any]:
    """SubscriptionStatus as backport-subscription-status-r4 (integer64 values travel as strings)."""
    spec, status, kind, base = notice.spec, notice.status, notice.kind, notice.base
    events_since_start, events, content = notice.events_since_start, notice.events, notice.content
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": _ref(base, f"Subscription/{spec.res_id}")}},
    ]
    if spec.topic_url:
        params.append({"name": "topic", "valueCanonical": spec.topic_url})
    params += [
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    for event in events:
        parts: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(event.number)},
            {"name": "timestamp", "valueInstant": format_instant(event.created_us)},
        ]
        if content != "empty":
            res_type, res_id, _h, _v = event.focus.split("/")
            parts.append(
                {"name": "focus", "valueReference": {"reference": _ref(base, f"{res_type}/{res_id}")}}
            )
        params.append({"name": "notification-event", "part": parts})
    return {"resourceType": "Parameters", "meta": {"profile": [model.STATUS_PROFILE]}, "parameter": params}


def focus_versions(repo: Repository, conn: Connection, events: list[Event]) -> dict[str, Stored]:
    """The focus resources as they were at each event (from the history table)."""
    out: dict[str, Stored] = {}
    for event in events:
        res_type, res_id, _h, version = event.focus.split("/")
        stored = repo.version(conn, res_type, res_id, int(version))
        if stored is not None:
            out[event.focus] = stored
    return out


def bundle(notice: Notice, resources: dict[str, Stored] | None = None) -> dict[str, Any]:
    """The notification Bundle (type history); also the $events answer."""
    spec, events, content, base = notice.spec, notice.events, notice.content, notice.base
    parameters = status_parameters(notice)
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": parameters,
            "request": {"method": "GET", "url": _ref(base, f"Subscription/{spec.res_id}/$status")},
            "response": {"status": "200"},
        }
    ]
    if content != "empty":
        for event in events:
            res_type, res_id, _h, version = event.focus.split("/")
            created = version == "1"
            entry: dict[str, Any] = {
                "fullUrl": _ref(base, f"{res_type}/{res_id}"),
                "request": {
                    "method": "POST" if created else "PUT",
                    "url": res_type if created else f"{res_type}/{res_id}",
                },
                "response": {"status": "201" if created else "200", "etag": f'W/"{version}"'},
            }
            stored = (resources or {}).get(event.focus)
            if content == "full-resource" and stored is not None and stored.content is not None:
                entry["resource"] = stored.json()
            entries.append(entry)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "history",
        "timestamp": format_instant(now_us()),
        "entry": entries,
    }
