"""Which focus resources a subscription's owner may hear of: an event about a focus the owner may not
read now is not sent at all, not even its id (issue 16; Backport IG "Payload Types": a server may send
less than asked). The care-team rule is auth.policy's, evaluated in the worker's transaction (no
request context): the same ``reach_case`` SQL as the read-by-id hot path, over ``idx_compartment``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from auth import policy
from auth.scopes import ScopeSet
from coordination_api.core.versions import version_number
from coordination_api.storage.repository import now_us


def _reach_sql(launch: bool) -> str:
    # One row per patient compartment that held the focus's version (history_compartment: the version
    # that is sent is judged by its own compartments); none: in no compartment. A focus whose resource
    # is gone yields no row at all: fail closed.
    case = policy.reach_case(False, launch)
    return (
        f"SELECT c.patient_id, {case} FROM (SELECT h.patient_id AS patient_id, r.res_type AS res_type "
        "FROM resource r LEFT JOIN history_compartment h ON h.res_pk = r.pk "
        "AND h.version = COALESCE(:version, r.version) WHERE r.res_type = :type AND r.res_id = :id) c"
    )


def readable_focuses(conn: Connection, owner: Any, focuses: Iterable[str]) -> set[str]:
    """The focuses ("Type/id/_history/n") the owner may read now; ``owner`` is a subscription_state
    row (owner_* columns). No owner scopes: written outside a request, unrestricted."""
    wanted = list(dict.fromkeys(focuses))
    if owner.owner_scopes is None:
        return set(wanted)
    scopes = ScopeSet.parse(owner.owner_scopes)
    practitioner: str | None = owner.owner_practitioner
    # SMART: a user token reads with user/ or patient/ scopes, a backend client with system/ ones.
    contexts = ("user", "patient") if practitioner else ("system",)
    allowed: set[str] = set()
    now = now_us()
    for focus in wanted:
        parts = focus.split("/")
        res_type, res_id = parts[:2]
        version = version_number(parts[3]) if len(parts) > 3 else None
        if not scopes.allows(res_type, "r", contexts):
            continue
        if practitioner is None:
            allowed.add(focus)  # backend clients are not limited by the care-team rule (auth.policy)
            continue
        params: dict[str, Any] = {
            "type": res_type,
            "id": res_id,
            "now": now,
            "practitioner": f"Practitioner/{practitioner}",
            "practitioner_id": practitioner,
            "version": version,
        }
        launch = owner.owner_patient
        if launch is not None:
            params["launch"] = launch
        rows = conn.execute(text(_reach_sql(launch is not None)), params).all()
        # The care-team rule: every patient whose compartment holds the focus must be reachable now
        # (a focus in no patient's compartment, e.g. an Organization, is not restricted by it).
        if rows and all(row[0] is None or bool(row[1]) for row in rows):
            allowed.add(focus)
    return allowed
