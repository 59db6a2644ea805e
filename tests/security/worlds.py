"""Random small worlds for the security properties, built over HTTP by a system client."""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import strategies as st

from tests.conftest import Fhir
from tests.security.model import BASE, World

PATIENTS = ["p0", "p1", "p2"]
PRACTITIONERS = ["alice", "bob"]
ORGANIZATIONS = ["o0", "o1"]
# Whole dates far from today, so that "now" is never near a bound.
PERIODS: dict[str, dict[str, str] | None] = {
    "none": None,
    "current": {"start": "2000-01-01", "end": "2199-12-31"},
    "open": {"start": "2001-02-03"},
    "past": {"start": "2000-01-01", "end": "2001-12-31"},
    "future": {"start": "2190-01-01", "end": "2195-12-31"},
}
COORDINATOR = {
    "coding": [
        {
            "system": "https://coordination.example.org/fhir/CodeSystem/cercle-de-soins-role",
            "code": "coordinateur-parcours",
            "display": "Coordinateur de parcours",
        }
    ]
}
NURSE = {"coding": [{"system": "http://snomed.info/sct", "code": "224535009", "display": "Registered nurse"}]}
PRCP = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]}
OPTIN = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]}
CODES = ["8867-4", "29463-7"]
TASK_STATUSES = ["requested", "accepted", "in-progress", "completed", "draft", "cancelled", "on-hold"]


def ref(target: str, absolute: bool = False) -> dict[str, str]:
    return {"reference": f"{BASE}/{target}" if absolute else target}


periods = st.sampled_from(sorted(PERIODS))


