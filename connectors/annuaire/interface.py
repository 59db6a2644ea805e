"""What the rest of the application asks of the national health directory (ANS "Annuaire Santé").

The answers are the directory's own FHIR R4 resources (dicts, as the API sends them: its ids, its
identifier systems, its profiles); mapping them to our resources is the caller's business
(`coordination_api/integrations/annuaire_sync.py`). Identifier systems of the API (ANS "API FHIR
Annuaire Santé", v1 and v2; IG fhir-annuaire): RPPS ``https://rpps.esante.gouv.fr`` (v1 also ``http://rpps.fr``),
idNatPs ``urn:oid:1.2.250.1.71.4.2.1`` ("8" + RPPS, "0" + ADELI), FINESS
``http://finess.sante.gouv.fr``, idNatSt ``urn:oid:1.2.250.1.71.4.2.2`` ("1" + FINESS, "3" + SIRET).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from connectors.errors import ConnectorError, Failure

SERVICE = "annuaire-sante"
RPPS = "https://rpps.esante.gouv.fr"
RPPS_V1 = "http://rpps.fr"
ID_NAT_PS = "urn:oid:1.2.250.1.71.4.2.1"
FINESS = "http://finess.sante.gouv.fr"
ID_NAT_ST = "urn:oid:1.2.250.1.71.4.2.2"

_RPPS = re.compile(r"[0-9]{11}")
_FINESS = re.compile(r"([0-9]{2}|2[AB])[0-9]{7}")
# A directory technical id (e.g. "001-01-147"): R4 id characters only, so it is safe in a query.
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def is_rpps(value: str) -> bool:
    return bool(_RPPS.fullmatch(value))


def is_finess(value: str) -> bool:
    return bool(_FINESS.fullmatch(value))


def is_directory_id(value: str) -> bool:
    return bool(_ID.fullmatch(value))


@dataclass(frozen=True)
class Member:
    """One situation of practice at an organization: the PractitionerRole and, when the directory
    gave it, the Practitioner it points to."""

    role: dict[str, Any]
    practitioner: dict[str, Any] | None
    total: int | None = None  # Bundle.total of the search, when the directory tells it


class Directory(Protocol):
    """Look-ups in the directory. Every method raises ``connectors.errors.ConnectorError`` when the
    directory cannot answer (timeouts, 5xx, malformed answers); "not found" is None or nothing."""

    @property
    def configured(self) -> bool: ...

    def practitioner(self, rpps: str) -> dict[str, Any] | None:
        """The Practitioner (with its qualifications) whose RPPS is ``rpps``."""

    def organization(self, finess_or_id: str) -> dict[str, Any] | None:
        """The Organization by FINESS (9 characters) or by the directory's technical id."""

    def practitioner_roles(
        self, *, practitioner: str | None = None, organization: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """PractitionerRoles of a Practitioner or of an Organization (directory ids), all pages."""

    def organization_members(self, organization: str) -> Iterator[Member]:
        """The PractitionerRoles of an Organization (directory id) with their Practitioners."""

    def healthcare_services(self, organization: str) -> Iterator[dict[str, Any]]:
        """The HealthcareServices an Organization (directory id) provides."""


NOT_CONFIGURED = "directory connector not configured (COORDINATION_ANNUAIRE_BASE_URL)"


class NullDirectory:
    """No directory configured: every look-up is refused as NOT_CONFIGURED (never "not found", which
    would be an answer it cannot give). Callers that can do without ask ``configured`` first."""

    configured = False

    def _refuse(self) -> ConnectorError:
        return ConnectorError(SERVICE, Failure.NOT_CONFIGURED, NOT_CONFIGURED)

    def practitioner(self, rpps: str) -> dict[str, Any] | None:
        raise self._refuse()

    def organization(self, finess_or_id: str) -> dict[str, Any] | None:
        raise self._refuse()

    def practitioner_roles(
        self, *, practitioner: str | None = None, organization: str | None = None
    ) -> Iterator[dict[str, Any]]:
        raise self._refuse()

    def organization_members(self, organization: str) -> Iterator[Member]:
        raise self._refuse()

    def healthcare_services(self, organization: str) -> Iterator[dict[str, Any]]:
        raise self._refuse()
