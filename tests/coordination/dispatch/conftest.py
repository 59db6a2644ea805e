"""Fixtures of the dispatch tests: a small CPTS (patient, care team, nurses of the area) built over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from coordination_api.config import DispatchSettings
from coordination_api.coordination.dispatch import DISPATCH_STATUS, Dispatcher
from coordination_api.storage.repository import now_us
from tests.conftest import Fhir
from tests.subscriptions.conftest import pump, receiver, sub_app, sub_fhir  # noqa: F401 (fixtures)
from tests.support.auth import practitioner_user, user_token

PROFESSION = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
NURSE = {"coding": [{"system": PROFESSION, "code": "60", "display": "Infirmier"}]}
DOCTOR = {"coding": [{"system": PROFESSION, "code": "10", "display": "Médecin"}]}
CARE_CIRCLE = "https://coordination.example.org/fhir/CodeSystem/cercle-de-soins-role"
COORDINATOR = {"coding": [{"system": CARE_CIRCLE, "code": "coordinateur-parcours"}]}
USUAL_NURSE = {"coding": [{"system": CARE_CIRCLE, "code": "infirmier-habituel"}]}
GP = {
    "coding": [
        {
            "system": "https://mos.esante.gouv.fr/NOS/TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale",
            "code": "SM54",
        }
    ]
}
INSEE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code"
COMMUNES = "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM"
US = 1_000_000


def address(postal: str | None = None, insee: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"city": "Bordeaux"}
    if postal:
        out["postalCode"] = postal
    if insee:
        out["extension"] = [{"url": INSEE, "valueCoding": {"system": COMMUNES, "code": insee}}]
    return out


def as_token(app: Flask, token: str) -> Fhir:
    client: FlaskClient = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return Fhir(client)


def stage(task: dict[str, Any]) -> str:
    coding = task["businessStatus"]["coding"][0]
    assert coding["system"] == DISPATCH_STATUS
    code: str = coding["code"]
    return code


def recipients(task: dict[str, Any]) -> list[str]:
    return [r["reference"] for r in task.get("restriction", {}).get("recipient", [])]


@dataclass
class Cpts:
    """The world of one test: who exists, by name; helpers to add more."""

    app: Flask
    fhir: Fhir
    patient: str = ""
    refs: dict[str, str] = field(default_factory=dict)
    rpps: int = 10000000000

    def create(self, body: dict[str, Any]) -> str:
        created: str = self.fhir.create(body)["id"]
        return created

    def practitioner(self, name: str, *, login: bool = False) -> str:
        """A Practitioner (with a login named ``name`` when asked); returns its reference."""
        self.rpps += 1
        if login:
            ref = f"Practitioner/{practitioner_user(self.app, name, str(self.rpps))}"
        else:
            ref = f"Practitioner/{self.create({'resourceType': 'Practitioner', 'name': [{'family': name}]})}"
        self.refs[name] = ref
        return ref

    def role(
        self,
        name: str,
        code: dict[str, Any] = NURSE,
        *,
        location: dict[str, Any] | None = None,
        covers: dict[str, Any] | None = None,
        active: bool = True,
        login: bool = False,
        specialty: dict[str, Any] | None = None,
    ) -> str:
        """A PractitionerRole of a new practitioner, located at ``location`` or serving (through a
        HealthcareService) the area ``covers``; returns the role's reference."""
        practitioner = self.practitioner(name, login=login)
        body: dict[str, Any] = {
            "resourceType": "PractitionerRole",
            "active": active,
            "practitioner": {"reference": practitioner},
            "code": [code],
        }
        if specialty is not None:
            body["specialty"] = [specialty]
        if location is not None:
            place = self.create({"resourceType": "Location", "status": "active", "address": location})
            body["location"] = [{"reference": f"Location/{place}"}]
        if covers is not None:
            area = self.create({"resourceType": "Location", "status": "active", "address": covers})
            service = self.create(
                {
                    "resourceType": "HealthcareService",
                    "active": True,
                    "coverageArea": [{"reference": f"Location/{area}"}],
                }
            )
            body["healthcareService"] = [{"reference": f"HealthcareService/{service}"}]
        ref = f"PractitionerRole/{self.create(body)}"
        self.refs[f"{name}-role"] = ref
        return ref

    def care_team(self, *members: tuple[str, dict[str, Any]]) -> str:
        return self.create(
            {
                "resourceType": "CareTeam",
                "status": "active",
                "subject": {"reference": f"Patient/{self.patient}"},
                "participant": [{"member": {"reference": m}, "role": [role]} for m, role in members],
            }
        )

    def task(self, **extra: Any) -> dict[str, Any]:
        """POST an open nursing Task for the patient; returns the Task as stored now."""
        body: dict[str, Any] = {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "priority": "urgent",
            "code": {"text": "Pansement à domicile"},
            "for": {"reference": f"Patient/{self.patient}"},
            "requester": {"reference": self.refs["requester"]},
            "performerType": [NURSE],
            **extra,
        }
        body = {k: v for k, v in body.items() if v is not None}  # None: leave the element out
        task_id = self.create(body)
        return self.read(task_id)

    def read(self, task_id: str) -> dict[str, Any]:
        response = self.fhir.request("GET", f"/fhir/Task/{task_id}")
        assert response.status_code == 200, response.get_json()
        task: dict[str, Any] = response.get_json()
        return task

    def user(self, name: str) -> Fhir:
        """A practitioner's own app session (authorization code + PKCE, user/*.cruds)."""
        return as_token(self.app, user_token(self.app, "user/*.cruds", name))

    @property
    def dispatcher(self) -> Dispatcher:
        found: Dispatcher = self.app.extensions["dispatch"]
        return found


@pytest.fixture
def cpts(app: Flask, fhir: Fhir) -> Iterator[Cpts]:
    """A patient of Bordeaux (33000, INSEE 33063) and the requesting doctor; default delays."""
    app.test_client().get("/fhir/.well-known/smart-configuration")  # loads the session key
    dispatcher: Dispatcher = app.extensions["dispatch"]
    saved = dispatcher.settings
    dispatcher.settings = replace(DispatchSettings(), usual_seconds=1800, escalate_seconds=7200)
    world = Cpts(app, fhir)
    world.patient = world.create(
        {"resourceType": "Patient", "name": [{"family": "Durand"}], "address": [address("33000", "33063")]}
    )
    world.practitioner("requester")
    yield world
    dispatcher.settings = saved


def later(seconds: float) -> int:
    """A tick's "now", ``seconds`` from now (epoch microseconds)."""
    return now_us() + int(seconds * US)
