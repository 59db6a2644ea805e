"""Parsing of search parameter values: prefixes, numbers with precision, tokens, quantities.

R4 search.html sections 3.1.1.4.x (number, date, string, token, reference, quantity, uri).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from coordination_api.errors import Category, FhirError

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def split_value(value: str, sep: str, *, keep_escapes: bool = False) -> list[str]:
    """Split on every unescaped ``sep`` (R4 search.html#escaping: ``\\`` escapes ``,`` ``$`` ``|``
    and itself); ``sep=""`` never splits, it only unescapes.

    The pieces are unescaped, unless ``keep_escapes``: then every ``\\x`` stays for a later split
    on another separator (``,`` then ``$`` then ``|``), which unescapes its own pieces. A lone
    ``\\`` at the end escapes nothing: the value is malformed and refused, not guessed at.
    """
    parts: list[str] = []
    current: list[str] = []
    chars = iter(value)
    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped is None:
                raise FhirError(
                    Category.INVALID,
                    f"Search value '{value}' ends with a lone '\\' (write '\\\\' for a backslash, "
                    "R4 search.html#escaping)",
                )
            if keep_escapes:
                current.append(char)
            current.append(escaped)
        elif char == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def split_or(value: str, *, keep_escapes: bool = False) -> list[str]:
    """The alternatives of a parameter value: its pieces between unescaped commas."""
    return split_value(value, ",", keep_escapes=keep_escapes)


def unescape(value: str) -> str:
    """Drop the backslash of every escape sequence (``\\,`` ``\\|`` ``\\$`` ``\\\\``)."""
    return split_value(value, "")[0]


def split_prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and (value[2].isdigit() or value[2] in "-+."):
        return value[:2], value[2:]
    return "eq", value


@dataclass(frozen=True)
class NumberValue:
    """A searched number and the implicit range its precision gives (R4 search.html#number)."""

    value: float
    low: float
    high: float


def parse_number(text: str, param: str) -> NumberValue:
    try:
        number = Decimal(text)
    except InvalidOperation as exc:
        raise FhirError(Category.INVALID, f"Parameter '{param}': '{text}' is not a number") from exc
    if not number.is_finite():
        raise FhirError(Category.INVALID, f"Parameter '{param}': '{text}' is not a finite number")
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5) * Decimal(10) ** (exponent - 1)
    return NumberValue(float(number), float(number - half), float(number + half))


@dataclass(frozen=True)
class TokenValue:
    system: str | None  # None: any system; "": no system
    code: str | None  # None: any code


def parse_token(text: str) -> TokenValue:
    parts = split_value(text, "|")
    if len(parts) == 1:
        return TokenValue(None, parts[0])
    system = "|".join(parts[:-1])
    code = parts[-1]
    return TokenValue(system, code or None)


@dataclass(frozen=True)
class QuantityValue:
    prefix: str
    number: NumberValue
    system: str | None
    code: str | None


def parse_quantity(text: str, param: str) -> QuantityValue:
    prefix, rest = split_prefix(text)
    parts = split_value(rest, "|")
    number = parse_number(parts[0], param)
    system = parts[1] if len(parts) > 1 and parts[1] else None
    code = parts[2] if len(parts) > 2 and parts[2] else None
    if len(parts) > 3:
        raise FhirError(Category.INVALID, f"Parameter '{param}': malformed quantity '{text}'")
    return QuantityValue(prefix, number, system, code)
