"""Property: no sequence of writes by a practitioner widens her own reach.

After each write by ALICE (a user token), the system client reads the world back and the independent model
(tests/security/model.py) computes whom she reaches now. That set (and the patients offered to her) must
stay within what she reached, was offered or coordinated before the first write.

Documented exception (issue 16, "a team coordinator adding a member"): a member of an active CareTeam
whose participant.role carries the code ``coordinateur-parcours`` (docs/security.md) may
change that team; this never widens her own reach (she reaches that patient already), so the only
allowance needed here is for the patients she coordinated before the writes. Accepting a Task offered to
her (dispatch) opens its patient, so the patients offered to her before are allowed too.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Fhir
from tests.security.conftest import PROFILE, as_bearer, mint_token, reset
from tests.security.model import BASE, Model
from tests.security.worlds import NURSE, ORGANIZATIONS, PATIENTS, build, read_back, ref, seeded, worlds

ME = "Practitioner/alice"
KINDS = [
    "careteam_post",
    "careteam_put_existing",
    "careteam_conditional_create",
    "careteam_conditional_update",
    "role_post",
    "role_put_existing",
    "task_accept_moving",
    "task_post_owned",
    "consent_withdraw",
    "group_post",
    "transaction",
]

# One test per class of write, so that each class that widens reach shows its own minimal example.
GROUPS = {
    "careteam": ["careteam_post", "careteam_put_existing"],
    "conditional": ["careteam_conditional_create", "careteam_conditional_update"],
    "role": ["role_post", "role_put_existing"],
    "task": ["task_accept_moving", "task_post_owned"],
    "consent_group": ["consent_withdraw", "group_post"],
    "transaction": ["transaction"],
    "mixed": KINDS,
}


def actions(kinds: list[str]) -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(
        st.fixed_dictionaries(
            {
                "kind": st.sampled_from(kinds),
                "patient": st.sampled_from(PATIENTS),
                "absolute": st.booleans(),
                "org": st.sampled_from(ORGANIZATIONS),
                "index": st.integers(min_value=0, max_value=3),
                "field": st.sampled_from(["for", "focus", "encounter"]),
            }
        ),
        min_size=1,
        max_size=3,
    )


def _team(patient: str, absolute: bool, member: str = ME) -> dict[str, Any]:
    return {
        "resourceType": "CareTeam",
        "status": "active",
        "subject": ref(f"Patient/{patient}", absolute),
        "participant": [{"member": ref(member, absolute), "role": [NURSE]}],
    }


def _role(org: str, absolute: bool) -> dict[str, Any]:
    return {
        "resourceType": "PractitionerRole",
        "active": True,
        "practitioner": ref(ME, absolute),
        "organization": ref(f"Organization/{org}", absolute),
    }


def _pick(current: dict[str, dict[str, Any]], kind: str, index: int) -> dict[str, Any] | None:
    found = sorted(k for k in current if k.startswith(kind + "/"))
    if not found:
        return None
    body = dict(current[found[index % len(found)]])
    body.pop("meta", None)
    return body


def perform(alice: Fhir, current: dict[str, dict[str, Any]], action: dict[str, Any]) -> int:
    """One write by ALICE; returns the HTTP status (any is fine: only the outcome is judged)."""
    kind, patient, absolute = action["kind"], action["patient"], action["absolute"]
    target = ref(f"Patient/{patient}", absolute)
    if kind == "careteam_post":
        return int(alice.request("POST", "/fhir/CareTeam", _team(patient, absolute)).status_code)
    if kind == "careteam_conditional_create":
        return int(
            alice.request(
                "POST", "/fhir/CareTeam", _team(patient, absolute), If_None_Exist=f"subject=Patient/{patient}"
            ).status_code
        )
    if kind == "careteam_conditional_update":
        return int(
            alice.request(
                "PUT", f"/fhir/CareTeam?subject=Patient/{patient}", _team(patient, absolute)
            ).status_code
        )
    if kind == "careteam_put_existing":
        body = _pick(current, "CareTeam", action["index"])
        if body is None:
            return 0
        body.update(status="active")
        body.pop("period", None)
        body["participant"] = [*body.get("participant", []), {"member": ref(ME, absolute), "role": [NURSE]}]
        return int(alice.request("PUT", f"/fhir/CareTeam/{body['id']}", body).status_code)
    if kind == "role_post":
        return int(
            alice.request("POST", "/fhir/PractitionerRole", _role(action["org"], absolute)).status_code
        )
    if kind == "role_put_existing":
        body = _pick(current, "PractitionerRole", action["index"])
        if body is None:
            return 0
        body.update(active=True, practitioner=ref(ME, absolute))
        body.pop("period", None)
        return int(alice.request("PUT", f"/fhir/PractitionerRole/{body['id']}", body).status_code)
    if kind == "task_accept_moving":
        body = _pick(current, "Task", action["index"])
        if body is None:
            return 0
        body.update(status="accepted", owner=ref(ME, absolute))
        # Task.for moves the grant; focus/encounter pointing elsewhere must not open anything either.
        body[action["field"]] = target
        return int(alice.request("PUT", f"/fhir/Task/{body['id']}", body).status_code)
    if kind == "task_post_owned":
        body = {
            "resourceType": "Task",
            "status": "in-progress",
            "intent": "order",
            "code": {"text": "Soins"},
            "for": target,
            "owner": ref(ME, absolute),
        }
        return int(alice.request("POST", "/fhir/Task", body).status_code)
    if kind == "consent_withdraw":
        body = _pick(current, "Consent", action["index"])
        if body is None:
            return 0
        body["status"] = "inactive"
        return int(alice.request("PUT", f"/fhir/Consent/{body['id']}", body).status_code)
    if kind == "group_post":
        body = {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "member": [{"entity": target}],
        }
        return int(alice.request("POST", "/fhir/Group", body).status_code)
    assert kind == "transaction"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:8d4f1c2e-0000-4000-8000-000000000001",
                "resource": _role(action["org"], absolute),
                "request": {"method": "POST", "url": "PractitionerRole"},
            },
            {
                "fullUrl": "urn:uuid:8d4f1c2e-0000-4000-8000-000000000002",
                "resource": {
                    **_team(patient, absolute),
                    "participant": [
                        {
                            "member": {"reference": "urn:uuid:8d4f1c2e-0000-4000-8000-000000000001"},
                            "role": [NURSE],
                        }
                    ],
                },
                "request": {"method": "POST", "url": "CareTeam"},
            },
        ],
    }
    return int(alice.request("POST", "/fhir", bundle).status_code)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_writes_by_a_practitioner_never_widen_her_reach(app: Flask, fhir: Fhir, group: str) -> None:
    system = as_bearer(app, mint_token(app, "system/*.cruds"))
    alice = as_bearer(app, mint_token(app, "user/*.cruds", "alice"))
    assert BASE == "http://localhost/fhir"

    @settings(settings.get_profile(PROFILE))
    @given(recipe=worlds().map(seeded), writes=actions(GROUPS[group]))
    def check(recipe: dict[str, Any], writes: list[dict[str, Any]]) -> None:
        reset(app)
        build(system, recipe)
        world = read_back(system)
        before = Model(world, "alice")
        allowed = before.reach | before.offered | before.coordinated()
        done = []
        for action in writes:
            status = perform(alice, world.current, action)
            done.append((action["kind"], status))
            world = read_back(system)
            after = Model(world, "alice")
            gained = (after.reach | after.offered) - allowed
            assert not gained, (
                f"after writes {done} alice reaches {sorted(gained)} (before: {sorted(allowed)})"
            )

    check()
