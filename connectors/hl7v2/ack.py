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

from connectors.events import EventError
from connectors.hl7v2.parse import Delimiters, Segment, segment

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


def _version(text: str) -> tuple[int, int]:
    major, _, rest = text.partition(".")
    return int(major), int(rest.partition(".")[0] or 0)


def _err(error: EventError, severity: str, version: tuple[int, int]) -> str:
    """One ERR segment (HL7 v2.5 2.15.5). Up to v2.4 the location and code are ERR-1 (ELD:
    segment^sequence^field^code&text&HL70357); from v2.5, ERR-2 (ERL), ERR-3 (table 0357 code), ERR-4
    severity (E error, W warning), ERR-5 our own code (user table 0533) and ERR-8 the text. ERR-1 is
    kept for backward compatibility until v2.6 (withdrawn in v2.7)."""
    error_code = error.code if error.code in ERROR_TEXT else "207"
    text = _clean(str(error), 250)
    segment_id, field_number = "", ""
    match = _LOCATION.fullmatch(error.location or "")
    if match:
        segment_id, field_number = match.group(1), match.group(2) or ""
    eld = "^".join(
        [
            segment_id,
            "1" if segment_id else "",
            field_number,
            f"{error_code}&{ERROR_TEXT[error_code]}&HL70357",
        ]
    )
    if version < (2, 5):
        return f"ERR|{eld}"
    location = ""
    if segment_id:
        location = f"{segment_id}^1^{field_number}" if field_number else f"{segment_id}^1"
    application = getattr(error, "application_code", "")
    fields = [
        *("ERR", eld if version < (2, 7) else "", location),
        *(f"{error_code}^{ERROR_TEXT[error_code]}^HL70357", severity),
        f"{application}^^L" if application else "",
        *("", "", text),
    ]
    return "|".join(fields)


def ack(
    msg: Any | None,
    code: str,
    error: EventError | None = None,
    *,
    raw: bytes | None = None,
    warnings: list[EventError] | tuple[EventError, ...] = (),
) -> bytes:
    """The ACK for ``msg`` (a parsed ``hl7.Message``) or, when None, for what ``raw`` lets us salvage.
    ``warnings`` add ERR segments of severity W (an AA stays an AA)."""
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
        segments.append(f"MSA|{code}|{control_id}|{_clean(str(error), 250)}")
        segments.append(_err(error, "E", _version(version)))
    segments += [_err(warning, "W", _version(version)) for warning in warnings]
    return ("\r".join(segments) + "\r").encode("utf-8")
