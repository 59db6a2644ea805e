"""The migrations build the schema the code declares (SQLAlchemy metadata of storage and auth): an empty
database upgraded to head compares equal, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Engine, Integer, MetaData, text

from auth import schema as auth_schema
from coordination_api.storage import schema as storage_schema
from coordination_api.storage.migrate import head_revisions, is_current, upgrade


def differences(engine: Engine, metadatas: list[MetaData]) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadatas))


def test_migrations_at_head_build_the_declared_schema(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    assert is_current(empty_engine), head_revisions()
    assert differences(empty_engine, [storage_schema.metadata, auth_schema.auth_metadata]) == []


def test_the_comparison_sees_a_drift(empty_engine: Engine) -> None:
    # Positive control: a column the code declares and no migration adds is reported.
    upgrade(empty_engine)
    drifted = MetaData(naming_convention=storage_schema.NAMING_CONVENTION)
    for table in [*storage_schema.metadata.sorted_tables, *auth_schema.auth_metadata.sorted_tables]:
        table.to_metadata(drifted)
    drifted.tables["resource"].append_column(Column("undeclared", Integer, nullable=True))
    found = differences(empty_engine, [drifted])
    assert [(d[0], d[2], d[3].name) for d in found] == [("add_column", "resource", "undeclared")]


def test_storage_and_auth_name_constraints_alike() -> None:
    # Two copies (storage imports nothing of auth, auth nothing of coordination_api), one database.
    assert storage_schema.NAMING_CONVENTION == auth_schema.NAMING_CONVENTION
    assert repr(storage_schema.PK) == repr(auth_schema.PK)


def test_0017_backfills_the_origin_key_of_existing_subscriptions(empty_engine: Engine) -> None:
    """Review 20 F4, F6: subscriptions written before 0017 get the key of their endpoint's spelling."""

    upgrade(empty_engine, "0016")
    with empty_engine.begin() as conn:
        for pk, endpoint in [(1, "HTTP://LocalHost.:80/a"), (2, "http://127.1/b"), (3, "MAILTO:x@y.fr")]:
            conn.execute(
                text(
                    "INSERT INTO resource (pk, res_type, res_id, version, deleted, last_updated, content) "
                    "VALUES (:pk, 'Subscription', :id, 1, false, 0, '{}')"
                ),
                {"pk": pk, "id": f"s{pk}"},
            )
            conn.execute(
                text(
                    "INSERT INTO subscription_state (res_pk, res_id, version, status, resource_type, "
                    "endpoint, events, handshake_due, max_count) "
                    "VALUES (:pk, :id, 1, 'active', 'Encounter', :endpoint, 0, false, 1)"
                ),
                {"pk": pk, "id": f"s{pk}", "endpoint": endpoint},
            )
    upgrade(empty_engine)
    with empty_engine.connect() as conn:
        found = dict(conn.execute(text("SELECT res_pk, origin FROM subscription_state")).all())
    assert found == {1: "localhost:80", 2: "127.0.0.1:80", 3: "mailto:"}
