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

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BATCH = 500

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
    import orjson

    from coordination_api.fhir.resources import supported_types
    from coordination_api.search.registry import SearchRegistry
    from coordination_api.storage.indexer import index_rows
    from coordination_api.storage.schema import INDEX_TABLES

    tables = {kind: table for kind, table in INDEX_TABLES.items() if kind != "compartment"}
    registry = SearchRegistry.default(supported_types())
    conn = op.get_bind()
    for res_type in TYPES:
        if res_type not in registry.resource_types:
            continue
        last = 0
        while True:
            chunk = conn.execute(
                sa.text(
                    "SELECT pk, content FROM resource WHERE res_type = :t AND deleted = :f AND pk > :last "
                    "ORDER BY pk LIMIT :n"
                ),
                {"t": res_type, "f": False, "last": last, "n": BATCH},
            ).all()
            if not chunk:
                break
            pks = [pk for pk, _content in chunk]
            for table in tables.values():
                conn.execute(sa.delete(table).where(table.c.res_pk.in_(pks)))
            batched: dict[str, list[dict[str, object]]] = {}
            for pk, content in chunk:
                if content is None:
                    continue
                for kind, rows in index_rows(registry, res_type, orjson.loads(content)).items():
                    if kind in tables:
                        batched.setdefault(kind, []).extend({**row, "res_pk": pk} for row in rows)
            for kind, rows in batched.items():
                conn.execute(sa.insert(tables[kind]), rows)
            last = chunk[-1][0]


def downgrade() -> None:
    # The rows of the added parameters are left: the older code does not search them, and rewrites
    # all of a resource's rows when it writes the resource.
    pass
