"""The JSON representation of FHIR elements (R4 json.html), checked and explained in our words.

Every structure error names the element (its FHIRPath), the FHIR type expected and what was found:
``Invalid value 19800101 for Patient.birthDate: expected a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD) as a
JSON string, found a number``. ``check`` walks the JSON before the models see it (they coerce and
word their errors for programmers); ``explain`` words what the models still refuse (a date that is no
calendar date, a code with spaces…), so that no library sentence reaches a client.
"""

from __future__ import annotations

from typing import Any

import orjson

from coordination_api.core.elements import ElementType, choice_groups, element_types, resource_model
from coordination_api.errors import Category, FhirError

# R4 datatypes.html, in the words of the definitions (regexes shortened to what a person types).
_TYPE_WORDS = {
    "boolean": "a FHIR boolean",
    "integer": "a FHIR integer (a whole number)",
    "integer64": "a FHIR integer64 (a whole number)",
    "positiveInt": "a FHIR positiveInt (a whole number, 1 or more)",
    "unsignedInt": "a FHIR unsignedInt (a whole number, 0 or more)",
    "decimal": "a FHIR decimal (a number)",
    "string": "a FHIR string",
    "markdown": "FHIR markdown (text)",
    "code": "a FHIR code (text without leading or trailing spaces)",
    "id": "a FHIR id (1 to 64 letters, digits, '-' or '.')",
    "uri": "a FHIR uri",
    "url": "a FHIR url",
    "canonical": "a FHIR canonical (a URL, optionally followed by |version)",
    "oid": "a FHIR oid (urn:oid:…)",
    "uuid": "a FHIR uuid (urn:uuid:…)",
    "date": "a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)",
    "dateTime": "a FHIR dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss with a time zone)",
    "instant": "a FHIR instant (YYYY-MM-DDThh:mm:ss with a time zone)",
    "time": "a FHIR time (hh:mm:ss)",
    "base64Binary": "a FHIR base64Binary (base64 text)",
    "xhtml": "FHIR narrative XHTML (a <div> element)",
    "FHIRPrimitiveExtension": "the id and extensions of a primitive value",
    "Resource": "a FHIR resource (with its resourceType)",
}
_JSON_FORM = {
    "boolean": "JSON true or false",
    "integer": "a JSON number",
    "decimal": "a JSON number",
    "string": "a JSON string",
    "object": "a JSON object",
    "resource": "a JSON object",
}
_SHOWN = 80  # characters of an offending value quoted in diagnostics


def describe(element: ElementType) -> str:
    """``a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)``, ``a FHIR HumanName``…"""
    return _TYPE_WORDS.get(element.fhir, f"a FHIR {element.fhir}" if element.fhir else "a FHIR element")


def _each(element: ElementType) -> str:
    return f"{describe(element)} as {_JSON_FORM[element.json]}"


