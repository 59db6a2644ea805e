"""An independent model of the care-team rule (deliberately not importing auth.policy).

A practitioner user token reaches patient X now iff
  (an active CareTeam of X lists as participant member the practitioner, one of her current
   PractitionerRoles or the Organization of one of them, team and participant periods covering now)
  or (she, one of her roles or organizations owns an open Task whose ``for`` is X),
and no active Consent of X holds a deny provision covering now whose actor is one of those references,
or which has no actor (an opposition to everyone).
A requested Task offered to her (``restriction.recipient`` within ``restriction.period``) lets her see
only X's Patient resource and Tasks (same Consent exception).
A resource version is visible iff every patient whose compartment holds it is reachable (resources in
no patient compartment are visible with the scope); a Binary follows its ``securityContext``
DocumentReference (none: system clients only). References to this server written as absolute URLs
(``BASE/Type/id``) count as relative ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

BASE = "http://localhost/fhir"
OPEN_TASK = {"requested", "received", "accepted", "ready", "in-progress", "on-hold"}
ACTORS = ("Practitioner", "PractitionerRole", "Organization")
OFFER_TYPES = ("Patient", "Task")
# Paths (R4 Patient CompartmentDefinition, restricted to what these worlds use) to patient references.
COMPARTMENT_PATHS: dict[str, list[str]] = {
    "Observation": ["subject", "performer"],
    "Encounter": ["subject"],
    "Condition": ["subject", "asserter"],
    "DocumentReference": ["subject", "author"],
    "CareTeam": ["subject", "participant.member"],
    "Consent": ["patient"],
    "Task": ["for"],
    "Group": ["member.entity"],
}
_LOCAL = re.compile(r"^(?:" + re.escape(BASE) + r"/)?([A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/.*)?$")
# The role taken as "coordinating" a CareTeam: docs/security.md (COORDINATION_DISPATCH_COORDINATOR_ROLE,
# default ``coordinateur-parcours``, in any code system).
COORDINATOR_CODES = {(None, "coordinateur-parcours")}


def local_ref(reference: Any) -> str | None:
    """``Type/id`` of a reference to this server (relative, or absolute to its own base)."""
    if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
        return None
    match = _LOCAL.match(reference["reference"])
    return f"{match.group(1)}/{match.group(2)}" if match else None


def _values(resource: Any, path: str) -> list[Any]:
    items = [resource]
    for step in path.split("."):
        nxt: list[Any] = []
        for item in items:
            value = item.get(step) if isinstance(item, dict) else None
            if isinstance(value, list):
                nxt.extend(value)
            elif value is not None:
                nxt.append(value)
        items = nxt
    return items


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def covers(period: Any) -> bool:
    """Periods in these worlds use whole dates, far from today: a date comparison is exact."""
    if not isinstance(period, dict):
        return True
    now = today()
    start, end = period.get("start"), period.get("end")
    return (start is None or start[:10] <= now) and (end is None or now <= end[:10])


def compartments(resource: dict[str, Any]) -> set[str]:
    """Ids of the patients whose compartment holds this resource version."""
    kind = resource["resourceType"]
    if kind == "Patient":
        return {resource["id"]}
    found = set()
    for path in COMPARTMENT_PATHS.get(kind, []):
        for value in _values(resource, path):
            ref = local_ref(value)
            if ref and ref.startswith("Patient/"):
                found.add(ref.split("/", 1)[1])
    return found


@dataclass
class World:
    """The current resources (by ``Type/id``) and every version (``Type/id`` -> [versions])."""

    current: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [r for key, r in self.current.items() if key.startswith(kind + "/")]


class Model:
    def __init__(self, world: World, practitioner: str | None) -> None:
        self.world = world
        self.practitioner = practitioner  # None: a system client with system/*.cruds
        self.refs = self._actor_refs() if practitioner else set()
        patients = {r["id"] for r in world.of_type("Patient")}
        self.reach = (
            {p for p in patients if self._granted(p) and not self._denied(p)} if practitioner else patients
        )
        self.offered = (
            {p for p in patients if self._offered(p) and not self._denied(p)} if practitioner else set()
        )

    def _actor_refs(self) -> set[str]:
        refs = {f"Practitioner/{self.practitioner}"}
        for role in self.world.of_type("PractitionerRole"):
            if role.get("active") is False or not covers(role.get("period")):
                continue
            if local_ref(role.get("practitioner")) != f"Practitioner/{self.practitioner}":
                continue
            refs.add(f"PractitionerRole/{role['id']}")
            org = local_ref(role.get("organization"))
            if org and org.startswith("Organization/"):
                refs.add(org)
        return refs

    def _granted(self, patient: str) -> bool:
        for team in self.world.of_type("CareTeam"):
            if team.get("status") != "active" or local_ref(team.get("subject")) != f"Patient/{patient}":
                continue
            if not covers(team.get("period")):
                continue
            for participant in team.get("participant") or []:
                if local_ref(participant.get("member")) in self.refs and covers(participant.get("period")):
                    return True
        for task in self.world.of_type("Task"):
            if (
                task.get("status") in OPEN_TASK
                and local_ref(task.get("for")) == f"Patient/{patient}"
                and local_ref(task.get("owner")) in self.refs
            ):
                return True
        return False

    def _offered(self, patient: str) -> bool:
        for task in self.world.of_type("Task"):
            if task.get("status") != "requested" or local_ref(task.get("for")) != f"Patient/{patient}":
                continue
            restriction = task.get("restriction") or {}
            if not covers(restriction.get("period")):
                continue
            if any(local_ref(r) in self.refs for r in restriction.get("recipient") or []):
                return True
        return False

    def _denied(self, patient: str) -> bool:
        for consent in self.world.of_type("Consent"):
            if consent.get("status") != "active" or local_ref(consent.get("patient")) != f"Patient/{patient}":
                continue
            if self._denies(consent.get("provision"), None, True):
                return True
        return False

    def _denies(self, provision: Any, inherited: str | None, in_period: bool) -> bool:
        if not isinstance(provision, dict):
            return False
        kind = provision.get("type") or inherited
        in_period = in_period and covers(provision.get("period"))
        if kind == "deny" and in_period:
            actors = provision.get("actor") or []
            if not actors or any(local_ref(a.get("reference")) in self.refs for a in actors):
                return True
        return any(self._denies(child, None, in_period) for child in provision.get("provision") or [])

    def visible(self, resource: dict[str, Any]) -> bool:
        """May this principal see this version of a resource?"""
        if self.practitioner is None:
            return True
        kind = resource["resourceType"]
        if kind == "Binary":
            context = local_ref(resource.get("securityContext"))
            target = self.world.current.get(context) if context else None
            return target is not None and target["resourceType"] != "Binary" and self.visible(target)
        return all(
            p in self.reach or (p in self.offered and kind in OFFER_TYPES) for p in compartments(resource)
        )

    def visible_ids(self, kind: str) -> set[str]:
        return {r["id"] for r in self.world.of_type(kind) if self.visible(r)}

    def coordinated(self) -> set[str]:
        """Patients of an active, current CareTeam where she (or her role or org) is a coordinator."""
        found = set()
        for team in self.world.of_type("CareTeam"):
            subject = local_ref(team.get("subject"))
            if team.get("status") != "active" or not covers(team.get("period")) or not subject:
                continue
            for participant in team.get("participant") or []:
                if local_ref(participant.get("member")) not in self.refs or not covers(
                    participant.get("period")
                ):
                    continue
                codes = {
                    (coding.get("system"), coding.get("code"))
                    for role in participant.get("role") or []
                    for coding in role.get("coding") or []
                }
                codes |= {(None, code) for _, code in codes}
                if codes & COORDINATOR_CODES:
                    found.add(subject.split("/", 1)[1])
        return found
