"""Narrative XHTML rules: R4 narrative.html#xhtml, invariants txt-1 and txt-2.

txt-1: "The narrative SHALL contain only the basic html formatting elements and attributes described
in chapters 7-11 (except section 4 of chapter 9) and 15 of the HTML 4.0 standard, <a> elements (either
name or href), images and internally contained style attributes". txt-2: "The narrative SHALL have some
non-whitespace content".

The div is XML (R4 narrative.html#xhtml): it is parsed with expat, with no DTD (a DOCTYPE or entity
declaration is refused before its content is read, so neither external entities nor entity expansion
can happen); entities other than the five of XML (``&reg;``, ``&nbsp;``) are errors, numeric
references are fine. The element and attribute lists are those of the HL7 validator
(org.hl7.fhir.validation XhtmlValidator). It lets any URL through; viewers render narrative as HTML, so
here URLs with a scheme are limited to a safe list (no ``javascript:``), and markup that an HTML
parser reads differently from an XML parser (CDATA sections, processing instructions, comments
holding ``<``/``>``) is refused.
"""

from __future__ import annotations

import re
from typing import Any
from xml.parsers import expat

from fhir_profiles.issues import ValidationIssue

XHTML_NS = "http://www.w3.org/1999/xhtml"
XML_NS = "http://www.w3.org/XML/1998/namespace"

TXT_1 = "txt-1"
TXT_2 = "txt-2"

ELEMENTS = frozenset(
    {
        "p", "br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "a", "span", "b", "em", "i", "strong",
        "small", "big", "tt", "dfn", "q", "var", "abbr", "acronym", "cite", "blockquote", "hr", "address",
        "bdo", "kbd", "sub", "sup", "ul", "ol", "li", "dl", "dt", "dd", "pre", "table", "caption",
        "colgroup", "col", "thead", "tr", "tfoot", "tbody", "th", "td", "code", "samp", "img", "map",
        "area",
    }
)  # fmt: skip
# Attributes allowed on every element.
ATTRIBUTES = frozenset(
    {
        "title", "style", "class", "id", "lang", "xml:lang", "dir", "accesskey", "tabindex",
        # tables
        "span", "width", "align", "valign", "char", "charoff", "abbr", "axis", "headers", "scope",
        "rowspan", "colspan",
    }
)  # fmt: skip
# Attributes allowed on one element, as element.attribute.
ELEMENT_ATTRIBUTES = frozenset(
    {
        "a.href", "a.name", "a.charset", "a.type", "a.hreflang", "a.rel", "a.rev", "a.shape", "a.coords",
        "img.src", "img.border", "img.alt", "img.longdesc", "img.height", "img.width", "img.usemap",
        "img.ismap", "map.name", "area.shape", "area.coords", "area.href", "area.nohref", "area.alt",
        "blockquote.cite", "q.cite", "table.summary", "table.width", "table.border", "table.frame",
        "table.rules", "table.cellspacing", "table.cellpadding", "pre.space", "td.nowrap",
    }
)  # fmt: skip
# Attributes holding a URL, and the schemes they may use (a URL without a scheme is relative: fine).
URL_ATTRIBUTES = frozenset(
    {"a.href", "area.href", "img.src", "img.longdesc", "img.usemap", "blockquote.cite", "q.cite"}
)
SAFE_SCHEMES = frozenset({"http", "https", "mailto", "tel", "urn", "ftp"})
# data: only for images, and only raster types (an SVG document may carry script).
DATA_IMAGE = re.compile(r"data:image/(png|jpeg|jpg|gif|webp|bmp)[;,]", re.IGNORECASE)
_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):")
# Browsers drop ASCII tab/newline inside a URL and leading C0 controls/spaces (WHATWG URL parsing).
_URL_NOISE = re.compile(r"[\x00-\x20\x7f]")
# CSS that runs code or fetches more CSS (old IE expression(), XBL bindings, @import, escapes hiding them).
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_CSS_UNSAFE = ("expression(", "javascript:", "vbscript:", "behavior:", "-moz-binding", "@import", "\\")


class _RefusedError(Exception):
    """Stops the parse: the rest of the document is not read."""


# Distinct findings listed per narrative: one refuses it; a bounded list keeps the check linear (an
# unbounded list let a crafted 10 MB div cost minutes of CPU, review 20).
MAX_FINDINGS = 20


def _issue(key: str, detail: str, expression: str) -> ValidationIssue:
    return ValidationIssue("error", "invariant", f"Constraint {key} failed: {detail}", expression)


def _url_problem(value: str, element_attribute: str) -> str | None:
    cleaned = _URL_NOISE.sub("", value).lower()
    if not cleaned:
        return "an empty URL"
    match = _SCHEME.match(cleaned)
    if match is None:
        return None  # relative reference, fragment (#id)
    scheme = match.group(1)
    if scheme in SAFE_SCHEMES:
        return None
    if scheme == "data" and element_attribute == "img.src" and DATA_IMAGE.match(cleaned):
        return None
    return f"the URL scheme '{scheme}:'"


def _style_problem(value: str) -> str | None:
    cleaned = _URL_NOISE.sub("", _CSS_COMMENT.sub("", value)).lower()
    for token in _CSS_UNSAFE:
        if token in cleaned:
            return f"'{token}' in a style attribute"
    return None


