"""Pluriprofessional protocols: a PlanDefinition applied to a patient (R4 plandefinition-operation-apply).

``apply_plan`` is R4 ``$apply``: it reads the definitions, the patient, the encounter and the patient's
care circle (CareTeam) and returns a CarePlan whose contained RequestGroup points at contained Tasks,
ServiceRequests and CommunicationRequests; it stores nothing. ``start_in`` writes the same plan as
separate resources (CarePlan active, RequestGroup, requests with real references) inside the caller's
transaction; ``start_on_discharge`` does so for every active PlanDefinition triggered by a discharge.

Applicability (``action.condition`` kind ``applicability``) is FHIRPath (``text/fhirpath``) evaluated
with fhirpathpy over the Patient, with the variables of :meth:`Context.variables`. Timings are relative to
the trigger: the encounter's ``period.end`` when an encounter is given (the discharge), else now.

The package: ``model`` (parameters, context), ``reading`` (what a plan is built from), ``timing``,
``expressions`` (FHIRPath), ``requests`` (Task, ServiceRequest, CommunicationRequest), ``plans``
(``$apply``), ``starting`` (stored plans, on discharge).
"""

from __future__ import annotations

from coordination_api.coordination.protocols.model import (
    DISCHARGE_EVENT,
    START_SYSTEM,
    ApplyParameters,
    Context,
    Started,
)
from coordination_api.coordination.protocols.plans import apply_plan
from coordination_api.coordination.protocols.reading import find_by_canonical, load_context, subject_stored
from coordination_api.coordination.protocols.starting import start_in, start_key, start_on_discharge

__all__ = [
    "DISCHARGE_EVENT",
    "START_SYSTEM",
    "ApplyParameters",
    "Context",
    "Started",
    "apply_plan",
    "find_by_canonical",
    "load_context",
    "start_in",
    "start_key",
    "start_on_discharge",
    "subject_stored",
]
