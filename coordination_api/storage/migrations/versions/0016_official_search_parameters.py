"""R4 search parameters from the official definitions bundle (issues 18, 20): the index rows of the
resource types that gained parameters are rewritten for the resources stored before.

The hand transcription this replaces defined no parameter for these types, or fewer than R4
(e.g. Account, AdverseEvent; RiskAssessment-probability, ServiceRequest-order-detail). The other
differences do not change index rows: ``as T`` became ``.ofType(T)`` on choice elements (the same
values) and ``clinical-patient`` lost the target Group (its expressions only select Patients).

Each resource of these types is re-indexed as a write would (all rows but its compartment rows,
which do not depend on search parameters), in one pass, in batches: 0014, run by the same code,
may already have written some of these rows.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from alembic import op

from coordination_api.storage.indexer import index_rows
from coordination_api.storage.migrations.helpers.reindex import (
    index_tables,
    registry_for,
    reindex,
    stored_types,
)

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# The types with R4 parameters the transcription did not have (computed once, when it was replaced).
TYPES = (
    "Account",
    "AdverseEvent",
    "AppointmentResponse",
    "BodyStructure",
    "ChargeItem",
    "ChargeItemDefinition",
    "ClaimResponse",
    "ClinicalImpression",
    "CompartmentDefinition",
    "ConceptMap",
    "Contract",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DocumentManifest",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EventDefinition",
    "ExampleScenario",
    "FamilyMemberHistory",
    "Flag",
    "GraphDefinition",
    "GuidanceResponse",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "Measure",
    "MeasureReport",
    "Media",
    "MedicationDispense",
    "MedicationKnowledge",
    "MessageDefinition",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "OrganizationAffiliation",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "ServiceRequest",
    "Specimen",
    "SpecimenDefinition",
    "Substance",
    "SupplyRequest",
    "TestReport",
    "TestScript",
    "VerificationResult",
    "VisionPrescription",
)


def upgrade() -> None:
    # A re-index with the current indexer (helpers/reindex.py), as a write of each resource would.
    conn = op.get_bind()
    tables = index_tables(conn)
    stored = set(stored_types(conn))
    for res_type in TYPES:
        if res_type in stored:
            reindex(conn, tables, registry_for(res_type), res_type, index_rows, replace=True)


def downgrade() -> None:
    # The rows of the added parameters are left: the older code does not search them, and rewrites
    # all of a resource's rows when it writes the resource.
    pass
