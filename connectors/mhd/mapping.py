"""ITI-65 both ways: the Provide Document Bundle we send, and the transaction-response we read."""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from connectors.errors import ConnectorError, Failure
from connectors.mhd.errors import SERVICE

MHD = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
SUBMISSION_SET_PROFILE = MHD + "IHE.MHD.Minimal.SubmissionSet"
DOCUMENT_PROFILE = MHD + "IHE.MHD.Minimal.DocumentReference"
SOURCE_ID = MHD + "ihe-sourceId"
LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"


@dataclass(frozen=True)
class ProvideResult:
    """What the recipient answered: the locations it gave each entry (SubmissionSet first)."""

    locations: list[str] = field(default_factory=list)


def parse_response(raw: bytes, sent: int) -> ProvideResult:
    """A transaction-response with one 2xx entry per entry sent, else BAD_ANSWER / REFUSED."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConnectorError(SERVICE, Failure.BAD_ANSWER, "answer is not JSON") from exc
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise ConnectorError(SERVICE, Failure.BAD_ANSWER, "answer is not a Bundle")
    if body.get("type") != "transaction-response":
        raise ConnectorError(SERVICE, Failure.BAD_ANSWER, f"answer is a '{body.get('type')}' Bundle")
    entries = [e for e in body.get("entry") or [] if isinstance(e, dict)]
    if len(entries) != sent:
        raise ConnectorError(SERVICE, Failure.BAD_ANSWER, f"{len(entries)} answers for {sent} entries")
    locations = []
    for entry in entries:
        response = entry.get("response")
        answer: dict[str, Any] = response if isinstance(response, dict) else {}
        status = str(answer.get("status") or "")
        if not status[:1] == "2":
            raise ConnectorError(SERVICE, Failure.REFUSED, f"an entry was answered '{status or 'nothing'}'")
        locations.append(str(answer.get("location") or ""))
    return ProvideResult(locations)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def provide_bundle(
    document: dict[str, Any],
    content: bytes,
    content_type: str,
    patient: dict[str, Any],
    ins: dict[str, Any],
    *,
    source_oid: str,
) -> dict[str, Any]:
    """The ITI-65 Bundle for one document (MHD Minimal: SubmissionSet, DocumentReference, Binary).

    ``ins`` is the Patient's INS identifier: the DMP knows patients by their INS only.
    """
    list_url, doc_url, binary_url = (f"urn:uuid:{uuid.uuid4()}" for _ in range(3))
    subject: dict[str, Any] = {"identifier": {"system": ins["system"], "value": ins["value"]}}
    if patient.get("name"):
        subject["display"] = " ".join(
            [*(patient["name"][0].get("given") or []), str(patient["name"][0].get("family") or "")]
        ).strip()
    attachment = {
        "contentType": content_type,
        "url": binary_url,
        "size": len(content),
        # R4 Attachment.hash: base64 of the SHA-1 of the data.
        "hash": base64.b64encode(hashlib.sha1(content, usedforsecurity=False).digest()).decode(),
    }
    first = (document.get("content") or [{}])[0]
    for key in ("title", "language", "creation"):
        if isinstance(first.get("attachment"), dict) and key in first["attachment"]:
            attachment[key] = first["attachment"][key]
    master = document.get("masterIdentifier") or {
        "system": "urn:ietf:rfc:3986",
        "value": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, str(document.get('id')))}",
    }
    reference: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "meta": {"profile": [DOCUMENT_PROFILE]},
        "masterIdentifier": master,
        "status": "current",
        "subject": subject,
        "date": document.get("date") or _now(),
        "content": [{"attachment": attachment, **({"format": first["format"]} if "format" in first else {})}],
    }
    for key in ("type", "category", "author", "description", "securityLabel", "context", "docStatus"):
        if key in document:
            reference[key] = document[key]
    if "author" in reference:  # local references mean nothing to the recipient: keep identifiers/display
        reference["author"] = [
            {k: v for k, v in a.items() if k in ("identifier", "display")} for a in reference["author"]
        ]
        reference["author"] = [a for a in reference["author"] if a] or []
        if not reference["author"]:
            del reference["author"]
    if "context" in reference:
        reference["context"] = {
            k: v
            for k, v in reference["context"].items()
            if k in ("period", "facilityType", "practiceSetting")
        }
    submission = {
        "resourceType": "List",
        "meta": {"profile": [SUBMISSION_SET_PROFILE]},
        "extension": [{"url": SOURCE_ID, "valueIdentifier": {"value": f"urn:oid:{source_oid}"}}],
        "identifier": [{"use": "usual", "system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}],
        "status": "current",
        "mode": "working",
        "code": {"coding": [{"system": LIST_TYPES, "code": "submissionset"}]},
        "subject": subject,
        "date": _now(),
        "entry": [{"item": {"reference": doc_url}}],
    }
    binary = {
        "resourceType": "Binary",
        "contentType": content_type,
        "data": base64.b64encode(content).decode(),
    }
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [MHD + "IHE.MHD.Minimal.ProvideBundle"]},
        "type": "transaction",
        "entry": [
            {"fullUrl": list_url, "resource": submission, "request": {"method": "POST", "url": "List"}},
            {
                "fullUrl": doc_url,
                "resource": reference,
                "request": {"method": "POST", "url": "DocumentReference"},
            },
            {"fullUrl": binary_url, "resource": binary, "request": {"method": "POST", "url": "Binary"}},
        ],
    }
