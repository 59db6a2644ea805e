"""HL7 v2.5 message decoding and parsing (HL7 v2.5 chapter 2: 2.5 message construction, 2.7 escapes).

Character set (MSH-18, HL7 table 0211; IHE PAM France 2.x, "MSH-18"): ``UNICODE UTF-8``, ``8859/1``,
``8859/15`` and ``ASCII`` are honoured. PAM France requires MSH-18, but senders that omit it are common;
we then read the message as UTF-8 when the bytes are valid UTF-8 and as ISO-8859-1 otherwise (a Latin-1
French name with accents is never valid UTF-8, while ASCII reads the same in both). A declared charset the
bytes do not match is rejected rather than guessed: a wrongly decoded name is a patient-safety risk.

Caps (issue 16): a field over ``Limits.max_field_bytes`` (UTF-8) or with more than
``Limits.max_repetitions`` repetitions gets an AE naming the field and the limit, before anything is
parsed further. Control characters: FHIR R4 strings hold no character below U+0020 but TAB, CR and LF
(datatypes.html#string). No field this intake maps is multi-line (names, addresses, identifiers, codes,
displays), so in every mapped value a line break or tab (``\\.br\\``, ``\\X0D0A\\``, ``\\X09\\``)
is replaced by a space, and any other control character (C0, DEL, C1; raw or from ``\\Xhh\\``) is refused
with an AE naming the field (MSH-10 and the sender fields included). Acknowledgements read leniently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import hl7

from connectors.events import EventError

# HL7 table 0211 values → Python codecs.
CHARSETS = {
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "8859/1": "iso-8859-1",
    "8859/15": "iso-8859-15",
    "ASCII": "ascii",
}
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_LINE = re.compile(r"[\t\r\n]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Limits:
    """Per-field caps (settings COORDINATION_HL7V2_MAX_REPETITIONS / _MAX_FIELD_BYTES)."""

    max_repetitions: int = 100
    max_field_bytes: int = 65_536


def check_limits(text: str, limits: Limits) -> None:
    """AE (102, the field named) for a field over the size cap or with too many repetitions."""
    field_sep, repetition = text[3], text[5]
    for seg in text.split("\r"):
        seg_id = seg[:3]
        offset = 1 if seg_id == "MSH" else 0  # MSH-1 is the field separator itself
        for index, field in enumerate(seg.split(field_sep)[1:], start=1):
            number = index + offset
            if seg_id == "MSH" and number == 2:
                continue  # the encoding characters hold the repetition separator
            count = field.count(repetition) + 1
            if count > limits.max_repetitions:
                raise EventError(
                    f"{seg_id}-{number}: {count} repetitions, more than the limit of "
                    f"{limits.max_repetitions} (COORDINATION_HL7V2_MAX_REPETITIONS)",
                    code="102",
                    location=f"{seg_id}-{number}",
                )
            if len(field) * 4 > limits.max_field_bytes and len(field.encode()) > limits.max_field_bytes:
                raise EventError(
                    f"{seg_id}-{number}: field larger than {limits.max_field_bytes} bytes "
                    "(limit COORDINATION_HL7V2_MAX_FIELD_BYTES)",
                    code="102",
                    location=f"{seg_id}-{number}",
                )


def clean_text(text: str, where: str) -> str:
    """A mapped value as a FHIR string: line breaks and tabs become a space, other controls refused."""
    if _CONTROL.search(text):
        char = _CONTROL.search(text).group()  # type: ignore[union-attr]
        raise EventError(
            f"{where}: control character U+{ord(char):04X} not allowed (FHIR string)",
            code="102",
            location=where,
        )
    return _LINE.sub(" ", text) if _LINE.search(text) else text


def _first_segment(raw: bytes) -> bytes | None:
    start = raw.find(b"MSH")
    if start < 0:
        return None
    end = len(raw)
    for terminator in (b"\r", b"\n"):
        pos = raw.find(terminator, start)
        if 0 <= pos < end:
            end = pos
    return raw[start:end]


def declared_charset(raw: bytes) -> str | None:
    """The MSH-18 value (first repetition, HL7 v2.5 2.15.9.18), or None when absent."""
    msh = _first_segment(raw)
    if msh is None or len(msh) < 8:
        return None
    fields = msh.split(msh[3:4])
    if len(fields) < 18:
        return None
    repetition = msh[5:6] if msh[5:6] else b"~"
    value = fields[17].split(repetition)[0].strip()
    return value.decode("ascii", "replace") or None


def decode(raw: bytes) -> str:
    """Bytes → text per MSH-18 (see the module docstring for the default when MSH-18 is absent)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    charset = declared_charset(raw)
    if charset is None:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("iso-8859-1")
    codec = CHARSETS.get(charset.upper())
    if codec is None:
        raise EventError(
            f"Unsupported character set {charset[:40]!r}", code="103", location="MSH-18", rejected=True
        )
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        raise EventError(
            f"The message bytes are not valid {charset}", code="102", location="MSH-18", rejected=True
        ) from None


