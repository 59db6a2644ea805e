"""The subscription topics this server ships (Backport IG: topic-based subscriptions in R4).

A topic-based Subscription names one of these canonicals in ``Subscription.criteria`` and narrows it
with ``backport-filter-criteria`` extensions (search parameters of the topic's resource type).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TOPIC_BASE = "https://coordination.cpts.fr/fhir/SubscriptionTopic/"

Body = dict[str, Any]


@dataclass(frozen=True)
class Topic:
    key: str
    resource_type: str
    description: str
    # (previous version or None when created, new version) -> does this write trigger the topic?
    trigger: Callable[[Body | None, Body], bool]
    filters: frozenset[str]

    @property
    def url(self) -> str:
        return TOPIC_BASE + self.key


def _becomes(status: str) -> Callable[[Body | None, Body], bool]:
    def trigger(before: Body | None, after: Body) -> bool:
        return after.get("status") == status and (before is None or before.get("status") != status)

    return trigger


def _any_write(_before: Body | None, _after: Body) -> bool:
    return True


def _owner(body: Body | None) -> Any:
    owner = (body or {}).get("owner")
    return owner.get("reference") or owner.get("identifier") if isinstance(owner, dict) else None


def _owner_set(before: Body | None, after: Body) -> bool:
    return _owner(after) is not None and _owner(before) != _owner(after)


_ENCOUNTER = frozenset(
    {"patient", "subject", "identifier", "class", "type", "service-provider", "location", "participant"}
)

TOPICS: tuple[Topic, ...] = (
    Topic(
        "encounter-discharge",
        "Encounter",
        "An Encounter is created or updated with status finished (it was not finished before)",
        _becomes("finished"),
        _ENCOUNTER,
    ),
    Topic(
        "encounter-admission",
        "Encounter",
        "An Encounter is created or updated with status in-progress (it was not in-progress before)",
        _becomes("in-progress"),
        _ENCOUNTER,
    ),
    Topic(
        "careplan-change",
        "CarePlan",
        "A CarePlan is created or updated",
        _any_write,
        frozenset({"patient", "subject", "status", "category", "care-team", "instantiates-canonical"}),
    ),
    Topic(
        "task-assigned",
        "Task",
        "A Task gets an owner, or its owner changes",
        _owner_set,
        frozenset({"owner", "patient", "subject", "status", "code", "focus", "requester", "business-status"}),
    ),
)


def find_topic(canonical: str) -> Topic | None:
    """The shipped topic a canonical names (canonical URLs contain the topic key; a |version is ignored)."""
    url = canonical.split("|", 1)[0].rstrip("/")
    for topic in TOPICS:
        if url.rsplit("/", 1)[-1] == topic.key or url.endswith(topic.key):
            return topic
    return None