def found(value: Any) -> str:
    """What a JSON value is, as a person says it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def shown(value: Any) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _kind_ok(value: Any, kind: str) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "decimal":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    return isinstance(value, dict)  # object, resource


def _refuse(value: Any, at: str, text: str) -> FhirError:
    return FhirError(Category.STRUCTURE, f"Invalid value {shown(value)} for {at}: {text}", expression=at)


def check(node: dict[str, Any], model: type, expression: str) -> None:
    """FHIR JSON is typed (R4 json.html#primitive: ``"active": "yes"`` is not a boolean; #arrays: an
    element that repeats is an array, one that does not never is). The models coerce such values
    (pydantic's lax mode) while we store the JSON as sent, so every element's JSON type is checked
    here; ``null`` stands only in arrays of primitives (#primitive). Unknown elements and missing
    required ones are the model's to report; codes of required bindings the base rules'."""
    types = element_types(model)
    for key, value in node.items():
        element = types.get(key)
        if element is None or key == "resourceType" or element.json == "other":
            continue
        where = f"{expression}.{key}"
        if value is None:
            raise FhirError(
                Category.STRUCTURE, f"{where} is null; omit an element that has no value", expression=where
            )
        if element.many and not isinstance(value, list):
            raise _refuse(
                value,
                where,
                f"expected a JSON array (the element repeats), each item {_each(element)}, "
                f"found {found(value)}",
            )
        if not element.many and isinstance(value, list):
            raise _refuse(
                value,
                where,
                f"expected {_each(element)}, found an array (the element does not repeat)",
            )
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            at = where if index is None else f"{where}[{index}]"
            if item is None:
                if element.json in {"object", "resource"} and not key.startswith("_"):
                    raise FhirError(
                        Category.STRUCTURE,
                        f"{at} is null; omit the item (only arrays of primitive values hold null, "
                        "R4 json.html#primitive)",
                        expression=at,
                    )
                continue
            if isinstance(item, str) and "\x00" in item:
                # R4 datatypes.html#string: no control characters; PostgreSQL text cannot hold NUL.
                raise FhirError(Category.STRUCTURE, f"{at} contains a NUL character", expression=at)
            if not _kind_ok(item, element.json):
                raise _refuse(item, at, f"expected {_each(element)}, found {found(item)}")
            if element.json == "object" and element.model is not None:
                check(item, element.model, at)
                _check_choices(item, element.model, at)
            elif element.json == "resource":
                kind = item.get("resourceType")
                if isinstance(kind, str) and _known(kind):
                    nested = resource_model(kind)
                    check(item, nested, at)
                    _check_choices(item, nested, at)


def check_resource(resource: dict[str, Any], model: type, expression: str) -> None:
    check(resource, model, expression)
    _check_choices(resource, model, expression)


def _known(resource_type: str) -> bool:
    try:
        resource_model(resource_type)
    except (KeyError, ValueError, LookupError):
        return False
    return True


def _check_choices(node: dict[str, Any], model: type, expression: str) -> None:
    """A choice element (``value[x]``) has one type at most (R4 formats.html#choice), and one when
    it is required."""
    for prefix, (required, names) in choice_groups(model).items():
        present = list(dict.fromkeys(k.removeprefix("_") for k in node if k.removeprefix("_") in names))
        if len(present) > 1:
            at = f"{expression}.{present[1]}"
            raise FhirError(
                Category.STRUCTURE,
                f"{expression}.{prefix}[x] has one type only: found {' and '.join(present)}",
                expression=at,
            )
        if required and not present:
            raise FhirError(
                Category.REQUIRED,
                f"Missing required element '{prefix}[x]' ({expression}.{prefix}[x]): one of "
                f"{', '.join(names)}",
                expression=f"{expression}.{prefix}[x]",
            )


def element_at(resource: dict[str, Any], model: type, loc: tuple[int | str, ...]) -> ElementType | None:
    """The element a model error's location points at, walking the JSON alongside the definitions."""
    node: Any = resource
    current: type | None = model
    element: ElementType | None = None
    for part in loc:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            continue
        if not isinstance(node, dict) or current is None or part not in node:
            continue  # a tag of the model's own (``function-after[...]``), not a JSON property
        element = element_types(current).get(str(part))
        node = node[part]
        if element is None:
            return None
        current = element.model
        if element.json == "resource":
            kind = node.get("resourceType") if isinstance(node, dict) else None
            current = resource_model(kind) if isinstance(kind, str) and _known(kind) else None
    return element


def explain(error: dict[str, Any], expression: str, element: ElementType | None) -> str:
    """A model error in our words; the library's own sentence never reaches the client."""
    kind = str(error.get("type", ""))
    loc = error.get("loc", ())
    name = str(loc[-1]) if loc else "?"
    if kind == "extra_forbidden":
        return f"Unknown element '{name}' ({expression})"
    if kind in {"missing", "model_field_validation.missing"}:
        return f"Missing required element '{name}' ({expression})"
    value = error.get("input")
    expected = describe(element) if element is not None else "a valid value for this element"
    if isinstance(value, str | int | float | bool):
        return f"Invalid value {shown(value)} for {expression}: expected {expected}"
    return f"Invalid content for {expression}: expected {expected}"