def parse(raw: bytes, limits: Limits | None = None) -> Any:
    """Bytes → ``hl7.Message``; EventError(rejected) when this is not one parseable HL7 v2 message.

    Segment separators ``\\r\\n`` and ``\\n`` are normalised to ``\\r`` (HL7 v2.5 2.5.3 requires ``\\r``;
    files and some interfaces use line feeds). Code 100: empty, no MSH first, a batch, a bad segment id;
    102: MSH-1/MSH-2 separators unusable.
    """
    if not raw or not raw.strip(b" \t\r\n\x0b\x1c\x00"):
        raise EventError("Empty message", code="100", location="MSH", rejected=True)
    text = decode(raw).replace("\r\n", "\r").replace("\n", "\r").strip(" \t\r\x0b\x1c\x00\ufeff")
    if not text.startswith("MSH"):
        raise EventError(
            "The message does not start with an MSH segment", code="100", location="MSH", rejected=True
        )
    check_separators(text)
    check_limits(text, limits or Limits())
    for segment in text.split("\r"):
        if not segment:
            continue
        if not _SEGMENT_ID.fullmatch(segment[:3]) or (len(segment) > 3 and segment[3] != text[3]):
            raise EventError("Malformed segment identifier", code="100", rejected=True)
    if text.count("\rMSH" + text[3]) or any(s in text for s in ("\rBHS", "\rFHS")):
        raise EventError("More than one message (batches are not accepted)", code="100", rejected=True)
    try:
        return hl7.parse(text)
    except Exception:  # noqa: BLE001 - python-hl7 raises assorted errors on malformed input
        raise EventError("The message cannot be parsed", code="100", rejected=True) from None


def check_separators(text: str) -> None:
    """MSH-1 and MSH-2 (HL7 v2.5 2.5.4): five distinct, non-alphanumeric, printable delimiters."""
    delimiters = text[3:8]
    field_sep = delimiters[:1]
    if (
        len(delimiters) < 5
        or len(set(delimiters)) != 5
        or any(c.isalnum() or c.isspace() or ord(c) < 32 for c in delimiters)
    ):
        raise EventError("Invalid MSH-1/MSH-2 delimiters", code="102", location="MSH-2", rejected=True)
    rest = text[8:9]
    if rest and rest != field_sep and not (rest == "#" and text[9:10] == field_sep):
        # A fifth encoding character (v2.7 truncation '#') is tolerated; anything else is not.
        raise EventError("Invalid MSH-2 encoding characters", code="102", location="MSH-2", rejected=True)


