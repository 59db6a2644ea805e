"""A notification Bundle as a mail: a readable text part, the Bundle attached and, per
DocumentReference carried with its content, an IHE XDM zip (ITI TF-3 4.2.1)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import zipfile
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import orjson


def _status(bundle: dict[str, Any]) -> dict[str, Any]:
    params = bundle["entry"][0]["resource"].get("parameter") or []
    out: dict[str, Any] = {"events": []}
    for p in params:
        if p.get("name") == "notification-event":
            part = {
                q["name"]: next((v for k, v in q.items() if k.startswith("value")), None) for q in p["part"]
            }
            ref = part.get("focus")
            out["events"].append(
                (part.get("event-number"), ref.get("reference") if isinstance(ref, dict) else "")
            )
        else:
            out[p.get("name")] = next((v for k, v in p.items() if k.startswith("value")), None)
    return out


def _reference(value: Any) -> str:
    return str(value.get("reference") or "") if isinstance(value, dict) else ""


def _summary(resource: dict[str, Any]) -> str:
    """One readable line about a resource (no free text of the record beyond its type and dates)."""
    words = [str(resource.get("resourceType")), f"status {resource.get('status', '?')}"]
    period = resource.get("period") if isinstance(resource.get("period"), dict) else {}
    if period:
        words.append(f"from {period.get('start', '?')} to {period.get('end', '…')}")
    kind = resource.get("class")
    if isinstance(kind, dict) and kind.get("code"):
        words.append(f"class {kind['code']}")
    if resource.get("date"):
        words.append(f"date {resource['date']}")
    return ", ".join(words)


def _document(resource: dict[str, Any]) -> tuple[bytes, str, str] | None:
    contents = resource.get("content") or []
    attachment = contents[0].get("attachment") if contents and isinstance(contents[0], dict) else None
    if not isinstance(attachment, dict) or not isinstance(attachment.get("data"), str):
        return None
    try:
        data = base64.b64decode(attachment["data"], validate=True)
    except (binascii.Error, ValueError):
        return None
    return (
        data,
        str(attachment.get("contentType") or "application/octet-stream"),
        str(attachment.get("title") or ""),
    )


_EXT = {
    "application/pdf": "PDF",
    "text/xml": "XML",
    "application/xml": "XML",
    "text/plain": "TXT",
    "text/html": "HTM",
}


def xdm_zip(resource: dict[str, Any], data: bytes, content_type: str, title: str) -> bytes:
    """An IHE XDM package (ITI TF-1 16, TF-3 4.2.1) holding one document and its XDS metadata."""
    ext = _EXT.get(content_type, "BIN")
    doc_name = f"DOC0001.{ext}"
    unique = str(resource.get("id"))
    patient = _reference(resource.get("subject"))
    sha1 = hashlib.sha1(data, usedforsecurity=False).hexdigest()
    rim = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
    metadata = f"""<?xml version="1.0" encoding="UTF-8"?>
<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0" xmlns:rim="{rim}">
 <rim:RegistryObjectList>
  <rim:ExtrinsicObject id="Document01" mimeType={quoteattr(content_type)}
    objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">
   <rim:Slot name="hash"><rim:ValueList><rim:Value>{sha1}</rim:Value></rim:ValueList></rim:Slot>
   <rim:Slot name="size"><rim:ValueList><rim:Value>{len(data)}</rim:Value></rim:ValueList></rim:Slot>
   <rim:Slot name="URI"><rim:ValueList><rim:Value>{doc_name}</rim:Value></rim:ValueList></rim:Slot>
   <rim:Slot name="sourcePatientId">
    <rim:ValueList><rim:Value>{escape(patient)}</rim:Value></rim:ValueList>
   </rim:Slot>
   <rim:Name><rim:LocalizedString value={quoteattr(title or "Document")}/></rim:Name>
   <rim:ExternalIdentifier id="ei01" registryObject="Document01" value={quoteattr(unique)}
     identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab">
    <rim:Name><rim:LocalizedString value="XDSDocumentEntry.uniqueId"/></rim:Name>
   </rim:ExternalIdentifier>
  </rim:ExtrinsicObject>
  <rim:RegistryPackage id="SubmissionSet01">
   <rim:Name><rim:LocalizedString value="Notification CPTS"/></rim:Name>
  </rim:RegistryPackage>
  <rim:Association id="as01" associationType="urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
    sourceObject="SubmissionSet01" targetObject="Document01"/>
 </rim:RegistryObjectList>
</lcm:SubmitObjectsRequest>
"""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("IHE_XDM/SUBSET01/METADATA.XML", metadata)
        z.writestr(f"IHE_XDM/SUBSET01/{doc_name}", data)
        z.writestr(
            "INDEX.HTM",
            f'<html><body><a href="IHE_XDM/SUBSET01/{doc_name}">'
            f"{escape(title or doc_name)}</a></body></html>",
        )
        z.writestr("README.TXT", "IHE XDM package sent by the CPTS coordination platform.\r\n")
    return buffer.getvalue()


def notification_message(
    bundle: dict[str, Any], *, to: str, sender: str, subject_prefix: str = "[CPTS]"
) -> EmailMessage:
    """The mail of one notification Bundle (Backport IG notification, history Bundle)."""
    status = _status(bundle)
    kind = str(status.get("type") or "event-notification")
    topic = str(status.get("topic") or "")
    events = status["events"]
    numbers = ", ".join(str(n) for n, _ in events) or "-"
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1] if "@" in sender else None)
    message["Subject"] = (
        f"{subject_prefix} {kind}: {topic.rsplit('/', 1)[-1] or 'subscription'} — event {numbers}"
    )
    lines = [
        "Notification de la plateforme de coordination de la CPTS / care-coordination notification.",
        "",
        f"Type: {kind}",
        f"Subscription: {_reference(status.get('subscription'))}",
    ]
    if topic:
        lines.append(f"Topic: {topic}")
    lines.append(f"Events: {numbers}")
    resources = {e.get("fullUrl"): e.get("resource") for e in bundle["entry"][1:] if isinstance(e, dict)}
    for number, ref in events:
        line = f"  - event {number}: {ref}"
        found = next(
            (
                r
                for url, r in resources.items()
                if isinstance(r, dict) and url and ref and str(url).endswith(ref.split("/_history")[0])
            ),
            None,
        )
        if isinstance(found, dict):
            line += f" ({_summary(found)})"
        lines.append(line)
    lines += ["", "The FHIR notification is attached (notification.json)."]
    message.set_content("\n".join(lines))
    message.add_attachment(
        orjson.dumps(bundle), maintype="application", subtype="fhir+json", filename="notification.json"
    )
    for resource in resources.values():
        if isinstance(resource, dict) and resource.get("resourceType") == "DocumentReference":
            document = _document(resource)
            if document is not None:
                package = xdm_zip(resource, *document)
                message.add_attachment(
                    package, maintype="application", subtype="zip", filename=f"xdm-{resource.get('id')}.zip"
                )
    return message
