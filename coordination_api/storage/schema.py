"""Database schema (SQLAlchemy Core), identical on SQLite and PostgreSQL.

Times are stored as integer microseconds since the Unix epoch (UTC) so that range
comparisons behave the same on both databases.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

# BIGINT autoincrement on PostgreSQL; INTEGER PRIMARY KEY (rowid alias) on SQLite.
PK = BigInteger().with_variant(Integer(), "sqlite")
# The constraint and index names every migration was written with. auth/schema.py keeps the same
# four lines for its tables (storage imports nothing of auth, auth nothing of coordination_api); both
# sets of tables share one database and one migration history, so a difference between the copies
# fails tests/storage/test_schema_migrations.py.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

resource = Table(
    "resource",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    # Canonical JSON of the current version (meta.versionId/lastUpdated included); NULL once deleted.
    Column("content", Text, nullable=True),
    UniqueConstraint("res_type", "res_id"),
    Index(None, "res_type", "last_updated"),
    Index(None, "last_updated"),
)

resource_history = Table(
    "resource_history",
    metadata,
    Column("res_pk", PK, ForeignKey("resource.pk", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("method", String(8), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", Text, nullable=True),
    # One row per version: the database refuses a second writer of the same version.
    PrimaryKeyConstraint("res_pk", "version"),
    Index(None, "res_type", "last_updated"),
    Index(None, "last_updated"),
)

# The patients whose compartment held each version (issue 16: vread and history judge a version by its
# own compartments, not by where the resource is now). A deletion keeps the compartments it ended.
history_compartment = Table(
    "history_compartment",
    metadata,
    Column("res_pk", PK, ForeignKey("resource.pk", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("patient_id", String(64), nullable=False),
    PrimaryKeyConstraint("res_pk", "version", "patient_id"),
)

# Conditional create (R4 http.html#ccreate): a unique row per (type, normalized criteria)
# makes concurrent identical conditional creates collapse into one.
conditional_create = Table(
    "conditional_create",
    metadata,
    Column("res_type", String(64), nullable=False),
    Column("criteria_hash", String(64), nullable=False),
    Column("res_pk", PK, ForeignKey("resource.pk", ondelete="CASCADE"), nullable=False),
    PrimaryKeyConstraint("res_type", "criteria_hash"),
)


def _index_table(
    name: str, *columns: Column[object], indexes: list[tuple[str, ...]], composite: bool = True
) -> Table:
    # elem: for the rows of a composite's components, the ordinal of the element they came from
    # (rows of one element match together, R4 search.html#composite); NULL for other rows.
    elem = [Column("elem", Integer, nullable=True)] if composite else []
    table = Table(
        name,
        metadata,
        Column("res_pk", PK, ForeignKey("resource.pk", ondelete="CASCADE"), nullable=False),
        Column("res_type", String(64), nullable=False),
        Column("param", String(100), nullable=False),
        *columns,
        *elem,
        Index(None, "res_pk"),
    )
    for cols in indexes:
        Index(None, *[table.c[c] for c in cols])
    return table


idx_string = _index_table(
    "idx_string",
    # Lower-cased, accent-stripped, truncated: default (starts-with) and :contains matching.
    Column("value_norm", String(255), nullable=False),
    Column("value_exact", Text, nullable=False),
    indexes=[],
)
# Prefix LIKE must use the index on PostgreSQL whatever the database collation.
Index(
    "ix_idx_string_param_value_norm",
    idx_string.c.param,
    idx_string.c.value_norm,
    postgresql_ops={"value_norm": "varchar_pattern_ops"},
    postgresql_include=["res_pk"],  # index-only scans: the semi-join needs only res_pk
)

idx_token = _index_table(
    "idx_token",
    Column("system", String(255), nullable=True),
    Column("code", String(255), nullable=True),
    Column("text_norm", String(255), nullable=True),
    indexes=[("param", "code", "system")],
)

idx_date = _index_table(
    "idx_date",
    Column("low", BigInteger, nullable=False),
    Column("high", BigInteger, nullable=False),
    indexes=[("param", "low", "high"), ("param", "high")],
)

idx_reference = _index_table(
    "idx_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("target_url", String(512), nullable=True),
    Column("identifier_system", String(255), nullable=True),
    Column("identifier_value", String(255), nullable=True),
    indexes=[("param", "target_type", "target_id"), ("target_type", "target_id"), ("param", "target_url")],
)

idx_number = _index_table(
    "idx_number",
    Column("value", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    indexes=[("param", "value")],
)

idx_quantity = _index_table(
    "idx_quantity",
    Column("value", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    Column("system", String(255), nullable=True),
    Column("code", String(255), nullable=True),
    Column("unit", String(255), nullable=True),
    indexes=[("param", "code", "value")],
)

idx_uri = _index_table(
    "idx_uri",
    Column("value", String(512), nullable=False),
    indexes=[("param", "value")],
)

# Patient compartment membership (R4 compartmentdefinition-patient): the access policy filters on it.
idx_compartment = _index_table(
    "idx_compartment",
    Column("patient_id", String(64), nullable=False),
    indexes=[("patient_id", "res_pk")],
    composite=False,
)

INDEX_TABLES = {
    "string": idx_string,
    "token": idx_token,
    "date": idx_date,
    "reference": idx_reference,
    "number": idx_number,
    "quantity": idx_quantity,
    "uri": idx_uri,
    "compartment": idx_compartment,
}

# Intake idempotency (discharge issue): one row per message a sender sent, whatever the door
# ($process-message, NdE, HL7 v2). The primary key makes a replay a no-op (no check-then-insert);
# ``outcome`` keeps the first answer so that the replay gets the same one. The key starts with the
# authenticated client (issue 16): another client claiming the same sender and id never swallows it.
message_log = Table(
    "message_log",
    metadata,
    Column("client", String(255), nullable=False),
    Column("sender", String(255), nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("received_us", BigInteger, nullable=False),
    Column("outcome", Text, nullable=False),
    PrimaryKeyConstraint("client", "sender", "message_id"),
)

# Subscriptions (R4 subscription.html, Subscriptions R5 Backport IG 1.1.0). One state row per
# Subscription resource: what it matches, its status and its event counter
# (events-since-subscription-start); ``events = events + 1 … RETURNING`` hands out event numbers.
subscription_state = Table(
    "subscription_state",
    metadata,
    Column(
        "res_pk", PK, ForeignKey("resource.pk", ondelete="CASCADE"), primary_key=True, autoincrement=False
    ),
    Column("res_id", String(64), nullable=False),
    # The Subscription version this row reflects (the compiled criteria are cached per version).
    Column("version", Integer, nullable=False),
    # requested | active | error | off
    Column("status", String(16), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("topic", String(512), nullable=True),
    Column("endpoint", Text, nullable=False),
    # The endpoint's origin key (subscriptions/endpoint.py origin_key: one per listener however the
    # endpoint is spelled), written with it: the sending pool's per-origin cap and the claim queries
    # that skip a saturated origin compare it by equality (review 20 F4, F6).
    Column("origin", String(300), nullable=False, server_default=text("''")),
    Column("heartbeat_s", Integer, nullable=True),
    Column("events", BigInteger, nullable=False, default=0),
    Column("handshake_due", Boolean, nullable=False, default=False),
    # Handshake / heartbeat claim: a worker owns the row until then (epoch microseconds).
    Column("lease_until", BigInteger, nullable=True),
    Column("last_sent_us", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
    # Backport "backport-max-count": most events one notification carries (1 when absent).
    Column("max_count", Integer, nullable=False, default=1),
    # R4 Subscription.end (epoch microseconds): after it the subscription is off.
    Column("end_us", BigInteger, nullable=True),
    # Who last configured it through the API (auth.policy.Principal): deliveries of full resources
    # are limited by their scopes and, for a practitioner, by the care-team rule. ``owner_scopes``
    # NULL: written outside a request (CLI, import) or with security disabled, i.e. unrestricted.
    Column("owner_client", String(255), nullable=True),
    Column("owner_practitioner", String(64), nullable=True),
    Column("owner_patient", String(64), nullable=True),
    Column("owner_scopes", Text, nullable=True),
    Index(None, "status", "resource_type"),
)

# The outbox: one row per (subscription, event number), written in the transaction that wrote the
# focus resource; the delivery worker sends them in event-number order and marks them delivered.
# Rows are kept after delivery for $events replay.
subscription_outbox = Table(
    "subscription_outbox",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("sub_pk", PK, ForeignKey("subscription_state.res_pk", ondelete="CASCADE"), nullable=False),
    Column("event_number", BigInteger, nullable=False),
    # "Type/id/_history/version" of the focus resource.
    Column("focus", String(512), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    # pending | delivered
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_us", BigInteger, nullable=False),
    Column("lease_until", BigInteger, nullable=True),
    Column("first_failure_us", BigInteger, nullable=True),
    Column("delivered_us", BigInteger, nullable=True),
    Column("last_error", Text, nullable=True),
    # Event numbers are never handed out twice (ARCHITECTURE.md "Storage").
    UniqueConstraint("sub_pk", "event_number"),
    Index(None, "status", "next_attempt_us"),
    Index(None, "sub_pk", "status", "event_number"),
)

# Task dispatch (coordination/dispatch.py): one row per Task that entered dispatch. ``stage`` is the
# Task's dispatch-status (offered-usual | offered-area | escalated | taken | closed); the tick advances
# rows whose ``next_due_us`` has passed (NULL: nothing more to do). Times in epoch microseconds.
task_dispatch = Table(
    "task_dispatch",
    metadata,
    Column(
        "task_pk", PK, ForeignKey("resource.pk", ondelete="CASCADE"), primary_key=True, autoincrement=False
    ),
    Column("task_id", String(64), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("entered_us", BigInteger, nullable=False),
    Column("stage_since_us", BigInteger, nullable=False),
    Column("next_due_us", BigInteger, nullable=True),
    # A tick that claimed the row owns it until then (a crashed worker's claim expires).
    Column("lease_until", BigInteger, nullable=True),
    Index(None, "next_due_us"),
)

# Delivery workers' liveness (observability): each `coordination worker` process upserts its row every
# few seconds and deletes it on a clean exit; /readyz wants a recent one when a worker is expected.
worker_heartbeat = Table(
    "worker_heartbeat",
    metadata,
    Column("worker_id", String(140), primary_key=True),
    Column("seen_us", BigInteger, nullable=False),
)

# Connector jobs (coordination_api/jobs.py): calls to outside services promised by a committed write
# (DMP/MHD pushes, directory enrichment…), run by the delivery worker with retries and backoff; a job
# that cannot succeed ends "dead" with its reason (the dead-letter). ``job_key`` deduplicates pending
# jobs of a kind (a partial unique index: a finished job never blocks a new one).
connector_job = Table(
    "connector_job",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    Column("job_key", String(300), nullable=True),
    Column("payload", Text, nullable=False),
    # pending | done | dead
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_us", BigInteger, nullable=False),
    Column("next_attempt_us", BigInteger, nullable=False),
    Column("lease_until", BigInteger, nullable=True),
    Column("finished_us", BigInteger, nullable=True),
    Column("last_error", Text, nullable=True),
    Index(None, "status", "next_attempt_us"),
    Index(
        "uq_connector_job_pending_key",
        "kind",
        "job_key",
        unique=True,
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
)

# Bulk Data $export jobs (coordination_api/bulk; Bulk Data Access IG 2.0.0 export.html). One row per
# kick-off; the delivery worker produces it in slices under a lease and records in ``progress`` (JSON)
# how far it got and each file's length, so that another worker resumes after a crash. ``status``:
# pending | completed | failed | cancelled. Times in epoch microseconds.
bulk_export_job = Table(
    "bulk_export_job",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    # The id in the status and file URLs: random, unguessable.
    Column("job_id", String(64), nullable=False, unique=True),
    # The client that kicked it off (NULL: security disabled); only it may poll, download, delete.
    Column("owner_client", String(255), nullable=True),
    Column("status", String(16), nullable=False),
    Column("level", String(16), nullable=False),  # system | patient | group
    Column("request_url", Text, nullable=False),
    # The parsed kick-off (types, _since, _typeFilter queries, notes), JSON.
    Column("params", Text, nullable=False),
    Column("transaction_us", BigInteger, nullable=False),
    # Highest resource pk at the first claim (0 before): later resources are not looked at.
    Column("max_pk", BigInteger, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("finished_us", BigInteger, nullable=True),
    Column("expires_us", BigInteger, nullable=True),
    Column("lease_until", BigInteger, nullable=True),
    # Claims that found an expired lease (a crashed worker): the job fails after a few.
    Column("restarts", Integer, nullable=False, default=0),
    Column("progress", Text, nullable=True),
    Column("error", Text, nullable=True),
    Index(None, "status", "created_us"),
    Index(None, "owner_client", "status"),
)

# The patients a Patient- or Group-level export is limited to (the ``patient`` parameter, or the
# Group's members), joined to idx_compartment by the export's queries.
bulk_export_patient = Table(
    "bulk_export_patient",
    metadata,
    Column("job_pk", PK, ForeignKey("bulk_export_job.pk", ondelete="CASCADE"), nullable=False),
    Column("patient_id", String(64), nullable=False),
    PrimaryKeyConstraint("job_pk", "patient_id"),
)