class Delimiters:
    """The separators of one message and the HL7 v2.5 2.7 escape sequences."""

    def __init__(
        self,
        field: str = "|",
        component: str = "^",
        repetition: str = "~",
        escape: str = "\\",
        subcomponent: str = "&",
    ) -> None:
        self.field = field
        self.component = component
        self.repetition = repetition
        self.escape_char = escape
        self.subcomponent = subcomponent

    @classmethod
    def of(cls, msg: Any) -> Delimiters:
        seps: str = msg.separators  # "\r" field repetition component subcomponent
        return cls(seps[1], seps[3], seps[2], msg.esc, seps[4])

    def unescape(self, value: str) -> str:
        """HL7 v2.5 2.7.4-2.7.5: \\F\\ \\S\\ \\R\\ \\T\\ \\E\\, \\Xhh..\\ (hex), \\.br\\; others dropped."""
        esc = self.escape_char
        if esc not in value:
            return value
        out: list[str] = []
        i = 0
        while i < len(value):
            char = value[i]
            end = value.find(esc, i + 1) if char == esc else -1
            if end < 0:
                out.append(char)
                i += 1
                continue
            sequence = value[i + 1 : end]
            i = end + 1
            simple = {
                "F": self.field,
                "S": self.component,
                "R": self.repetition,
                "T": self.subcomponent,
                "E": esc,
                ".br": "\n",
                ".sp": "\n",
            }
            if sequence in simple:
                out.append(simple[sequence])
            elif sequence[:1] == "X" and re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", sequence[1:]):
                data = bytes.fromhex(sequence[1:])
                try:
                    out.append(data.decode("utf-8"))
                except UnicodeDecodeError:
                    out.append(data.decode("iso-8859-1"))
        return "".join(out)

    def escape(self, value: str) -> str:
        """The reverse for our own output; line breaks become \\.br\\, other controls are dropped."""
        esc = self.escape_char
        table = {
            esc: f"{esc}E{esc}",
            self.field: f"{esc}F{esc}",
            self.component: f"{esc}S{esc}",
            self.repetition: f"{esc}R{esc}",
            self.subcomponent: f"{esc}T{esc}",
        }
        out = []
        for char in value.replace("\r\n", "\n"):
            if char in table:
                out.append(table[char])
            elif char in "\r\n":
                out.append(f"{esc}.br{esc}")
            elif ord(char) >= 32:
                out.append(char)
        return "".join(out)


Components = list[list[str]]  # components → subcomponents, unescaped


class Segment:
    """One segment's fields by HL7 sequence number (``seg[3]`` is PID-3; for MSH, ``seg[9]`` is MSH-9)."""

    def __init__(self, text: str, delimiters: Delimiters, *, lenient: bool = False) -> None:
        self.d = delimiters
        self.lenient = lenient  # acknowledgements: controls dropped, never refused
        self.id = text[:3]
        parts = text.split(delimiters.field)
        if self.id == "MSH":
            parts.insert(1, delimiters.field)
        self.fields = parts

    def raw(self, n: int) -> str:
        return self.fields[n] if 0 <= n < len(self.fields) else ""

    def repetitions(self, n: int) -> list[Components]:
        """Field n: repetitions → components → subcomponents, unescaped (empty list when absent)."""
        raw = self.raw(n)
        if not raw or (self.id == "MSH" and n in (1, 2)):
            return [[[raw]]] if raw else []
        d = self.d
        return [
            [[self._text(d.unescape(s), n) for s in c.split(d.subcomponent)] for c in rep.split(d.component)]
            for rep in raw.split(d.repetition)
        ]

    def _text(self, text: str, n: int) -> str:
        if self.lenient:
            return _CONTROL.sub("", _LINE.sub(" ", text))
        return clean_text(text, f"{self.id}-{n}")

    def get(self, n: int, component: int = 1, subcomponent: int = 1, repetition: int = 1) -> str:
        """One value (1-based indexes), stripped; '' when absent. ``""`` (HL7 null) reads as ''."""
        reps = self.repetitions(n)
        return value(reps[repetition - 1], component, subcomponent) if len(reps) >= repetition else ""


def value(components: Components, component: int = 1, subcomponent: int = 1) -> str:
    """One component/subcomponent of a repetition; HL7 explicit null ``""`` reads as ''."""
    if len(components) < component or len(components[component - 1]) < subcomponent:
        return ""
    text = components[component - 1][subcomponent - 1].strip()
    return "" if text == '""' else text


def segments(msg: Any, segment_id: str, *, lenient: bool = False) -> list[Segment]:
    """All segments with that id, in message order."""
    delimiters = Delimiters.of(msg)
    found = []
    for seg in msg:
        text = str(seg)
        if text[:3] == segment_id:
            found.append(Segment(text, delimiters, lenient=lenient))
    return found


def segment(msg: Any, segment_id: str, *, lenient: bool = False) -> Segment | None:
    found = segments(msg, segment_id, lenient=lenient)
    return found[0] if found else None
