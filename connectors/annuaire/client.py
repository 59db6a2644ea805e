"""The ANS directory's FHIR API ("API FHIR Annuaire Santé", https://gateway.api.esante.gouv.fr/fhir/v2).

Every call is a GET search (idempotent: connectors/http.py retries it with backoff on connection
errors, 429 and 502/503/504) with the ``ESANTE-API-KEY`` header, which is never logged nor put in an
error message. Searches answer ``searchset`` Bundles; further pages follow ``Bundle.link`` with
relation ``next`` (R4 http.html#paging), only on the configured scheme, host and port (the key is
not sent anywhere else) and never twice to the same URL (a server whose links loop would keep us
forever). Answers that are not what the API promises are ``Failure.BAD_ANSWER``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from connectors import http
from connectors.annuaire.cache import TTLCache
from connectors.annuaire.interface import (
    FINESS,
    ID_NAT_PS,
    ID_NAT_ST,
    RPPS,
    SERVICE,
    Member,
    is_directory_id,
    is_finess,
)
from connectors.errors import ConnectorError, Failure

log = logging.getLogger(__name__)
API_KEY_HEADER = "ESANTE-API-KEY"  # ANS "Bases de l'API": the gateway's key header


def reference_id(reference: Any, resource_type: str) -> str | None:
    """The id in ``{"reference": "Practitioner/x"}`` (relative or absolute), if it is of that type."""
    if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
        return None
    text: str = reference["reference"]
    parts = text.split("?")[0].rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == resource_type and parts[-1]:
        return parts[-1]
    return None


class AnnuaireSante:
    """A `Directory` over the real API (or any server that answers like it)."""

    configured = True

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        settings: http.HttpSettings | None = None,
        *,
        page_size: int = 100,
        max_pages: int = 10_000,
        cache_ttl: float = 3600.0,
        cache_size: int = 10_000,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.settings = settings or http.HttpSettings()
        self.page_size = page_size
        self.max_pages = max_pages
        self.cache: TTLCache[dict[str, Any] | None] = TTLCache(cache_ttl, cache_size)
        headers = {"Accept": "application/fhir+json"}
        if api_key:
            headers[API_KEY_HEADER] = api_key
        self._session = http.session(self.settings, headers)
        origin = urlsplit(self.base_url)
        self._origin = (origin.scheme, origin.hostname, origin.port)

    def __repr__(self) -> str:  # never the key
        return f"AnnuaireSante({self.base_url!r})"

    def close(self) -> None:
        self._session.close()

    def check(self) -> str:
        """A cheap call (``coordination connectors check``): one Practitioner search (not cached), which
        proves the TLS connection, the API key and a searchset answer."""
        bundle = self._get(f"{self.base_url}/Practitioner", {"_count": "1"})
        return f"Practitioner search answered ({len(bundle.get('entry') or [])} entry)"

    # -- look-ups (cached) ------------------------------------------------------------------------

    def practitioner(self, rpps: str) -> dict[str, Any] | None:
        # RPPS (v2) or idNatPs "8" + RPPS (v1 and v2): a comma is an OR (R4 search.html#combining).
        criteria = {"identifier": f"{RPPS}|{rpps},{ID_NAT_PS}|8{rpps}"}
        return self._cached("Practitioner", rpps, criteria, lambda r: _has_rpps(r, rpps))

    def organization(self, finess_or_id: str) -> dict[str, Any] | None:
        if is_finess(finess_or_id):
            criteria = {"identifier": f"{FINESS}|{finess_or_id},{ID_NAT_ST}|1{finess_or_id}"}
        elif is_directory_id(finess_or_id):
            criteria = {"_id": finess_or_id}
        else:
            raise ValueError("an organization is named by its FINESS number or its directory id")
        return self._cached("Organization", finess_or_id, criteria, lambda r: True)

    def _cached(
        self,
        resource_type: str,
        key: str,
        criteria: dict[str, str],
        prefer: Callable[[dict[str, Any]], bool],
    ) -> dict[str, Any] | None:
        found, value = self.cache.get((resource_type, key))
        if not found:
            bundle = self._get(f"{self.base_url}/{resource_type}", {**criteria, "_count": "10"})
            matches = [r for r in _resources(bundle, "match") if r["resourceType"] == resource_type]
            # Several answers (an old closed record and the current one): the active one that
            # carries the asked identifier first.
            matches.sort(key=lambda r: (not prefer(r), r.get("active") is False))
            value = matches[0] if matches else None
            self.cache.put((resource_type, key), value)
        return copy.deepcopy(value)

    # -- searches over all pages (not cached) -----------------------------------------------------

    def practitioner_roles(
        self, *, practitioner: str | None = None, organization: str | None = None
    ) -> Iterator[dict[str, Any]]:
        criteria = {}
        if practitioner is not None:
            criteria["practitioner"] = practitioner
        if organization is not None:
            criteria["organization"] = organization
        if not criteria:
            raise ValueError("practitioner_roles needs a practitioner or an organization")
        for bundle in self._pages("PractitionerRole", criteria):
            yield from (r for r in _resources(bundle, "match") if r["resourceType"] == "PractitionerRole")

    def organization_members(self, organization: str) -> Iterator[Member]:
        criteria = {"organization": organization, "_include": "PractitionerRole:practitioner"}
        total: int | None = None
        for bundle in self._pages("PractitionerRole", criteria):
            if total is None and isinstance(bundle.get("total"), int):
                total = bundle["total"]
            roles = [r for r in _resources(bundle, "match") if r["resourceType"] == "PractitionerRole"]
            people = {
                r.get("id"): r for r in _resources(bundle, "include") if r["resourceType"] == "Practitioner"
            }
            wanted = {reference_id(r.get("practitioner"), "Practitioner") for r in roles} - {None}
            missing = sorted(str(x) for x in wanted - set(people))
            if missing:  # a server that ignores _include: one more search for this page's people
                people.update(self._by_ids("Practitioner", missing))
            for role in roles:
                who = reference_id(role.get("practitioner"), "Practitioner")
                yield Member(role, people.get(who) if who else None, total)

    def healthcare_services(self, organization: str) -> Iterator[dict[str, Any]]:
        for bundle in self._pages("HealthcareService", {"organization": organization}):
            yield from (r for r in _resources(bundle, "match") if r["resourceType"] == "HealthcareService")

    def _by_ids(self, resource_type: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 50):
            chunk = ",".join(i for i in ids[start : start + 50] if is_directory_id(i))
            for bundle in self._pages(resource_type, {"_id": chunk}):
                out.update(
                    (r["id"], r) for r in _resources(bundle, "match") if r["resourceType"] == resource_type
                )
        return out

    # -- HTTP -------------------------------------------------------------------------------------

    def _pages(self, resource_type: str, criteria: dict[str, str]) -> Iterator[dict[str, Any]]:
        """The search's Bundles, first page to last."""
        url = f"{self.base_url}/{resource_type}"
        params: dict[str, str] | None = {**criteria, "_count": str(self.page_size)}
        seen: set[str] = set()
        for _page in range(self.max_pages):
            bundle = self._get(url, params)
            yield bundle
            following = _next_link(bundle)
            if following is None:
                return
            url, params = self._checked_next(following, seen), None
        raise ConnectorError(SERVICE, Failure.BAD_ANSWER, f"more than {self.max_pages} pages of results")

    def _checked_next(self, link: str, seen: set[str]) -> str:
        absolute = urljoin(self.base_url + "/", link)
        parts = urlsplit(absolute)
        if (parts.scheme, parts.hostname, parts.port) != self._origin:
            # The API key goes to the configured directory only.
            raise ConnectorError(
                SERVICE, Failure.BAD_ANSWER, f"a next link points to another host ({parts.hostname})"
            )
        if absolute in seen:
            raise ConnectorError(
                SERVICE, Failure.BAD_ANSWER, "the next links loop back to a page already read"
            )
        seen.add(absolute)
        return absolute

    def _get(self, url: str, params: dict[str, str] | None) -> dict[str, Any]:
        try:
            response = http.call(SERVICE, self._session, self.settings, "GET", url, params=params)
        except ConnectorError as exc:
            if exc.status in (401, 403):
                raise ConnectorError(
                    SERVICE,
                    Failure.REFUSED,
                    f"the API key was refused (HTTP {exc.status}): check the configured ESANTE-API-KEY",
                    status=exc.status,
                ) from exc
            raise
        try:
            if response.status_code != 200:
                raise ConnectorError(
                    SERVICE, Failure.BAD_ANSWER, f"answered HTTP {response.status_code} to a search"
                )
            body = http.json_body(SERVICE, response)
        except requests.RequestException as exc:  # the body broke off while it was read
            raise ConnectorError(SERVICE, Failure.UNAVAILABLE, f"GET failed ({type(exc).__name__})") from exc
        finally:
            response.close()
        return _bundle(body)