class _Checker:
    """expat handlers collecting findings; structural dangers raise _RefusedError to stop reading."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.issues: list[ValidationIssue] = []
        self._seen: set[str] = set()
        self.depth = 0
        self.content = False

    def fail(self, key: str, detail: str) -> None:
        issue = _issue(key, detail, self.expression)
        if issue.diagnostics in self._seen:
            return
        self._seen.add(issue.diagnostics)
        self.issues.append(issue)
        if len(self.issues) >= MAX_FINDINGS:
            self.issues.append(
                _issue(
                    key,
                    f"more than {MAX_FINDINGS} findings; the rest of the narrative was not read",
                    self.expression,
                )
            )
            raise _RefusedError

    def refuse(self, detail: str) -> None:
        self.fail(TXT_1, detail)
        raise _RefusedError

    # -- handlers ---------------------------------------------------------------------------------

    def start(self, name: str, attributes: dict[str, str]) -> None:
        namespace, local, prefix = [*name.split(" "), "", ""][:3]
        if not local:  # no namespace at all: expat gives the bare name
            namespace, local = "", namespace
        if self.depth == 0:
            if local != "div":
                self.fail(TXT_1, f"the narrative must be a <div>, not <{local}>")
            if namespace != XHTML_NS:
                self.fail(TXT_1, f'the <div> must declare xmlns="{XHTML_NS}"')
        elif namespace != XHTML_NS:
            self.fail(TXT_1, f"element <{local}> is not in the XHTML namespace")
        if prefix:
            self.fail(TXT_1, f"element <{prefix}:{local}> has a namespace prefix; XHTML is unprefixed")
        self.depth += 1
        if local not in ELEMENTS:
            self.fail(TXT_1, f"element <{local}> is not allowed in narrative")
        if local == "img":
            self.content = True
        for raw, value in attributes.items():
            self.attribute(local, raw, value)

    def attribute(self, element: str, raw: str, value: str) -> None:
        parts = raw.split(" ")
        if len(parts) == 1:
            attribute = parts[0]
        elif parts[0] == XML_NS:
            attribute = f"xml:{parts[1]}"
        else:
            self.fail(TXT_1, f"attribute '{parts[1]}' on <{element}> is in a foreign namespace")
            return
        combined = f"{element}.{attribute}"
        if attribute.lower().startswith("on"):
            self.fail(TXT_1, f"event attribute '{attribute}' on <{element}> is not allowed")
            return
        if attribute not in ATTRIBUTES and combined not in ELEMENT_ATTRIBUTES:
            self.fail(TXT_1, f"attribute '{attribute}' on <{element}> is not allowed")
            return
        if combined in URL_ATTRIBUTES:
            problem = _url_problem(value, combined)
            if problem:
                self.fail(TXT_1, f"{combined} uses {problem}")
        if attribute == "style":
            problem = _style_problem(value)
            if problem:
                self.fail(TXT_1, f"{problem} on <{element}>")

    def end(self, _name: str) -> None:
        self.depth -= 1

    def text(self, data: str) -> None:
        if data.strip():
            self.content = True

    def comment(self, data: str) -> None:
        # An HTML parser ends "<!-->" at once and reads "<!--->" oddly: what follows would be live markup.
        if data.startswith((">", "->")) or "<" in data or ">" in data or data.lstrip().startswith("DOCTYPE"):
            self.fail(TXT_1, "a comment that an HTML parser would read differently")

    def doctype(self, *_args: Any) -> None:
        self.refuse("a DOCTYPE declaration is not allowed (no DTD in narrative)")

    def entity_declaration(self, *_args: Any) -> None:
        self.refuse("entity declarations are not allowed")

    def processing_instruction(self, target: str, _data: str) -> None:
        self.fail(TXT_1, f"processing instruction <?{target} ...?> is not allowed")

    def xml_declaration(self, *_args: Any) -> None:
        self.fail(TXT_1, "the narrative is a <div> element, not an XML document with a declaration")

    def cdata(self) -> None:
        # HTML parsers read "<![CDATA[" as a bogus comment ending at the first ">": what follows is live.
        self.fail(TXT_1, "CDATA sections are not allowed; escape the text instead")

    def external_entity(self, *_args: Any) -> int:
        self.refuse("external entities are not allowed")
        return 0


def check_narrative(div: Any, expression: str) -> list[ValidationIssue]:
    """Findings of txt-1 and txt-2 for one ``Narrative.div`` value (empty list when it is fine)."""
    if not isinstance(div, str):
        return [_issue(TXT_1, "the narrative div must be a string of XHTML", expression)]
    checker = _Checker(expression)
    parser = expat.ParserCreate(encoding="utf-8", namespace_separator=" ")
    parser.namespace_prefixes = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = checker.start
    parser.EndElementHandler = checker.end
    parser.CharacterDataHandler = checker.text
    parser.CommentHandler = checker.comment
    parser.StartDoctypeDeclHandler = checker.doctype
    parser.EntityDeclHandler = checker.entity_declaration
    parser.UnparsedEntityDeclHandler = checker.entity_declaration
    parser.ProcessingInstructionHandler = checker.processing_instruction
    parser.XmlDeclHandler = checker.xml_declaration
    parser.StartCdataSectionHandler = checker.cdata
    parser.ExternalEntityRefHandler = checker.external_entity
    try:
        parser.Parse(div.encode("utf-8"), True)
    except _RefusedError:
        return checker.issues
    except expat.ExpatError as exc:
        # R4 narrative.html#xhtml: the div is well-formed XML; undefined entities (&nbsp;) land here.
        reason = expat.ErrorString(exc.code)
        if exc.code == expat.errors.codes[expat.errors.XML_ERROR_UNDEFINED_ENTITY]:
            reason = "an entity that XML does not define (use a numeric reference, e.g. &#160; for &nbsp;)"
        checker.issues.append(
            _issue(TXT_1, f"the narrative is not well-formed XHTML: {reason} (line {exc.lineno})", expression)
        )
        return checker.issues
    if not checker.content:
        checker.issues.append(_issue(TXT_2, "the narrative has no non-whitespace content", expression))
    return checker.issues
