"""Large transactions take the bulk paths (multi-row INSERT, COPY of index rows on PostgreSQL)."""

from __future__ import annotations

from typing import Any

from tests.conftest import Fhir


def test_large_transaction_is_fully_indexed(fhir: Fhir) -> None:
    entries: list[dict[str, Any]] = []
    for i in range(150):
        urn = f"urn:uuid:00000000-0000-4000-8000-{i:012d}"
        entries.append(
            {
                "fullUrl": urn,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "https://hopital.example.org/ipp", "value": f"IPP{i}"}],
                    "name": [{"family": f"Bulk{i}", "given": ["Anne", "Sophie"]}],
                    "birthDate": f"19{50 + i % 40}-01-0{1 + i % 9}",
                    "telecom": [{"system": "phone", "value": f"06{i:08d}"}],
                    "address": [{"city": "Lyon", "postalCode": "69001", "line": [f"{i} rue Garibaldi"]}],
                },
                "request": {"method": "POST", "url": "Patient"},
            }
        )
        entries.append(
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                    "subject": {"reference": urn},
                    "valueQuantity": {
                        "value": 60 + i % 30,
                        "unit": "kg",
                        "system": "http://unitsofmeasure.org",
                        "code": "kg",
                    },
                    "effectiveDateTime": "2026-01-02T08:00:00+01:00",
                },
                "request": {"method": "POST", "url": "Observation"},
            }
        )
    response = fhir.request(
        "POST",
        "/fhir",
        {"resourceType": "Bundle", "type": "transaction", "entry": entries},
        Prefer="return=minimal",
    )
    assert response.status_code == 200, response.get_json()
    assert fhir.search("Patient?_summary=count")["total"] == 150
    assert len(fhir.ids("Patient?identifier=https://hopital.example.org/ipp|IPP42")) == 1
    assert len(fhir.ids("Patient?family:exact=Bulk149&given=sophie&address-city=lyon")) == 1
    assert (
        fhir.search("Observation?value-quantity=gt85|http://unitsofmeasure.org|kg&_summary=count")["total"]
        == 20
    )
    assert fhir.search("Observation?subject.identifier=IPP7&date=2026-01-02")["total"] == 1