def _bundle(body: Any) -> dict[str, Any]:
    """A searchset Bundle whose entries are resources, or BAD_ANSWER."""
    kind = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
    if kind != "Bundle":
        raise ConnectorError(SERVICE, Failure.BAD_ANSWER, f"a search answered {kind!s:.40}, not a Bundle")
    assert isinstance(body, dict)
    entries = body.get("entry", [])
    links = body.get("link", [])
    if not isinstance(entries, list) or not isinstance(links, list):
        raise ConnectorError(SERVICE, Failure.BAD_ANSWER, "the Bundle's entry or link is not a list")
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise ConnectorError(SERVICE, Failure.BAD_ANSWER, "a Bundle entry holds no resource")
        if not isinstance(resource.get("id"), str):
            raise ConnectorError(SERVICE, Failure.BAD_ANSWER, "a Bundle entry's resource has no id")
    return body


def _resources(bundle: dict[str, Any], mode: str) -> Iterator[dict[str, Any]]:
    """Entries of a search mode ("match" when the server leaves it out, R4 bundle.html#searchset)."""
    for entry in bundle.get("entry", []):
        search = entry.get("search")
        entry_mode = search.get("mode", "match") if isinstance(search, dict) else "match"
        if entry_mode == mode:
            yield entry["resource"]


def _next_link(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link", []):
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if not isinstance(url, str) or not url:
                raise ConnectorError(SERVICE, Failure.BAD_ANSWER, "a next link has no url")
            return url
    return None


def _has_rpps(resource: dict[str, Any], rpps: str) -> bool:
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and (identifier.get("system"), identifier.get("value")) in {
            (RPPS, rpps),
            (ID_NAT_PS, "8" + rpps),
        }:
            return True
    return False
