"""Narrative XHTML rules txt-1 and txt-2 (R4 narrative.html#xhtml), including known XSS vectors."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_profiles import base_rules, r4_core
from fhir_profiles.narrative import ATTRIBUTES, ELEMENTS, MAX_FINDINGS, check_narrative

WHERE = "Patient.text.div"
NS = 'xmlns="http://www.w3.org/1999/xhtml"'


def div(inner: str, attributes: str = "") -> str:
    return f"<div {NS}{attributes}>{inner}</div>"


def keys(value: object) -> list[str]:
    return sorted({i.diagnostics.split()[1] for i in check_narrative(value, WHERE)})


VALID = {
    "plain text": div("Jean Dupont"),
    "paragraph and formatting": div("<p><b>Jean</b> <i>Dupont</i>, né le <em>1970-01-01</em></p>"),
    "table": div(
        '<table border="1" cellpadding="2"><thead><tr><th scope="col">A</th></tr></thead>'
        '<tbody><tr><td colspan="1" style="color: red">1</td></tr></tbody></table>'
    ),
    "lists": div("<ul><li>a</li></ul><ol><li>b</li></ol><dl><dt>t</dt><dd>d</dd></dl>"),
    "numeric references": div("&#174; &#xA0; &amp; &lt;script&gt;"),
    "fragment link": div('<a href="#p1">see</a><a name="p1">here</a>'),
    "http link": div('<a href="https://example.org/x?a=1&amp;b=2">x</a>'),
    "relative link": div('<a href="Patient/123">patient</a>'),
    "mailto": div('<a href="mailto:a@example.org">mail</a>'),
    "image by fragment": div('<img src="#photo" alt="photo"/>'),
    "data png image": div('<img src="data:image/png;base64,iVBORw0KGgo=" alt="x"/>'),
    "image alone is content": div('<img src="#photo" alt="photo"/>'),
    "xml:lang and lang": div("<p>x</p>", ' xml:lang="fr" lang="fr"'),
    "comment": div("<!-- generated -->x"),
    "nested div with ids": div('<div id="a" class="c"><span title="t">x</span></div>'),
}

INVALID = {
    # txt-1: XSS vectors
    "script element": div("<script>alert(1)</script>x"),
    "script with escaped namespace trick": div('<script xmlns="http://www.w3.org/1999/xhtml">a()</script>x'),
    "img onerror": div('<img src="x" onerror="alert(1)"/>'),
    "event attribute in upper case": div('<p onClick="alert(1)">x</p>'),
    "javascript href": div('<a href="javascript:alert(1)">x</a>'),
    "javascript href mixed case": div('<a href="JaVaScRiPt:alert(1)">x</a>'),
    "javascript href with tab reference": div('<a href="java&#x09;script:alert(1)">x</a>'),
    "javascript href with leading space": div('<a href=" &#10;javascript:alert(1)">x</a>'),
    "javascript href by numeric references": div('<a href="&#106;avascript&#58;alert(1)">x</a>'),
    "vbscript href": div('<a href="vbscript:msgbox(1)">x</a>'),
    "data html href": div('<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>'),
    "svg data image": div('<img src="data:image/svg+xml;base64,PHN2Zz4="/>'),
    "javascript img src": div('<img src="javascript:alert(1)"/>'),
    "area javascript": div('<map name="m"><area href="javascript:alert(1)" alt="a"/></map>x'),
    "svg onload": div('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>x'),
    "math element": div('<math xmlns="http://www.w3.org/1998/Math/MathML">x</math>'),
    "iframe": div('<iframe src="https://evil.example"/>x'),
    "object": div('<object data="x.swf"/>x'),
    "embed": div('<embed src="x.swf"/>x'),
    "form and input": div('<form action="https://evil.example"><input name="a"/></form>x'),
    "style element": div("<style>body{}</style>x"),
    "link element": div('<link rel="stylesheet" href="https://evil.example/x.css"/>x'),
    "base element": div('<base href="https://evil.example/"/>x'),
    "meta refresh": div('<meta http-equiv="refresh" content="0;url=javascript:alert(1)"/>x'),
    "xlink href": div('<a xmlns:xl="http://www.w3.org/1999/xlink" xl:href="javascript:alert(1)">x</a>'),
    "css expression": div('<p style="width: expression(alert(1))">x</p>'),
    "css expression split by comment": div('<p style="width: expr/**/ession(alert(1))">x</p>'),
    "css escape": div('<p style="background: url(\\6a avascript:alert(1))">x</p>'),
    "css import": div("<p style=\"@import 'https://evil.example/x.css'\">x</p>"),
    "target attribute": div('<a href="#x" target="_blank">x</a>'),
    "src on a": div('<a src="#x">x</a>'),
    "prefixed xhtml element": div('<h:script xmlns:h="http://www.w3.org/1999/xhtml">a()</h:script>x'),
    "cdata hiding markup from xml": div("<![CDATA[><script>alert(1)</script>]]>x"),
    "comment an html parser ends early": div("<!--><script>alert(1)</script>-->x"),
    "comment with markup": div("<!-- <img src=x onerror=alert(1)> -->x"),
    "processing instruction": div('<?xml-stylesheet href="https://evil.example/x.xsl"?>x'),
    "xml declaration": '<?xml version="1.0"?>' + div("x"),
    # txt-1: entities and DTDs (no entity expansion, no external entity)
    "html entity reg": div("&reg;"),
    "html entity nbsp": div("a&nbsp;b"),
    "doctype": '<!DOCTYPE div PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "x.dtd">' + div("x"),
    "billion laughs": '<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>' + div("&b;"),
    "external entity": '<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + div("&x;"),
    "parameter entity": '<!DOCTYPE d [<!ENTITY % p SYSTEM "https://evil.example/x.dtd"> %p;]>' + div("x"),
    # txt-1: not the narrative shape
    "not well formed": div("<p>x"),
    "html void element unclosed": div("a<br>b"),
    "no namespace": "<div>x</div>",
    "wrong namespace": '<div xmlns="http://example.org">x</div>',
    "root is not div": '<p xmlns="http://www.w3.org/1999/xhtml">x</p>',
    "two roots": div("x") + div("y"),
    "not a string": 42,
    "empty string": "",
}

EMPTY = {
    "empty div": div(""),
    "only whitespace": div("  \n\t "),
    "only empty elements": div("<p> </p><br/>"),
    "only a comment": div("<!-- nothing -->"),
}


@pytest.mark.parametrize("value", VALID.values(), ids=VALID.keys())
def test_allowed_narrative_passes(value: str) -> None:
    assert check_narrative(value, WHERE) == []


@pytest.mark.parametrize("value", INVALID.values(), ids=INVALID.keys())
def test_unsafe_or_malformed_narrative_fails_txt_1(value: object) -> None:
    issues = check_narrative(value, WHERE)
    assert "txt-1" in keys(value)
    assert all(i.severity == "error" and i.code == "invariant" for i in issues)
    assert all(i.expression == WHERE for i in issues)


@pytest.mark.parametrize("value", EMPTY.values(), ids=EMPTY.keys())
def test_narrative_without_content_fails_txt_2(value: str) -> None:
    assert keys(value) == ["txt-2"]


def test_undefined_entity_diagnostic_suggests_a_numeric_reference() -> None:
    (issue,) = check_narrative(div("a&nbsp;b"), WHERE)
    assert "&#160;" in issue.diagnostics


def test_entity_expansion_is_never_performed() -> None:
    """A DOCTYPE stops the parse before its internal subset is read (no billion laughs)."""
    bomb = "".join(f'<!ENTITY e{i} "{f"&e{i - 1};" * 10}">' for i in range(1, 12))
    value = f'<!DOCTYPE d [<!ENTITY e0 "x">{bomb}]>' + div("&e11;")
    issues = check_narrative(value, WHERE)
    assert len(issues) == 1 and "DOCTYPE" in issues[0].diagnostics


_SAFE_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="<>&"), min_size=1
).filter(lambda s: s.strip())


@given(
    element=st.sampled_from(sorted(ELEMENTS - {"br", "hr", "img", "area", "col"})),
    attribute=st.sampled_from(sorted(ATTRIBUTES - {"style", "xml:lang"})),
    text=_SAFE_TEXT,
)
def test_any_allowed_element_and_attribute_with_text_passes(element: str, attribute: str, text: str) -> None:
    assert check_narrative(div(f'<{element} {attribute}="v">{text}</{element}>'), WHERE) == []


@given(element=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10))
def test_elements_outside_the_list_fail(element: str) -> None:
    issues = check_narrative(div(f"<{element}>x</{element}>"), WHERE)
    assert bool(issues) == (element not in ELEMENTS)


@given(event=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", max_size=12))
def test_event_attributes_always_fail(event: str) -> None:
    assert keys(div(f'<p on{event}="alert(1)">x</p>')) == ["txt-1"]


@given(
    scheme=st.sampled_from(["javascript", "vbscript", "livescript", "data"]),
    noise=st.lists(st.sampled_from(["", " ", "&#9;", "&#10;", "&#13;", "&#x0A;"]), min_size=1, max_size=4),
    case=st.booleans(),
)
def test_script_urls_fail_whatever_the_noise(scheme: str, noise: list[str], case: bool) -> None:
    name = scheme.upper() if case else scheme
    split = len(name) // 2
    obfuscated = noise[0] + name[:split] + "".join(noise[1:]) + name[split:]
    assert keys(div(f'<a href="{obfuscated}:alert(1)">x</a>')) == ["txt-1"]


def test_many_distinct_findings_are_bounded_and_stop_the_read() -> None:
    # Review 20: an unbounded, de-duplicated-by-scan list made a crafted div cost O(n^2); the list is
    # now capped and the parse stops there (the first finding already refuses the narrative).
    elements = "".join(f"<x{i}>y</x{i}>" for i in range(6000))
    div = f'<div xmlns="http://www.w3.org/1999/xhtml">{elements}</div>'
    issues = check_narrative(div, WHERE)
    assert len(issues) == MAX_FINDINGS + 1
    assert "<x0>" in issues[0].diagnostics
    assert "the rest of the narrative was not read" in issues[-1].diagnostics
    # Repeated identical findings still count once (the positive control of the de-duplication).
    same = '<div xmlns="http://www.w3.org/1999/xhtml">' + "<x>y</x>" * 6000 + "</div>"
    assert len(check_narrative(same, WHERE)) == 1


# -- every Narrative of the core definitions is checked (review 20 F1) ----------------------------------


def _narrative_paths() -> list[tuple[str, dict[str, bool]]]:
    """Every element of type Narrative in the R4 core resource definitions (DomainResource.text of
    each concrete resource, Composition.section.text), and once more through each contentReference
    that leads back to one (Composition.section.section.text); with, per path, whether it repeats."""
    found: list[tuple[str, dict[str, bool]]] = []
    for definition in r4_core.resources("profiles-resources"):
        if definition.get("resourceType") != "StructureDefinition" or definition.get("abstract"):
            continue
        elements = definition.get("snapshot", {}).get("element", [])
        repeats = {e["path"]: str(e.get("max", "1")) != "1" for e in elements}
        narratives = [
            e["path"] for e in elements if any(t.get("code") == "Narrative" for t in e.get("type", []))
        ]
        found += [(path, repeats) for path in narratives]
        for element in elements:
            target = element.get("contentReference", "").removeprefix("#")
            for path in narratives:
                if target and path.startswith(f"{target}."):
                    found.append((element["path"] + path.removeprefix(target), repeats))
    return found


NARRATIVES = _narrative_paths()
HOSTILE = div('<a href="javascript:alert(document.cookie)">x</a><script>alert(1)</script>')


def _placed(path: str, repeats: dict[str, bool]) -> tuple[dict[str, Any], str]:
    """A resource holding the hostile div at ``path`` (a Narrative element), and the div's expression."""
    parts = path.split(".")
    resource: dict[str, Any] = {"resourceType": parts[0]}
    node, expression = resource, parts[0]
    for depth, name in enumerate(parts[1:-1], start=2):
        child: dict[str, Any] = {}
        here = ".".join(parts[:depth])
        # A path through a contentReference is not in the snapshot: it repeats as its target does.
        if repeats.get(here, repeats.get(f"{parts[0]}.{name}", True)):
            node[name], expression = [child], f"{expression}.{name}[0]"
        else:
            node[name], expression = child, f"{expression}.{name}"
        node = child
    node[parts[-1]] = {"status": "generated", "div": HOSTILE}
    return resource, f"{expression}.{parts[-1]}.div"


