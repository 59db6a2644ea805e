"""Rewriting links inside a transaction Bundle's resources (R4 http.html#trules).

"Servers SHALL replace all matching links in the bundle, whether they are found in the resource
ids, resource references, elements of type uri, url, oid, uuid, and <a href="" & <img src="" in
the narrative. Elements of type canonical are not replaced." Element types come from the models
(``elements``), so a string or canonical that happens to hold a fullUrl stays as it is. A Bundle
inside a resource keeps its own fullUrl space (bundle.html#references) and is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from coordination_api.core.elements import element_types, resource_model

# reference(value, expression) → new Reference.reference; link(value) → new uri/url/oid/uuid value.
ReferenceRewriter = Callable[[str, str], str]
LinkRewriter = Callable[[str], str]

_NARRATIVE_LINK = re.compile(r"""(<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE)


def rewrite_links(
    resource: dict[str, Any], expression: str, reference: ReferenceRewriter, link: LinkRewriter
) -> dict[str, Any]:
    """A copy of ``resource`` with every Reference.reference and link passed through the rewriters."""
    return _Rewriter(reference, link).object(resource, resource_model(resource["resourceType"]), expression)


class _Rewriter:
    def __init__(self, reference: ReferenceRewriter, link: LinkRewriter) -> None:
        self.reference = reference
        self.link = link

    def resource(self, node: Any, expression: str) -> Any:
        if not isinstance(node, dict) or not isinstance(node.get("resourceType"), str):
            return node
        return self.object(node, resource_model(node["resourceType"]), expression)

    def element(self, model: type) -> Callable[[Any, str], Any]:
        return lambda node, expression: (
            self.object(node, model, expression) if isinstance(node, dict) else node
        )

    def object(self, node: dict[str, Any], model: type, expression: str) -> dict[str, Any]:
        types = element_types(model)
        out: dict[str, Any] = {}
        for key, value in node.items():
            element = types.get(key)
            where = f"{expression}.{key}"
            if element is None:
                out[key] = value
            elif model.__name__ == "Reference" and key == "reference" and isinstance(value, str):
                out[key] = self.reference(value, where)
            elif model.__name__ == "Narrative" and key == "div" and isinstance(value, str):
                out[key] = _NARRATIVE_LINK.sub(lambda m: m[1] + m[2] + self.link(m[3]) + m[2], value)
            elif element.link:
                out[key] = _each(value, where, lambda v, _w: self.link(v) if isinstance(v, str) else v)
            elif (
                element.json == "object"
                and element.model is not None
                and element.model.__name__ != "BundleEntry"
            ):
                out[key] = _each(value, where, self.element(element.model))
            elif element.json == "resource":
                out[key] = _each(value, where, self.resource)
            else:
                out[key] = value
        return out


def _each(value: Any, expression: str, action: Callable[[Any, str], Any]) -> Any:
    if isinstance(value, list):
        return [action(item, f"{expression}[{index}]") for index, item in enumerate(value)]
    return action(value, expression)
