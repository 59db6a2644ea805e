"""The protocol engine's vocabulary: $apply parameters, the context a plan is built from, constants."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from coordination_api.storage.repository import Stored
from fhir_profiles.fhirpath_safety import ExpressionLimits

# The named event a discharge fires (PlanDefinition.action.trigger type named-event, name "discharge").
DISCHARGE_EVENT = "discharge"
# CarePlan.identifier of a started protocol: "<PlanDefinition id>|<Encounter id>" (one start per stay).
START_SYSTEM = "https://coordination.cpts.fr/fhir/protocol-start"
FHIRPATH = "text/fhirpath"


@dataclass(frozen=True)
class ApplyParameters:
    """The ``$apply`` / ``$start`` input parameters (R4 PlanDefinition-apply)."""

    subject: str
    encounter: str | None = None
    practitioner: str | None = None
    organization: str | None = None
    user_type: str | None = None
    user_language: str | None = None
    user_task_context: str | None = None
    setting: str | None = None
    setting_context: str | None = None


@dataclass(frozen=True)
class Member:
    """A participant of one of the patient's active CareTeams."""

    roles: frozenset[tuple[str, str]]
    reference: str


@dataclass
class Context:
    """What a plan is built from, read once per application."""

    params: ApplyParameters
    patient: dict[str, Any]
    encounter: dict[str, Any] | None
    trigger: datetime
    now: datetime
    care_teams: list[dict[str, Any]]
    members: list[Member]
    load_service_requests: Callable[[], list[dict[str, Any]]]
    _service_requests: list[dict[str, Any]] | None = None
    # Bounds of every FHIRPath evaluation (COORDINATION_EXPRESSION_*).
    limits: ExpressionLimits = field(default_factory=ExpressionLimits)

    @property
    def subject(self) -> str:
        return f"Patient/{self.patient['id']}"

    @property
    def requester(self) -> str | None:
        return self.params.practitioner or self.params.organization

    @property
    def encounter_ref(self) -> str | None:
        return f"Encounter/{self.encounter['id']}" if self.encounter is not None else None

    def variables(self, expression: str) -> dict[str, Any]:
        """The FHIRPath environment: %patient, %encounter (empty without one), %age (completed years on
        the trigger date), %careTeam (active CareTeams), %serviceRequests (active ServiceRequests, read
        only when the expression names them) and the operation's parameters as strings."""
        p = self.params
        env: dict[str, Any] = {
            "resource": self.patient,
            "context": self.patient,
            "patient": self.patient,
            "encounter": self.encounter if self.encounter is not None else [],
            "age": age_on(self.patient, self.trigger.date()),
            "careTeam": self.care_teams,
            "practitioner": p.practitioner or [],
            "organization": p.organization or [],
            "userType": p.user_type or [],
            "userLanguage": p.user_language or [],
            "userTaskContext": p.user_task_context or [],
            "setting": p.setting or [],
            "settingContext": p.setting_context or [],
        }
        if "%serviceRequests" in expression:
            if self._service_requests is None:
                self._service_requests = self.load_service_requests()
            env["serviceRequests"] = self._service_requests
        else:
            env["serviceRequests"] = []
        return env


@dataclass(frozen=True)
class Started:
    """What ``start_in`` wrote (or found: ``created`` False when this start had happened already)."""

    care_plan: Stored
    created: bool
    written: list[Stored]


# -- reading the inputs ----------------------------------------------------------------------------


def age_on(patient: dict[str, Any], on: date) -> int | list[Any]:
    born = patient.get("birthDate")
    if not isinstance(born, str) or len(born) < 4:
        return []
    year = int(born[:4])
    month = int(born[5:7]) if len(born) >= 7 else 1
    day = int(born[8:10]) if len(born) >= 10 else 1
    return on.year - year - ((on.month, on.day) < (month, day))


def parse_instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def fhir_instant(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
