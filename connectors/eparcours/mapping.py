"""Our resource changes as FHIR R4 messages (messaging.html): one ``message`` Bundle per stored version."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

EVENT_SYSTEM = "https://coordination.cpts.fr/fhir/CodeSystem/eparcours-event"


def message_id(source: str, res_type: str, res_id: str, version: int) -> str:
    """The same resource version always travels under the same message id (receivers deduplicate)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{source}/{res_type}/{res_id}/_history/{version}"))


def message_bundle(
    focus: dict[str, Any], patient: dict[str, Any] | None, *, source: str, sender: str = ""
) -> dict[str, Any]:
    """A FHIR message Bundle telling that ``focus`` (a stored version, with meta) changed."""
    res_type = str(focus["resourceType"])
    res_id = str(focus["id"])
    version = int((focus.get("meta") or {}).get("versionId") or 0)
    base = source.rstrip("/")

    def full_url(kind: str, ident: str) -> str:
        # Absolute when our public base URL is known, else a stable urn:uuid (Bundle.entry.fullUrl).
        if base.startswith(("http://", "https://")):
            return f"{base}/{kind}/{ident}"
        return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{base}/{kind}/{ident}')}"

    focus_url = full_url(res_type, res_id)
    header: dict[str, Any] = {
        "resourceType": "MessageHeader",
        "id": message_id(base, res_type, res_id, version),
        "eventCoding": {"system": EVENT_SYSTEM, "code": f"{res_type.lower()}-change"},
        "source": {"name": sender or "coordination CPTS", "endpoint": base or "urn:coordination-cpts"},
        "focus": [{"reference": focus_url}],
    }
    entries = [
        {"fullUrl": f"urn:uuid:{header['id']}", "resource": header},
        {"fullUrl": focus_url, "resource": focus},
    ]
    if patient is not None:
        entries.append({"fullUrl": full_url("Patient", str(patient["id"])), "resource": patient})
    return {
        "resourceType": "Bundle",
        "id": header["id"],
        "type": "message",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "entry": entries,
    }
