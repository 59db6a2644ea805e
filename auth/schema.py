"""Tables of the authorization server, the access policy and the audit trail (SQLAlchemy Core).

Times are integer seconds (auth) or microseconds (policy periods, audit) since the Unix epoch, so
comparisons behave the same on SQLite and PostgreSQL. Uniqueness the specifications require (client
assertion ``jti``, single-use codes, token identifiers) is a database constraint, never check-then-insert.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

# BIGINT autoincrement on PostgreSQL; INTEGER PRIMARY KEY (rowid alias) on SQLite. The naming
# convention is coordination_api.storage.schema's too, kept as a copy (auth imports nothing of
# coordination_api, storage nothing of auth): one database, one migration history, so the two copies
# must not differ (tests/storage/test_schema_migrations.py fails if they do).
PK = BigInteger().with_variant(Integer(), "sqlite")
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}

auth_metadata = MetaData(naming_convention=NAMING_CONVENTION)

oauth_client = Table(
    "oauth_client",
    auth_metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    # client_secret_basic | private_key_jwt | none
    Column("auth_method", String(32), nullable=False),
    Column("secret_hash", Text, nullable=True),
    Column("scope", Text, nullable=False),
    Column("redirect_uris", Text, nullable=False, default="[]"),  # JSON list
    Column("jwks", Text, nullable=True),  # JSON Web Key Set (from --jwks-file)
    Column("jwks_uri", String(1000), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

# The message senders a client may send as (issue 16, "senders are bound to credentials"): an HL7 v2
# "MSH-3^MSH-4", a MessageHeader.source.endpoint, a FINESS of an NdE sender. No row: no sender.
oauth_client_sender = Table(
    "oauth_client_sender",
    auth_metadata,
    Column("client_id", String(64), nullable=False),
    Column("sender", String(255), nullable=False),
    PrimaryKeyConstraint("client_id", "sender"),
)

oauth_user = Table(
    "oauth_user",
    auth_metadata,
    Column("username", String(150), primary_key=True),
    Column("password_hash", Text, nullable=True),  # NULL: federated login only (Pro Santé Connect)
    Column("practitioner_id", String(64), nullable=False),
    Column("rpps", String(11), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", BigInteger, nullable=False, default=0),
    Column("disabled", Boolean, nullable=False, default=False),
)

# Authorization codes (RFC 6749 4.1). Kept after use so that a replay revokes what the code issued
# (RFC 6749 4.1.2: "SHOULD revoke (when possible) all tokens previously issued based on that code").
oauth_code = Table(
    "oauth_code",
    auth_metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("username", String(150), nullable=False),
    Column("redirect_uri", String(1000), nullable=False),
    Column("scope", Text, nullable=False),
    Column("code_challenge", String(128), nullable=True),
    Column("code_challenge_method", String(10), nullable=True),
    Column("nonce", String(255), nullable=True),
    Column("aud", String(1000), nullable=True),
    Column("patient", String(64), nullable=True),
    Column("auth_time", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used", Boolean, nullable=False, default=False),
)

# Access tokens: looked up by hash on every request, so revocation takes effect at once.
oauth_token = Table(
    "oauth_token",
    auth_metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("jti", String(64), nullable=False, unique=True),
    # The grant lineage (an authorization code, then its refresh rotations) revoked as one.
    Column("family", String(64), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("username", String(150), nullable=True),
    Column("practitioner_id", String(64), nullable=True),
    Column("scope", Text, nullable=False),
    Column("patient", String(64), nullable=True),
    Column("aud", String(1000), nullable=True),
    Column("issued_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("refresh_hash", String(64), nullable=True, unique=True),
    Column("refresh_expires_at", BigInteger, nullable=True),
    Column("refresh_used", Boolean, nullable=False, default=False),
    Column("revoked", Boolean, nullable=False, default=False),
    Index(None, "family"),
    Index(None, "expires_at"),
)

# RFC 7523 3 / SMART Backend Services: an assertion jti is never accepted twice (kept until exp).
oauth_assertion_jti = Table(
    "oauth_assertion_jti",
    auth_metadata,
    Column("client_id", String(64), nullable=False),
    Column("jti", String(255), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("client_id", "jti"),
)

# Our token-signing keys. Retired keys stay published until the tokens they signed have expired.
signing_key = Table(
    "signing_key",
    auth_metadata,
    Column("kid", String(64), primary_key=True),
    Column("alg", String(10), nullable=False),
    Column("private_pem", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("retired_at", BigInteger, nullable=True),
)

# Secrets the processes must share (session cookie key) when none is configured.
server_secret = Table(
    "server_secret",
    auth_metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# Login throttling: one row per attempt, counted over a sliding window (shared by all processes).
login_attempt = Table(
    "login_attempt",
    auth_metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("address", String(64), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("success", Boolean, nullable=False),
    Index(None, "address", "at"),
)

# Consecutive failed logins per (username, address) and per username (address "*"), whatever the
# username (known or not, so that locking tells nothing); counted by one atomic upsert (auth/store.py).
login_failure = Table(
    "login_failure",
    auth_metadata,
    Column("username", String(150), nullable=False),
    Column("address", String(64), nullable=False),
    Column("failures", Integer, nullable=False),
    Column("locked_until", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("username", "address"),
    Index(None, "updated_at"),
)

# Care-team sharing rule (CSP L.1110-4): one row per CareTeam participant, rebuilt on every CareTeam write.
care_team_access = Table(
    "care_team_access",
    auth_metadata,
    Column("res_pk", PK, nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("member", String(140), nullable=False),  # "Practitioner/1", "PractitionerRole/2", "Organization/3"
    Column("start_us", BigInteger, nullable=True),
    Column("end_us", BigInteger, nullable=True),
    Index(None, "member", "patient_id"),
    Index(None, "res_pk"),
)

# A practitioner's roles and their organizations (from PractitionerRole), rebuilt on every role write.
practitioner_affiliation = Table(
    "practitioner_affiliation",
    auth_metadata,
    Column("res_pk", PK, nullable=False),
    Column("role_id", String(64), nullable=False),
    Column("practitioner_id", String(64), nullable=False),
    Column("organization", String(140), nullable=True),
    Column("start_us", BigInteger, nullable=True),
    Column("end_us", BigInteger, nullable=True),
    Index(None, "practitioner_id"),
    Index(None, "res_pk"),
)

# Task dispatch (CSP L.1110-4: professionals taking part in the care): one row per actor a Task gives
# reach to its patient — "offer": each Task.restriction.recipient while the Task is requested;
# "owner": Task.owner while the Task is open. Rebuilt on every Task write.
task_access = Table(
    "task_access",
    auth_metadata,
    Column("res_pk", PK, nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("member", String(140), nullable=False),
    Column("kind", String(8), nullable=False),  # offer | owner
    Column("start_us", BigInteger, nullable=True),
    Column("end_us", BigInteger, nullable=True),
    Index(None, "member", "patient_id"),
    Index(None, "res_pk"),
)

# Droit d'opposition: one row per (Consent, denied actor); actor "*" denies everyone.
consent_deny = Table(
    "consent_deny",
    auth_metadata,
    Column("res_pk", PK, nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("actor", String(140), nullable=False),
    Column("start_us", BigInteger, nullable=True),
    Column("end_us", BigInteger, nullable=True),
    Index(None, "patient_id", "actor"),
    Index(None, "res_pk"),
)

# The audit trail (IHE BALP): a narrow row per event, the AuditEvent JSON beside it; never updated.
audit_event = Table(
    "audit_event",
    auth_metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("recorded_us", BigInteger, nullable=False),
    Column("subtype", String(40), nullable=False),  # read, search-type, create, … (restful-interaction)
    Column("outcome", String(2), nullable=False),  # 0, 4, 8, 12
    Column("client_id", String(64), nullable=True),
    Column("agent", String(140), nullable=True),  # "Practitioner/…" of a user token
    Column("entity", String(140), nullable=True),  # "Type/id" of the resource acted on
    Column("break_glass", Boolean, nullable=False, default=False),
    Column("content", Text, nullable=False),
    Index(None, "agent", "recorded_us"),
    Index(None, "client_id", "recorded_us"),
    Index(None, "recorded_us"),
)

# The patients an audited event touched (a search may touch many): "AuditEvent?patient=" reads this.
audit_patient = Table(
    "audit_patient",
    auth_metadata,
    Column("audit_pk", PK, nullable=False),
    Column("patient_id", String(64), nullable=False),
    PrimaryKeyConstraint("audit_pk", "patient_id"),
    Index(None, "patient_id", "audit_pk"),
)
