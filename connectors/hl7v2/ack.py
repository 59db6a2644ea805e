"""HL7 v2.5 original-mode acknowledgement (chapter 2: 2.9.2 ACK, 2.15.8 MSA, 2.15.5 ERR).

Always produces a valid ACK, even for input that is not HL7 at all: what can be salvaged from the raw
MSH (sender, control id, trigger, version) is echoed, else defaults. Output is UTF-8 (MSH-18
``UNICODE UTF-8``) with the standard delimiters ``|^~\\&`` and ``\\r`` after every segment.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from connectors.hl7v2.parse import Delimiters, Segment, segment
from coordination_api.coordination.events import EventError

APPLICATION = "COORDINATION"
# HL7 table 0357 (message error condition codes).
ERROR_TEXT = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}
_OUT = Delimiters()
_TRIGGER = re.compile(r"[A-Z0-9]{3}")
_VERSION = re.compile(r"2\.[0-9](\.[0-9])?")
_LOCATION = re.compile(r"([A-Z][A-Z0-9]{2})(?:-([0-9]{1,3}))?")


def _salvage(raw: bytes | None) -> Segment | None:
    """The MSH of unparseable input, read leniently (Latin-1 never fails), if its delimiters look sane."""
    if not raw:
        return None
    start = raw.find(b"MSH")
    if start < 0:
        return None
    text = raw[start : start + 4096].decode("iso-8859-1")
    text = re.split(r"[\r\n]", text, maxsplit=1)[0]
    if len(text) < 8:
        return None
    delimiters = text[3:8]
    if len(set(delimiters)) != 5 or any(c.isalnum() or c.isspace() for c in delimiters):
        return None
    d = Delimiters(delimiters[0], delimiters[1], delimiters[2], delimiters[3], delimiters[4])
    return Segment(text, d, lenient=True)


def _clean(text: str, limit: int = 199) -> str:
    return _OUT.escape(text[:limit])


def _hd(seg: Segment | None, n: int) -> str:
    """An HD field (namespace^universal id^type) re-encoded with our delimiters."""
    if seg is None:
        return ""
    parts = [_clean(seg.get(n, i), 60) for i in (1, 2, 3)]
    return "^".join(parts).rstrip("^")


def ack(msg: Any | None, code: str, error: EventError | None = None, *, raw: bytes | None = None) -> bytes:
    """The ACK for ``msg`` (a parsed ``hl7.Message``) or, when None, for what ``raw`` lets us salvage."""
    if code not in {"AA", "AE", "AR"}:
        raise ValueError(f"Unknown acknowledgement code {code!r}")
    msh: Segment | None = None
    if msg is not None:
        try:
            msh = segment(msg, "MSH", lenient=True)
        except Exception:  # noqa: BLE001 - never fail to acknowledge
            msh = None
    if msh is None:
        msh = _salvage(raw)
    trigger = msh.get(9, 2) if msh else ""
    trigger = trigger if _TRIGGER.fullmatch(trigger) else ""
    version = msh.get(12) if msh else ""
    version = version if _VERSION.fullmatch(version) else "2.5"
    processing = msh.get(11) if msh else ""
    processing = processing if processing in {"P", "T", "D"} else "P"
    control_id = _clean(msh.get(10), 199) if msh else ""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")
    header = [
        "MSH",
        "^~\\&",
        _hd(msh, 5) or APPLICATION,  # MSH-3: we answer as the original receiving application
        _hd(msh, 6),
        _hd(msh, 3),
        _hd(msh, 4),
        now,
        "",
        f"ACK^{trigger}^ACK",
        uuid.uuid4().hex[:20],
        processing,
        version,
        "",
        "",
        "",
        "",
        "",
        "UNICODE UTF-8",
    ]
    segments = ["|".join(header)]
    if code != "AA" and error is None:
        error = EventError(ERROR_TEXT["207"], code="207")
    if code == "AA" or error is None:
        segments.append(f"MSA|AA|{control_id}")
    else:
        error_code = error.code if error.code in ERROR_TEXT else "207"
        text = _clean(str(error), 250)
        segments.append(f"MSA|{code}|{control_id}|{text}")
        location = ""
        match = _LOCATION.fullmatch(error.location or "")
        if match:
            location = f"{match.group(1)}^1^{match.group(2)}" if match.group(2) else f"{match.group(1)}^1"
        # ERR-5 (user table 0533): our own code when table 0357 has none, e.g. a sender not allowed.
        application = getattr(error, "application_code", "")
        err = [
            *("ERR", "", location, f"{error_code}^{ERROR_TEXT[error_code]}^HL70357", "E"),
            f"{application}^^L" if application else "",
            *("", "", text),
        ]
        segments.append("|".join(err))
    return ("\r".join(segments) + "\r").encode("utf-8")
