"""Search parameters on ``extension('url')`` index every such extension (review 22 F1): fhirpathpy
returned only the first extension with that url, so a resource carrying two (an NdE with two
event-type extensions) was indexed by its first one only while readers see both.

Only the resources that carry one of these extension urls can have other rows now: they are
re-indexed as a write would (0016's code), the others are left as they are.

Revision ID: 0018
Revises: 0017
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

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

# The types with an ``extension('url')`` search parameter (R4 core and ours) and those urls.
EXTENSIONS = {
    "CommunicationRequest": ("https://interop.esante.gouv.fr/ig/fhir/nde/StructureDefinition/event-type",),
    "Device": ("http://hl7.org/fhir/SearchParameter/device-extensions-Device-din",),
    "DiagnosticReport": (
        "http://hl7.org/fhir/StructureDefinition/DiagnosticReport-geneticsAssessedCondition",
    ),
    "Observation": (
        "http://hl7.org/fhir/StructureDefinition/observation-geneticsAminoAcidChangeName",
        "http://hl7.org/fhir/StructureDefinition/observation-geneticsDnaVariant",
        "http://hl7.org/fhir/StructureDefinition/observation-geneticsGene",
    ),
    "Patient": ("http://hl7.org/fhir/StructureDefinition/patient-extensions-Patient-mothersMaidenName",),
}


def upgrade() -> None:
    conn = op.get_bind()
    tables = index_tables(conn)
    stored = set(stored_types(conn))
    for res_type, urls in EXTENSIONS.items():
        if res_type in stored:
            reindex(conn, tables, registry_for(res_type), res_type, index_rows, replace=True, containing=urls)


def downgrade() -> None:
    # The added rows are left: the older code rewrites all of a resource's rows when it writes it.
    pass
