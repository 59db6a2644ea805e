"""What a document recipient's refusal says (its OperationOutcome), for the DocumentReference."""

from __future__ import annotations

import orjson

SERVICE = "dmp-mhd"
NOT_CONFIGURED = "DMP connector not configured (COORDINATION_DMP_RECIPIENT_URL)"


def refusal(raw: bytes) -> str:
    """The diagnostics of an OperationOutcome answer (for the DocumentReference), else ''."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ""
    texts = [
        str(i.get("diagnostics") or i.get("code") or "")
        for i in body.get("issue") or []
        if isinstance(i, dict)
    ]
    return "; ".join(t for t in texts if t)[:500]