@st.composite
def worlds(draw: st.DrawFn) -> dict[str, Any]:
    """A recipe: the resources to PUT in order (ids fixed), then the updates that move resources."""
    roles: list[dict[str, Any]] = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "practitioner": st.sampled_from(PRACTITIONERS),
                    "organization": st.sampled_from([None, *ORGANIZATIONS]),
                    "active": st.sampled_from([True, True, False]),
                    "period": periods,
                }
            ),
            max_size=3,
        )
    )
    members = [*(f"Practitioner/{p}" for p in PRACTITIONERS), *(f"Organization/{o}" for o in ORGANIZATIONS)]
    members += [f"PractitionerRole/r{i}" for i in range(len(roles))]
    member = st.sampled_from(members)
    teams: list[dict[str, Any]] = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "subject": st.sampled_from(PATIENTS),
                    "absolute": st.booleans(),
                    "status": st.sampled_from(["active", "active", "inactive", "proposed"]),
                    "period": periods,
                    "participants": st.lists(
                        st.tuples(member, periods, st.booleans(), st.booleans()), min_size=1, max_size=2
                    ),
                }
            ),
            max_size=4,
        )
    )
    consents: list[dict[str, Any]] = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "patient": st.sampled_from(PATIENTS),
                    "status": st.sampled_from(["active", "active", "inactive"]),
                    "actor": st.sampled_from([None, *members]),
                    "period": periods,
                }
            ),
            max_size=2,
        )
    )
    tasks: list[dict[str, Any]] = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "for": st.sampled_from(PATIENTS),
                    "absolute": st.booleans(),
                    "status": st.sampled_from(TASK_STATUSES),
                    "owner": st.sampled_from([None, *members]),
                    "recipient": st.sampled_from([None, *members]),
                    "period": periods,
                }
            ),
            max_size=3,
        )
    )
    observations: list[dict[str, Any]] = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "subject": st.sampled_from(PATIENTS),
                    "absolute": st.booleans(),
                    "code": st.sampled_from(CODES),
                    "date": st.sampled_from(["2020-01-01", "2021-06-01"]),
                    "performer": st.booleans(),
                    "moved_to": st.sampled_from([None, None, *PATIENTS]),
                }
            ),
            min_size=1,
            max_size=4,
        )
    )
    encounters = draw(st.lists(st.tuples(st.sampled_from(PATIENTS), st.booleans()), max_size=2))
    conditions = draw(st.lists(st.tuples(st.sampled_from(PATIENTS), st.booleans()), max_size=2))
    documents = draw(
        st.lists(
            st.tuples(st.sampled_from(PATIENTS), st.booleans(), st.sampled_from(["ctx", "abs", "none"])),
            max_size=2,
        )
    )
    resources: list[dict[str, Any]] = []
    for index, patient in enumerate(PATIENTS):
        resources.append(
            {
                "resourceType": "Patient",
                "id": patient,
                "name": [{"family": f"Fam{index}", "given": ["X"]}],
                "birthDate": f"19{50 + index * 10}-01-01",
            }
        )
    for name in PRACTITIONERS:
        resources.append({"resourceType": "Practitioner", "id": name, "name": [{"family": name.title()}]})
    for org in ORGANIZATIONS:
        resources.append({"resourceType": "Organization", "id": org, "name": f"Org {org}"})
    for i, role in enumerate(roles):
        body: dict[str, Any] = {
            "resourceType": "PractitionerRole",
            "id": f"r{i}",
            "active": role["active"],
            "practitioner": ref(f"Practitioner/{role['practitioner']}"),
            "code": [NURSE],
        }
        if role["organization"]:
            body["organization"] = ref(f"Organization/{role['organization']}")
        if PERIODS[role["period"]]:
            body["period"] = PERIODS[role["period"]]
        resources.append(body)
    for i, team in enumerate(teams):
        participants = []
        for who, period, absolute, coordinator in team["participants"]:
            participant: dict[str, Any] = {
                "member": ref(who, absolute),
                "role": [COORDINATOR if coordinator else NURSE],
            }
            if PERIODS[period]:
                participant["period"] = PERIODS[period]
            participants.append(participant)
        body = {
            "resourceType": "CareTeam",
            "id": f"ct{i}",
            "status": team["status"],
            "subject": ref(f"Patient/{team['subject']}", team["absolute"]),
            "participant": participants,
        }
        if PERIODS[team["period"]]:
            body["period"] = PERIODS[team["period"]]
        resources.append(body)
    for i, consent in enumerate(consents):
        provision: dict[str, Any] = {"type": "deny"}
        if consent["actor"]:
            provision["actor"] = [
                {
                    "role": PRCP,
                    "reference": ref(consent["actor"]),
                }
            ]
        if PERIODS[consent["period"]]:
            provision["period"] = PERIODS[consent["period"]]
        resources.append(
            {
                "resourceType": "Consent",
                "id": f"cs{i}",
                "status": consent["status"],
                "scope": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                            "code": "patient-privacy",
                        }
                    ]
                },
                "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                "patient": ref(f"Patient/{consent['patient']}"),
                "policyRule": OPTIN,  # ppc-1: a policy or a policyRule
                "provision": provision,
            }
        )
    for i, task in enumerate(tasks):
        body = {
            "resourceType": "Task",
            "id": f"t{i}",
            "status": task["status"],
            "intent": "order",
            "code": {"text": "Soins"},
            "for": ref(f"Patient/{task['for']}", task["absolute"]),
        }
        if task["owner"]:
            body["owner"] = ref(task["owner"])
        if task["recipient"]:
            restriction: dict[str, Any] = {"recipient": [ref(task["recipient"])]}
            if PERIODS[task["period"]]:
                restriction["period"] = PERIODS[task["period"]]
            body["restriction"] = restriction
        resources.append(body)
    for i, (patient, absolute) in enumerate(encounters):
        resources.append(
            {
                "resourceType": "Encounter",
                "id": f"e{i}",
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": ref(f"Patient/{patient}", absolute),
                "serviceProvider": ref("Organization/o1"),
            }
        )
    for i, obs in enumerate(observations):
        body = {
            "resourceType": "Observation",
            "id": f"ob{i}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": obs["code"]}]},
            "subject": ref(f"Patient/{obs['subject']}", obs["absolute"]),
            "effectiveDateTime": obs["date"],
            "valueString": f"note-{obs['code']}",
        }
        if obs["performer"]:
            body["performer"] = [ref("Practitioner/bob")]
        resources.append(body)
    for i, (patient, absolute) in enumerate(conditions):
        resources.append(
            {
                "resourceType": "Condition",
                "id": f"cd{i}",
                "subject": ref(f"Patient/{patient}", absolute),
                "code": {"text": "Diabète"},
            }
        )
    for i, (patient, absolute, context) in enumerate(documents):
        resources.append(
            {
                "resourceType": "DocumentReference",
                "id": f"d{i}",
                "status": "current",
                "subject": ref(f"Patient/{patient}", absolute),
                "content": [{"attachment": {"contentType": "text/plain", "url": f"Binary/b{i}"}}],
            }
        )
        binary: dict[str, Any] = {
            "resourceType": "Binary",
            "id": f"b{i}",
            "contentType": "text/plain",
            "data": base64.b64encode(b"Lettre de liaison").decode(),
        }
        if context != "none":
            binary["securityContext"] = ref(f"DocumentReference/d{i}", context == "abs")
        resources.append(binary)
    moves = []
    for i, obs in enumerate(observations):
        if obs["moved_to"] and obs["moved_to"] != obs["subject"]:
            moved = next(dict(r) for r in resources if r["id"] == f"ob{i}")
            moved["subject"] = ref(f"Patient/{obs['moved_to']}")
            moves.append(moved)
    return {"resources": resources, "moves": moves}


