"""FHIRPath ``extension(url)`` selects every extension with that url (R4 fhirpath.html#functions), as
the readers of the resource see them: fhirpathpy 2.2 alone returns only the first (review 22, F1)."""

from __future__ import annotations

from coordination_api.search.expressions import compile_part

URL = "https://example.org/ext"


def test_extension_url_selects_every_matching_extension() -> None:
    resource = {
        "resourceType": "CommunicationRequest",
        "extension": [
            {"url": URL, "valueCoding": {"code": "A"}},
            {"url": "https://example.org/other", "valueCoding": {"code": "B"}},
            {"url": URL, "valueCodeableConcept": {"coding": [{"code": "C"}]}},
        ],
    }
    extract = compile_part(f"CommunicationRequest.extension('{URL}').value")
    assert extract(resource) == [{"code": "A"}, {"coding": [{"code": "C"}]}]
    assert [e["url"] for e in compile_part(f"CommunicationRequest.extension('{URL}')")(resource)] == [
        URL,
        URL,
    ]
