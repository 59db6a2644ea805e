"""Escaping in search values (R4 search.html#escaping): ``\\`` before ``,`` ``$`` ``|`` and before
itself makes the character part of the value; a lone ``\\`` at the end escapes nothing and is refused
with a 400, whatever the parameter type. One splitter serves every separator."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordination_api.errors import FhirError
from coordination_api.search.values import split_or, split_value, unescape
from tests.conftest import Fhir, system_token
from tests.support.search import assert_400, observation, patient, put

BACKSLASH = "%5C"  # so that no URL layer reads the backslash


def _qty(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}


@pytest.mark.parametrize(
    "query",
    [
        f"Patient?family=smith{BACKSLASH}",
        f"Patient?family:exact=a,b{BACKSLASH}",
        f"Patient?identifier=urn:x|v{BACKSLASH}",
        f"Patient?_id=abc{BACKSLASH}",
        f"Patient?birthdate=2020{BACKSLASH}",
        f"Observation?subject=Patient/p1{BACKSLASH}",
        f"Observation?value-quantity=5||mm{BACKSLASH}",
        f"Observation?code-value-quantity=a$5{BACKSLASH}",
        f"Observation?subject:Patient.family=x{BACKSLASH}",
        f"Patient?_has:Observation:subject:code=x{BACKSLASH}",
    ],
)
def test_trailing_lone_backslash_is_refused(fhir: Fhir, query: str) -> None:
    body = assert_400(fhir, query)
    assert "search.html#escaping" in body["issue"][0]["diagnostics"]


def test_trailing_lone_backslash_is_refused_by_audit_event_search_too(fhir: Fhir) -> None:
    auditor = f"Bearer {system_token(fhir.client, 'system/AuditEvent.rs')}"
    assert_400(fhir, f"AuditEvent?_id=abc{BACKSLASH}", Authorization=auditor)


def test_escaped_backslash_is_one_literal_backslash(fhir: Fhir) -> None:
    put(fhir, patient("mid", "back\\slash", identifier=[{"system": "urn:x", "value": "a\\b"}]))
    put(fhir, patient("end", "ends\\", identifier=[{"system": "urn:x", "value": "z\\"}]))
    put(fhir, patient("plain", "backslash", identifier=[{"system": "urn:x", "value": "ab"}]))
    twice = BACKSLASH * 2
    assert fhir.ids(f"Patient?family:exact=back{twice}slash") == {"mid"}
    assert fhir.ids(f"Patient?family:exact=ends{twice}") == {"end"}
    assert fhir.ids(f"Patient?family:exact=ends{twice},backslash") == {"end", "plain"}
    assert fhir.ids(f"Patient?identifier=urn:x|a{twice}b") == {"mid"}
    assert fhir.ids(f"Patient?identifier=urn:x|z{twice},urn:x|ab") == {"end", "plain"}


def test_escaped_backslash_ends_a_composite_component(fhir: Fhir) -> None:
    # The ``,`` then ``$`` then ``|`` splits keep the escapes for the next one: ``a\\`` stays one code.
    put(fhir, observation("slash", "a\\", valueQuantity=_qty(5)))
    put(fhir, observation("plain", "a", valueQuantity=_qty(5)))
    assert fhir.ids(f"Observation?code-value-quantity=a{BACKSLASH * 2}$5") == {"slash"}
    assert fhir.ids("Observation?code-value-quantity=a$5") == {"plain"}


def _escape(piece: str) -> str:
    return "".join("\\" + c if c in ",$|\\" else c for c in piece)


PIECES = st.lists(st.text(alphabet="ab,$|\\", max_size=6), min_size=1, max_size=4)


@given(PIECES, st.sampled_from([",", "$", "|"]))
def test_split_value_inverts_escape_and_join(pieces: list[str], sep: str) -> None:
    joined = sep.join(_escape(p) for p in pieces)
    assert split_value(joined, sep) == pieces
    kept = split_value(joined, sep, keep_escapes=True)
    assert kept == [_escape(p) for p in pieces]
    assert [unescape(k) for k in kept] == pieces


@given(st.lists(PIECES, min_size=1, max_size=3))
def test_nested_splits_recover_every_piece(alternatives: list[list[str]]) -> None:
    # value = alternative,alternative with alternative = component$component (R4 search.html#composite)
    value = ",".join(_escape("$".join(_escape(p) for p in components)) for components in alternatives)
    # The outer escape doubled the inner ones: unescaping once gives back each alternative's text.
    assert [split_value(unescape(a), "$") for a in split_or(value, keep_escapes=True)] == alternatives


@pytest.mark.parametrize("sep", [",", "$", "|", ""])
@pytest.mark.parametrize("keep", [False, True])
def test_split_value_refuses_a_trailing_lone_backslash(sep: str, keep: bool) -> None:
    with pytest.raises(FhirError, match="lone"):
        split_value("a\\\\b\\", sep, keep_escapes=keep)
    assert split_value("a\\\\", sep, keep_escapes=keep) == ["a\\\\" if keep else "a\\"]
