"""Review rev2: the patient page says when a list was cut (``Liste limitée``). Since pages/data.search
adds ``_total=none`` (3acafbe), ``Found.total`` is None and pages/patient.search's ``more`` is never set."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from coordination_api.pages.patient import MAX_PLANS
from tests.conftest import Fhir
from tests.support.pages import build_cpts, sign_in


def test_a_cut_list_of_care_plans_is_said_to_be_cut(app: Flask, client: FlaskClient, fhir: Fhir) -> None:
    cpts = build_cpts(app, fhir)
    for i in range(MAX_PLANS + 1):
        fhir.create(
            {
                "resourceType": "CarePlan",
                "status": "active",
                "intent": "plan",
                "title": f"Plan {i}",
                "subject": {"reference": cpts.patient},
            }
        )
    html = (
        sign_in(app, "dr-martin")
        .get(f"/app/{cpts.patient.replace('Patient/', 'patients/')}")
        .get_data(as_text=True)
    )
    assert html.count("Plan ") >= MAX_PLANS
    assert "Liste limitée" in html
