"""What a Subscription resource asks for, read once per version (R4 subscription.html, Backport IG)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from coordination_api.errors import Category, FhirError
from coordination_api.subscriptions.topics import Topic, find_topic

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
FILTER_CRITERIA = BACKPORT + "backport-filter-criteria"
PAYLOAD_CONTENT = BACKPORT + "backport-payload-content"
HEARTBEAT_PERIOD = BACKPORT + "backport-heartbeat-period"
TIMEOUT = BACKPORT + "backport-timeout"
MAX_COUNT = BACKPORT + "backport-max-count"
STATUS_PROFILE = BACKPORT + "backport-subscription-status-r4"
# Our extension on Subscription.channel: the shared secret of the X-Coordination-Signature HMAC.
SECRET = "https://coordination.cpts.fr/fhir/StructureDefinition/subscription-signature-secret"  # noqa: S105 - an extension URL, not a secret

CONTENTS = ("empty", "id-only", "full-resource")
# R4 subscription-channel-type: rest-hook, and email (MSSanté, connectors/mssante).
CHANNELS = ("rest-hook", "email")
LIVE = ("requested", "active")


def _unprocessable(message: str, expression: str) -> FhirError:
    return FhirError(Category.UNPROCESSABLE, message, expression=expression)


def _extensions(element: Any, url: str) -> list[dict[str, Any]]:
    if not isinstance(element, dict):
        return []
    return [e for e in element.get("extension") or [] if isinstance(e, dict) and e.get("url") == url]


def _params(query: str, expression: str) -> tuple[str, list[tuple[str, str]]]:
    """``Type?name=value&…`` → (Type, params)."""
    res_type, _, text = query.partition("?")
    res_type = res_type.strip().rsplit("/", 1)[-1]
    if not res_type or not res_type[0].isupper():
        raise _unprocessable(f"criteria '{query}' must look like ResourceType?param=value", expression)
    return res_type, parse_qsl(text, keep_blank_values=True)


@dataclass(frozen=True)
class Spec:
    res_id: str
    status: str
    resource_type: str
    params: list[tuple[str, str]]
    topic: Topic | None
    topic_url: str | None
    endpoint: str
    headers: dict[str, str] = field(default_factory=dict)
    mime: str = "application/fhir+json"
    content: str = "empty"
    heartbeat_s: int | None = None
    timeout_s: int | None = None
    secret: str | None = None
    # Backport backport-max-count: most triggering resources in one notification Bundle.
    max_count: int = 1
    # R4 Subscription.end as epoch microseconds: "the time for the server to turn the subscription off".
    end_us: int | None = None
    channel_type: str = "rest-hook"


def _end(value: Any) -> int | None:
    """Subscription.end (an R4 instant; a dateTime with a time zone is accepted too)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise _unprocessable(f"end '{value}' is not an instant", "Subscription.end") from exc
    if moment.tzinfo is None:
        if len(str(value)) > 10:
            raise _unprocessable(f"end '{value}' needs a time zone", "Subscription.end")
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


def _max_count(channel: dict[str, Any]) -> int:
    """backport-max-count on Subscription.channel, a positiveInt (absent: one event per notification)."""
    found = _extensions(channel, MAX_COUNT)
    if not found:
        return 1
    value = found[0].get("valuePositiveInt", found[0].get("valueInteger"))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _unprocessable(
            f"backport-max-count must be a positiveInt, not {value!r}", "Subscription.channel.extension"
        )
    return value


def parse(res_id: str, body: dict[str, Any]) -> Spec:
    """Read a Subscription; what we cannot honour is a 422 (R4 subscription.html: server may reject)."""
    status = str(body.get("status") or "")
    criteria = str(body.get("criteria") or "").strip()
    channel = body.get("channel") if isinstance(body.get("channel"), dict) else {}
    assert isinstance(channel, dict)
    channel_type = str(channel.get("type") or "")
    if channel_type not in CHANNELS:
        raise _unprocessable(
            f"channel.type '{channel_type}' is not supported; use rest-hook or email",
            "Subscription.channel.type",
        )
    endpoint = str(channel.get("endpoint") or "")
    if not endpoint:
        raise _unprocessable(f"a {channel_type} channel needs an endpoint", "Subscription.channel.endpoint")
    if (channel_type == "email") != endpoint.lower().startswith("mailto:"):
        raise _unprocessable(
            "an email channel needs a mailto: endpoint, and a mailto: endpoint the email channel",
            "Subscription.channel.endpoint",
        )
    topic = None
    topic_url = None
    if criteria.startswith(("http://", "https://")):
        # Backport: criteria is a topic canonical; filters ride in backport-filter-criteria extensions.
        topic = find_topic(criteria)
        if topic is None:
            raise _unprocessable(f"unknown subscription topic '{criteria}'", "Subscription.criteria")
        topic_url = criteria
        res_type = topic.resource_type
        params: list[tuple[str, str]] = []
        for ext in _extensions(body.get("_criteria"), FILTER_CRITERIA):
            value = str(ext.get("valueString") or "")
            ftype, fparams = _params(
                value if "?" in value else f"{res_type}?{value}", "Subscription.criteria"
            )
            if ftype != res_type:
                raise _unprocessable(
                    f"filter '{value}' is on {ftype}; topic {topic.key} is about {res_type}",
                    "Subscription.criteria",
                )
            for name, _value in fparams:
                base = name.split(":", 1)[0].split(".", 1)[0]
                if base not in topic.filters:
                    raise _unprocessable(
                        f"filter parameter '{name}' is not allowed by topic {topic.key}; allowed: "
                        + ", ".join(sorted(topic.filters)),
                        "Subscription.criteria",
                    )
            params.extend(fparams)
    else:
        # R4 classic criteria: a search URL, evaluated against each written resource.
        res_type, params = _params(criteria, "Subscription.criteria")
    headers: dict[str, str] = {}
    for raw in channel.get("header") or []:
        name, sep, value = str(raw).partition(":")
        if not sep or not name.strip() or any(c in str(raw) for c in "\r\n"):
            raise _unprocessable(
                f"channel.header '{raw}' must look like 'Name: value'", "Subscription.channel"
            )
        headers[name.strip()] = value.strip()
    payload = channel.get("payload")
    mime = str(payload) if payload else "application/fhir+json"
    content_ext = _extensions(channel.get("_payload"), PAYLOAD_CONTENT)
    if content_ext:
        content = str(content_ext[0].get("valueCode") or "")
        if content not in CONTENTS:
            raise _unprocessable(f"payload content '{content}' is unknown", "Subscription.channel.payload")
    else:
        # R4 subscription.html#channels: no payload → empty notification; a mime type → the resource.
        content = "full-resource" if payload else "empty"
    heartbeat = [e.get("valueUnsignedInt") for e in _extensions(channel, HEARTBEAT_PERIOD)]
    timeout = [e.get("valueUnsignedInt") for e in _extensions(channel, TIMEOUT)]
    secret = [e.get("valueString") for e in _extensions(channel, SECRET)]
    return Spec(
        res_id=res_id,
        status=status,
        resource_type=res_type,
        params=params,
        topic=topic,
        topic_url=topic_url,
        endpoint=endpoint,
        headers=headers,
        mime=mime,
        content=content,
        heartbeat_s=int(heartbeat[0]) if heartbeat and heartbeat[0] else None,
        timeout_s=int(timeout[0]) if timeout and timeout[0] else None,
        secret=str(secret[0]) if secret and secret[0] else None,
        max_count=_max_count(channel),
        end_us=_end(body.get("end")),
        channel_type=channel_type,
    )