def test_every_core_narrative_element_is_enumerated() -> None:
    paths = {path for path, _ in NARRATIVES}
    assert {"Patient.text", "Composition.section.text", "Composition.section.section.text"} <= paths
    assert len(paths) > 140  # DomainResource.text of each concrete R4 resource


@pytest.mark.parametrize(("path", "repeats"), NARRATIVES, ids=[p for p, _ in NARRATIVES])
def test_a_hostile_div_is_refused_at_every_narrative_element(path: str, repeats: dict[str, bool]) -> None:
    """The base-rules walk (write path and $validate) reports txt-1 on every Narrative.div it meets:
    at the element itself, in a contained resource and in a Bundle entry (R4 narrative.html)."""
    resource, expression = _placed(path, repeats)
    placements = {
        expression: resource,
        f"Patient.contained[0]{expression.removeprefix(resource['resourceType'])}": {
            "resourceType": "Patient",
            "contained": [{**resource, "id": "c"}],
        },
        f"Bundle.entry[0].resource{expression.removeprefix(resource['resourceType'])}": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": resource}],
        },
    }
    for where, whole in placements.items():
        found = [i for i in base_rules.check(whole) if i.diagnostics.startswith("Constraint txt-1")]
        assert [i.expression for i in found if i.expression == where], (where, found)
        assert all(i.severity == "error" for i in found)
