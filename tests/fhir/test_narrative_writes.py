"""Narrative on every write and in $validate: txt-1 and txt-2 (R4 narrative.html#xhtml), 422 when refused."""

from __future__ import annotations

from typing import Any

from tests.conftest import Fhir
from tests.factories import patient

NS = 'xmlns="http://www.w3.org/1999/xhtml"'
SCRIPT = f"<div {NS}><p>Jean</p><script>alert(document.cookie)</script></div>"


def narrative(div: str) -> dict[str, str]:
    return {"status": "generated", "div": div}


def refused_with(response: Any, key: str, expression: str) -> None:
    assert response.status_code == 422, response.get_json()
    issues = response.get_json()["issue"]
    assert any(
        i["severity"] == "error" and key in i["diagnostics"] and i["expression"] == [expression]
        for i in issues
    ), issues


def test_create_with_script_in_narrative_is_422_and_stores_nothing(fhir: Fhir) -> None:
    refused_with(
        fhir.request("POST", "/fhir/Patient", patient(text=narrative(SCRIPT))), "txt-1", "Patient.text.div"
    )
    assert fhir.ids("Patient") == set()


def test_update_with_non_xml_entity_is_422(fhir: Fhir) -> None:
    created = fhir.create(patient(text=narrative(f"<div {NS}>Jean</div>")))
    body = {**patient(text=narrative(f"<div {NS}>Marque&reg;</div>")), "id": created["id"]}
    refused_with(fhir.request("PUT", f"/fhir/Patient/{created['id']}", body), "txt-1", "Patient.text.div")
    read = fhir.request("GET", f"/fhir/Patient/{created['id']}").get_json()
    assert read["meta"]["versionId"] == "1"


def test_whitespace_only_narrative_is_txt_2(fhir: Fhir) -> None:
    refused_with(
        fhir.request("POST", "/fhir/Patient", patient(text=narrative(f"<div {NS}>  </div>"))),
        "txt-2",
        "Patient.text.div",
    )


def test_contained_resource_narrative_is_checked(fhir: Fhir) -> None:
    bad = {
        "resourceType": "Organization",
        "id": "org",
        "name": "x",
        "text": {"status": "generated", "div": f'<div {NS}><img src="x" onerror="alert(1)"/></div>'},
    }
    body = patient(
        text=narrative(f"<div {NS}>Jean</div>"), contained=[bad], managingOrganization={"reference": "#org"}
    )
    refused_with(fhir.request("POST", "/fhir/Patient", body), "txt-1", "Patient.contained[0].text.div")


def test_transaction_entry_narrative_is_checked(fhir: Fhir) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": patient(text=narrative(f'<div {NS}><a href="javascript:alert(1)">x</a></div>')),
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    response = fhir.request("POST", "/fhir", bundle)
    refused_with(response, "txt-1", "Bundle.entry[0].resource.text.div")
    assert fhir.ids("Patient") == set()


def test_safe_narrative_is_stored_and_served_unchanged(fhir: Fhir) -> None:
    div = f'<div {NS}><p><b>Jean</b> &#174; <a href="#x">lien</a></p><table><tr><td>1</td></tr></table></div>'
    created = fhir.create(patient(text=narrative(div)))
    assert fhir.request("GET", f"/fhir/Patient/{created['id']}").get_json()["text"]["div"] == div


def test_validate_reports_narrative_with_the_other_findings(fhir: Fhir) -> None:
    unknown = "https://example.org/StructureDefinition/nowhere"
    body = patient(text=narrative(SCRIPT), meta={"profile": [unknown]})
    response = fhir.request("POST", "/fhir/Patient/$validate", body)
    assert response.status_code == 200
    found = {(i["severity"], i["expression"][0]) for i in response.get_json()["issue"]}
    assert ("error", "Patient.text.div") in found
    assert ("warning", "Patient.meta.profile[0]") in found  # the profile layer still ran
    assert fhir.ids("Patient") == set()
