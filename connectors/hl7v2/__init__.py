"""HL7 v2.5 ADT intake (IHE PAM France): parse, map to an EncounterEvent, acknowledge, MLLP transport."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from connectors.events import EncounterEvent, EventError
from connectors.hl7v2.ack import ack
from connectors.hl7v2.mapping import Options, to_event
from connectors.hl7v2.parse import Limits, decode, parse

__all__ = ["Limits", "Options", "ack", "decode", "handle", "parse", "to_event"]

log = logging.getLogger(__name__)


def handle(
    raw: bytes,
    process: Callable[[EncounterEvent], Any],
    limits: Limits | None = None,
    options: Options | None = None,
) -> bytes:
    """One raw message → its ACK bytes: parse (within ``limits``), map (with ``options``),
    ``process(event)``, AA (with the mapping's warnings as ERR severity W); EventError → AE, or AR when
    rejected (unsupported, unparseable, or a failure unrelated to the content such as the database
    being unavailable: HL7 v2.5 2.9.2.2); any other failure → AE 207 with a generic text (nothing of
    the message is logged)."""
    msg = None
    event: EncounterEvent | None = None
    try:
        msg = parse(raw, limits)
        event = to_event(msg, options)
        process(event)
    except EventError as error:
        return ack(msg, "AR" if error.rejected else "AE", error, raw=raw)
    except Exception as exc:  # noqa: BLE001 - the sender gets an AE, the listener keeps running
        where = f"message {event.message_id[:40]!r} from {event.sender[:80]!r}" if event else "a message"
        log.error("HL7 v2: processing %s failed (%s)", where, type(exc).__name__)
        return ack(msg, "AE", EventError("Application internal error", code="207"), raw=raw)
    return ack(msg, "AA", None, raw=raw, warnings=event.warnings)
