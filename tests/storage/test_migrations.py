"""Data migrations: what an existing database gains when it is upgraded."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
from sqlalchemy import insert, select

from coordination_api.app import create_app
from coordination_api.config import Settings
from coordination_api.storage.migrate import upgrade
from coordination_api.storage.schema import (
    history_compartment,
    idx_compartment,
    idx_number,
    idx_reference,
    idx_token,
    resource,
    resource_history,
)
from tests.conftest import Fhir


def test_0008_puts_tasks_stored_before_into_their_patients_compartment(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'old.db'}", security_disabled=True))
    repo = app.extensions["coordination"].repo
    upgrade(repo.engine, "0007")
    with repo.engine.begin() as conn:
        # As a database written before Task joined the Patient compartment: the resource and its
        # reference row, no compartment row (rows written as the code of that revision did).
        pk = conn.execute(
            insert(resource).values(
                res_type="Task", res_id="t1", version=1, last_updated=1, deleted=False, content="{}"
            )
        ).inserted_primary_key[0]
        conn.execute(
            insert(idx_reference).values(
                res_pk=pk, res_type="Task", param="patient", target_type="Patient", target_id="p1"
            )
        )
    upgrade(repo.engine)
    with repo.engine.connect() as conn:
        rows = conn.execute(
            select(idx_compartment.c.patient_id, idx_compartment.c.param).where(
                idx_compartment.c.res_pk == pk
            )
        ).all()
    assert [tuple(r) for r in rows] == [("p1", "patient")]
    repo.engine.dispose()


def test_0015_puts_patient_data_of_any_type_into_its_patients_compartment(tmp_path: Path) -> None:
    """Review 17 R3: a Device naming Q and a Provenance of Q's Observation, stored before 0015 (no
    compartment row, as the code of that revision wrote them), join Q's compartment on upgrade, and
    so do their versions."""

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'old.db'}", security_disabled=True))
    repo = app.extensions["coordination"].repo
    upgrade(repo.engine, "0013")
    bodies = {
        ("Observation", "o1"): {
            "resourceType": "Observation",
            "id": "o1",
            "subject": {"reference": "Patient/q"},
        },
        ("Device", "d1"): {"resourceType": "Device", "id": "d1", "patient": {"reference": "Patient/q"}},
        ("Provenance", "v1"): {
            "resourceType": "Provenance",
            "id": "v1",
            "target": [{"reference": "Observation/o1"}],
        },
    }
    pks = {}
    with repo.engine.begin() as conn:
        for (res_type, res_id), body in bodies.items():
            content = orjson.dumps(body).decode()
            pk = conn.execute(
                insert(resource).values(
                    res_type=res_type,
                    res_id=res_id,
                    version=1,
                    last_updated=1,
                    deleted=False,
                    content=content,
                )
            ).inserted_primary_key[0]
            pks[res_type] = pk
            conn.execute(
                insert(resource_history).values(
                    res_pk=pk,
                    res_type=res_type,
                    res_id=res_id,
                    version=1,
                    last_updated=1,
                    method="POST",
                    deleted=False,
                    content=content,
                )
            )
        conn.execute(
            insert(idx_compartment).values(
                res_pk=pks["Observation"], res_type="Observation", param="subject", patient_id="q"
            )
        )
    upgrade(repo.engine)
    with repo.engine.connect() as conn:
        for res_type in ("Device", "Provenance"):
            current = conn.execute(
                select(idx_compartment.c.patient_id).where(idx_compartment.c.res_pk == pks[res_type])
            ).scalars()
            assert list(current) == ["q"], res_type
            versions = conn.execute(
                select(history_compartment.c.patient_id).where(history_compartment.c.res_pk == pks[res_type])
            ).scalars()
            assert list(versions) == ["q"], res_type
    repo.engine.dispose()


def test_0016_indexes_the_r4_parameters_of_types_the_transcription_lacked(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'old.db'}", security_disabled=True))
    repo = app.extensions["coordination"].repo
    upgrade(repo.engine, "0013")
    v2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
    mr = {"coding": [{"system": v2, "code": "MR"}]}
    account = {
        "resourceType": "Account",
        "id": "a1",
        "status": "active",
        "name": "Séjour",
        "identifier": [{"type": mr, "system": "urn:oid:1.2.3", "value": "ACC-1"}],
    }
    risk = {
        "resourceType": "RiskAssessment",
        "id": "r1",
        "identifier": [{"system": "urn:x", "value": "R-1"}],
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "prediction": [{"probabilityDecimal": 0.3}],
    }
    with repo.engine.begin() as conn:
        pks = {}
        for body in (account, risk):
            pks[body["id"]] = conn.execute(
                insert(resource).values(
                    res_type=body["resourceType"],
                    res_id=body["id"],
                    version=1,
                    last_updated=1,
                    deleted=False,
                    content=json.dumps(body),
                )
            ).inserted_primary_key[0]
        # A row the earlier code wrote (RiskAssessment identifier): rewritten, not doubled.
        conn.execute(
            insert(idx_token).values(
                res_pk=pks["r1"], res_type="RiskAssessment", param="identifier", system="urn:x", code="R-1"
            )
        )
    upgrade(repo.engine)
    with repo.engine.connect() as conn:
        rows = conn.execute(
            select(idx_token.c.res_pk, idx_token.c.param, idx_token.c.code).where(
                idx_token.c.param.in_(["status", "identifier", "identifier:of-type$1"])
            )
        ).all()
        numbers = conn.execute(select(idx_number.c.res_pk, idx_number.c.param)).all()
    assert sorted((r.res_pk, r.param, r.code) for r in rows) == sorted(
        [
            (pks["a1"], "status", "active"),
            (pks["a1"], "identifier", "ACC-1"),
            (pks["a1"], "identifier:of-type$1", "ACC-1"),
            (pks["r1"], "identifier", "R-1"),
        ]
    )
    assert [tuple(r) for r in numbers] == [(pks["r1"], "probability")]
    fhir = Fhir(app.test_client())
    assert fhir.ids("Account?name=sejour&identifier=urn:oid:1.2.3|ACC-1") == {"a1"}
    assert fhir.ids(f"Account?identifier:of-type={v2}|MR|ACC-1") == {"a1"}
    assert fhir.ids("RiskAssessment?probability=lt0.5&subject=Patient/p1") == {"r1"}
    repo.engine.dispose()


def test_0018_indexes_every_extension_an_extension_url_parameter_names(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'old.db'}", security_disabled=True))
    repo = app.extensions["coordination"].repo
    upgrade(repo.engine, "0017")
    url = "https://interop.esante.gouv.fr/ig/fhir/nde/StructureDefinition/event-type"
    r254 = "https://mos.esante.gouv.fr/NOS/TRE_R254-TypeEvenement/FHIR/TRE-R254-TypeEvenement"

    def request(res_id: str, *codes: str) -> dict[str, object]:
        return {
            "resourceType": "CommunicationRequest",
            "id": res_id,
            "status": "active",
            "extension": [{"url": url, "valueCoding": {"system": r254, "code": code}} for code in codes],
        }

    with repo.engine.begin() as conn:
        pks = {}
        for body in (request("two", "ADM", "SOR"), request("none")):
            pks[body["id"]] = conn.execute(
                insert(resource).values(
                    res_type="CommunicationRequest",
                    res_id=body["id"],
                    version=1,
                    last_updated=1,
                    deleted=False,
                    content=json.dumps(body),
                )
            ).inserted_primary_key[0]
        # What the earlier code wrote: the first extension only.
        conn.execute(
            insert(idx_token).values(
                res_pk=pks["two"],
                res_type="CommunicationRequest",
                param="event-type",
                system=r254,
                code="ADM",
            )
        )
    upgrade(repo.engine)
    with repo.engine.connect() as conn:
        rows = conn.execute(
            select(idx_token.c.res_pk, idx_token.c.code).where(idx_token.c.param == "event-type")
        ).all()
        status_rows = conn.execute(select(idx_token.c.res_pk).where(idx_token.c.param == "status")).all()
    assert sorted((r.res_pk, r.code) for r in rows) == [(pks["two"], "ADM"), (pks["two"], "SOR")]
    # Only the resources naming one of the urls are re-indexed: the other keeps its (absent) rows.
    assert [r.res_pk for r in status_rows] == [pks["two"]]
    fhir = Fhir(app.test_client())
    assert fhir.ids(f"CommunicationRequest?event-type={r254}|SOR") == {"two"}
