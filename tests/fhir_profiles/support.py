"""The FR Core examples of tests/data/fr-core and how a reported finding is matched to an expected one.

expected-errors.json gives, for each expected error, a ``location``: a FHIRPath to the node the
validator should report. Our validator reports concrete paths (``Patient.extension[1].valueAddress
.extension``), expected locations may filter (``Patient.extension.where(url = '…')``), leave out
indexes, or stop at the element whose descendant is reported (``PractitionerRole.practitioner`` for
``….practitioner.reference``). A reported expression matches an expected location when, segment by
segment over the expected one:

- the names are equal, or the expected name is a choice stem (``value``) of the reported JSON name
  (``valueCoding``);
- an expected index is the reported index;
- an expected ``where(url = 'X')`` holds for the reported item (its ``url`` is X, read from the
  instance) or the reported segment has no index (the whole list: a missing slice);

and the reported path may go deeper than the expected one. Kinds are matched too (cardinality →
required/structure, invariant → invariant with its key in the diagnostics, binding → code-invalid,
fixed → value, type → structure), and expected and reported errors are paired one to one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_profiles.issues import ValidationIssue

EXAMPLES = Path(__file__).resolve().parent.parent / "data" / "fr-core"
EXPECTED: dict[str, dict[str, Any]] = json.loads((EXAMPLES / "expected-errors.json").read_text("utf-8"))[
    "examples"
]
FILES = sorted(p.name for p in EXAMPLES.glob("*.json") if p.name != "expected-errors.json")
VALID = [name for name in FILES if EXPECTED.get(name, {}).get("valid")]
INVALID = [name for name in FILES if name in EXPECTED and not EXPECTED[name]["valid"]]

KIND_CODES = {
    "cardinality": {"required", "structure"},
    "invariant": {"invariant"},
    "binding": {"code-invalid"},
    "fixed": {"value"},
    "type": {"structure"},
}


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / name).read_text("utf-8"))
    return data


def profile_of(name: str) -> str:
    """The profile the example is validated against: expected-errors.json, else its meta.profile."""
    if name in EXPECTED:
        return str(EXPECTED[name]["profile"])
    return str(example(name)["meta"]["profile"][0])


def valid_source(name: str) -> str:
    """``patient-ins-invalid-nir-key.json`` → ``patient-ins-valid.json``."""
    return name.split("-invalid-")[0] + "-valid.json"


@dataclass(frozen=True)
class Segment:
    name: str
    index: int | None = None
    where_url: str | None = None


_SEGMENT = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\[(?P<index>\d+)\])?$")
_WHERE = re.compile(r"^where\(url\s*=\s*'(?P<url>[^']*)'\)(?:\[(?P<index>\d+)\])?$")


def _split(path: str) -> list[str]:
    """Dot-separated parts, dots inside quotes or parentheses excluded."""
    parts, depth, quoted, current = [], 0, False, ""
    for char in path:
        if char == "'" and depth >= 0:
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == "." and depth == 0 and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def segments(path: str) -> list[Segment]:
    out: list[Segment] = []
    for part in _split(path):
        where = _WHERE.match(part)
        if where and out:
            index = int(where["index"]) if where["index"] else out[-1].index
            out[-1] = Segment(out[-1].name, index, where["url"])
            continue
        match = _SEGMENT.match(part)
        assert match, f"unsupported path segment {part!r} in {path!r}"
        out.append(Segment(match["name"], int(match["index"]) if match["index"] else None))
    return out


def location_matches(expected: str, reported: str, resource: dict[str, Any]) -> bool:
    want, got = segments(expected), segments(reported)
    if len(got) < len(want) or want[0].name != got[0].name:
        return False
    node: Any = resource
    for position, (w, g) in enumerate(zip(want, got, strict=False)):
        if position:
            if g.name != w.name and not (g.name.startswith(w.name) and g.name[len(w.name)].isupper()):
                return False
            node = node.get(g.name) if isinstance(node, dict) else None
            if g.index is not None:
                node = node[g.index] if isinstance(node, list) and g.index < len(node) else None
        if w.index is not None and w.index != g.index:
            return False
        # where(url = …): the reported item has that url (no index: the whole list, e.g. a missing slice).
        if (
            w.where_url is not None
            and g.index is not None
            and not (isinstance(node, dict) and node.get("url") == w.where_url)
        ):
            return False
    return True


def issue_matches(expected: dict[str, Any], issue: ValidationIssue, resource: dict[str, Any]) -> bool:
    if not issue.is_error or issue.code not in KIND_CODES[expected["kind"]]:
        return False
    if expected["kind"] == "invariant" and expected["key"] not in issue.diagnostics:
        return False
    return location_matches(expected["location"], issue.expression, resource)


def pair(
    expected: list[dict[str, Any]], issues: list[ValidationIssue], resource: dict[str, Any]
) -> dict[int, int]:
    """A maximum one-to-one pairing expected index → issue index (augmenting paths)."""
    owner: dict[int, int] = {}

    def place(e: int, tried: set[int]) -> bool:
        for i, issue in enumerate(issues):
            if i in tried or not issue_matches(expected[e], issue, resource):
                continue
            tried.add(i)
            if i not in owner or place(owner[i], tried):
                owner[i] = e
                return True
        return False

    for e in range(len(expected)):
        place(e, set())
    return {e: i for i, e in owner.items()}