def seeded(recipe: dict[str, Any]) -> dict[str, Any]:
    """A random world plus fixed targets that random ones rarely hit together: alice is on p2's team but
    p2 objects to her (Consent), a Task for p1 is offered to her, bob's role in o1 puts o1 on p0's team."""
    base = [
        {
            "resourceType": "PractitionerRole",
            "id": "rx",
            "active": True,
            "practitioner": ref("Practitioner/bob"),
            "organization": ref("Organization/o1"),
        },
        {
            "resourceType": "CareTeam",
            "id": "ctx",
            "status": "active",
            "subject": ref("Patient/p0"),
            "participant": [{"member": ref("Organization/o1"), "role": [NURSE]}],
        },
        {
            "resourceType": "CareTeam",
            "id": "cty",
            "status": "active",
            "subject": ref("Patient/p2"),
            "participant": [{"member": ref("Practitioner/alice"), "role": [COORDINATOR]}],
        },
        {
            "resourceType": "Consent",
            "id": "csx",
            "status": "active",
            "scope": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                        "code": "patient-privacy",
                    }
                ]
            },
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": ref("Patient/p2"),
            "policyRule": OPTIN,
            "provision": {"type": "deny", "actor": [{"role": PRCP, "reference": ref("Practitioner/alice")}]},
        },
        {
            "resourceType": "Task",
            "id": "tx",
            "status": "requested",
            "intent": "order",
            "code": {"text": "Soins"},
            "for": ref("Patient/p1"),
            "restriction": {"recipient": [ref("Practitioner/alice")]},
        },
    ]
    resources = recipe["resources"]
    split = len(PATIENTS) + len(PRACTITIONERS) + len(ORGANIZATIONS)  # after the fixed people
    return {"resources": [*resources[:split], *base, *resources[split:]], "moves": recipe["moves"]}


def build(fhir: Fhir, recipe: dict[str, Any]) -> None:
    for body in [*recipe["resources"], *recipe["moves"]]:
        response = fhir.request("PUT", f"/fhir/{body['resourceType']}/{body['id']}", body)
        assert response.status_code in (200, 201), (body, response.get_json())


TYPES = [
    "Patient",
    "Practitioner",
    "Organization",
    "PractitionerRole",
    "CareTeam",
    "Consent",
    "Task",
    "Encounter",
    "Observation",
    "Condition",
    "DocumentReference",
    "Binary",
    "Group",
]


def read_back(fhir: Fhir) -> World:
    """The world as the system client sees it now: every version of every resource."""
    world = World()
    for kind in TYPES:
        response = fhir.request("GET", f"/fhir/{kind}/_history?_count=1000", Accept="application/fhir+json")
        assert response.status_code == 200, (kind, response.get_json())
        for entry in response.get_json().get("entry", []):
            resource = entry.get("resource")
            if not resource:
                continue
            key = f"{kind}/{resource['id']}"
            world.versions.setdefault(key, []).append(resource)
    for key, versions in world.versions.items():
        versions.sort(key=lambda r: int(r["meta"]["versionId"]))
        world.current[key] = versions[-1]
    return world
