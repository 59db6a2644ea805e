"""Annuaire Santé: the national directory of health professionals and organizations (ANS FHIR API)."""

from connectors.annuaire.cache import TTLCache
from connectors.annuaire.client import API_KEY_HEADER, AnnuaireSante, reference_id
from connectors.annuaire.interface import (
    FINESS,
    ID_NAT_PS,
    ID_NAT_ST,
    RPPS,
    RPPS_V1,
    SERVICE,
    Directory,
    Member,
    NullDirectory,
    is_directory_id,
    is_finess,
    is_rpps,
)

__all__ = [
    "API_KEY_HEADER",
    "FINESS",
    "ID_NAT_PS",
    "ID_NAT_ST",
    "RPPS",
    "RPPS_V1",
    "SERVICE",
    "AnnuaireSante",
    "Directory",
    "Member",
    "NullDirectory",
    "TTLCache",
    "is_directory_id",
    "is_finess",
    "is_rpps",
    "reference_id",
]
