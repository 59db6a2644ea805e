"""Who may apply a protocol: a practitioner only for a patient of their care team."""

from __future__ import annotations

from flask import Flask

from coordination_api.accounts import create_practitioner_user
from tests.conftest import Fhir
from tests.coordination.protocols.builders import care_team, load_library, new_patient
from tests.support.auth import PASSWORD, user_token

PLAN = "retour-domicile-personne-agee"


def test_a_practitioner_applies_only_for_patients_of_their_care_team(app: Flask, fhir: Fhir) -> None:
    load_library(app)
    doctor = create_practitioner_user(app, "dr", "10101010101", PASSWORD, "House", "Greg")
    mine = new_patient(fhir)
    care_team(fhir, mine, {"medecin-traitant": f"Practitioner/{doctor}"})
    other = new_patient(fhir)
    user = app.test_client()
    user.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {user_token(app)}"
    as_doctor = Fhir(user)
    allowed = as_doctor.request("GET", f"/fhir/PlanDefinition/{PLAN}/$apply?subject={mine}")
    assert allowed.status_code == 200, allowed.get_json()
    tasks = [r for r in allowed.get_json()["contained"] if r["resourceType"] == "Task"]
    owners = [t.get("owner") for t in tasks]
    assert owners.count({"reference": f"Practitioner/{doctor}"}) == 1  # the médecin traitant's consultation
    refused = as_doctor.request("GET", f"/fhir/PlanDefinition/{PLAN}/$apply?subject={other}")
    assert refused.status_code == 403
