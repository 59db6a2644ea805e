"""Settings: the only module that reads the environment (prefix ``COORDINATION_``)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from coordination_api.subscriptions.config import SubscriptionSettings

PREFIX = "COORDINATION_"
REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_database_url() -> str:
    instance = REPO_ROOT / "instance"
    return f"sqlite:///{instance / 'coordination.db'}"


def _read_secret(env: Mapping[str, str], name: str) -> str | None:
    """A secret comes from ``NAME`` or from the file named by ``NAME_FILE`` (docker secrets)."""
    value = env.get(PREFIX + name)
    if value:
        return value
    path = env.get(PREFIX + name + "_FILE")
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return None


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(value: str | None, default: int) -> int:
    if value is None or value == "":
        return default
    return int(value)


def _float(value: str | None, default: float) -> float:
    if value is None or value == "":
        return default
    return float(value)


def _subscriptions(env: Mapping[str, str]) -> SubscriptionSettings:
    """``COORDINATION_SUBSCRIPTION_<FIELD>`` for each field of SubscriptionSettings (delays in seconds)."""
    d = SubscriptionSettings()
    p = PREFIX + "SUBSCRIPTION_"
    networks = tuple(n for n in env.get(p + "ALLOWED_NETWORKS", "").split() if n)
    return SubscriptionSettings(
        allow_loopback=_bool(env.get(p + "ALLOW_LOOPBACK"), d.allow_loopback),
        allowed_networks=networks or d.allowed_networks,
        mail_domains=tuple(m for m in env.get(p + "MAIL_DOMAINS", "").split() if m) or d.mail_domains,
        connect_timeout=_float(env.get(p + "CONNECT_TIMEOUT"), d.connect_timeout),
        read_timeout=_float(env.get(p + "READ_TIMEOUT"), d.read_timeout),
        retry_base=_float(env.get(p + "RETRY_BASE"), d.retry_base),
        retry_cap=_float(env.get(p + "RETRY_CAP"), d.retry_cap),
        retry_jitter=_float(env.get(p + "RETRY_JITTER"), d.retry_jitter),
        retry_period=_float(env.get(p + "RETRY_PERIOD"), d.retry_period),
        lease=_float(env.get(p + "LEASE"), d.lease),
        poll_interval=_float(env.get(p + "POLL_INTERVAL"), d.poll_interval),
        batch_size=_int(env.get(p + "BATCH_SIZE"), d.batch_size),
        max_events=_int(env.get(p + "MAX_EVENTS"), d.max_events),
        max_count_cap=_int(env.get(p + "MAX_COUNT_CAP"), d.max_count_cap),
        concurrency=_int(env.get(p + "CONCURRENCY"), d.concurrency),
        per_origin=_int(env.get(p + "PER_ORIGIN"), d.per_origin),
    )


@dataclass(frozen=True)
class DispatchSettings:
    """Task dispatch (coordination/dispatch.py): ``COORDINATION_DISPATCH_<FIELD>``, delays in seconds."""

    # An open Task is offered to the patient's usual professional for this long, then to the area.
    usual_seconds: float = 1800.0
    # Not accepted this long after it entered dispatch: escalated to the CPTS coordinator.
    escalate_seconds: float = 7200.0
    # The coordinator, as a reference ("Organization/x", "PractitionerRole/y", "Practitioner/z");
    # empty: the patient's CareTeam participant whose role has the code ``coordinator_role`` (in any
    # system; default: the care-circle role of the CareTeam profile).
    coordinator: str = ""
    coordinator_role: str = "coordinateur-parcours"
    # Due Tasks one tick claims, and how long the claim holds; PractitionerRoles of a kind examined
    # for area coverage.
    batch_size: int = 50
    lease_seconds: float = 60.0
    max_candidates: int = 500


def _dispatch(env: Mapping[str, str]) -> DispatchSettings:
    d = DispatchSettings()
    p = PREFIX + "DISPATCH_"
    return DispatchSettings(
        usual_seconds=_float(env.get(p + "USUAL_SECONDS"), d.usual_seconds),
        escalate_seconds=_float(env.get(p + "ESCALATE_SECONDS"), d.escalate_seconds),
        coordinator=env.get(p + "COORDINATOR", d.coordinator).strip(),
        coordinator_role=env.get(p + "COORDINATOR_ROLE", d.coordinator_role).strip(),
        batch_size=_int(env.get(p + "BATCH_SIZE"), d.batch_size),
        lease_seconds=_float(env.get(p + "LEASE_SECONDS"), d.lease_seconds),
        max_candidates=_int(env.get(p + "MAX_CANDIDATES"), d.max_candidates),
    )


@dataclass(frozen=True)
class JobSettings:
    """``COORDINATION_JOBS_<FIELD>``: retries (seconds), attempts before the dead-letter, claims."""

    retry_base: float = 5.0
    retry_cap: float = 3600.0
    retry_jitter: float = 0.2
    max_attempts: int = 15
    lease: float = 300.0  # longer than any handler's total timeouts
    batch_size: int = 20


def _jobs(env: Mapping[str, str]) -> JobSettings:
    d = JobSettings()
    p = PREFIX + "JOBS_"
    return JobSettings(
        retry_base=_float(env.get(p + "RETRY_BASE"), d.retry_base),
        retry_cap=_float(env.get(p + "RETRY_CAP"), d.retry_cap),
        retry_jitter=_float(env.get(p + "RETRY_JITTER"), d.retry_jitter),
        max_attempts=_int(env.get(p + "MAX_ATTEMPTS"), d.max_attempts),
        lease=_float(env.get(p + "LEASE"), d.lease),
        batch_size=_int(env.get(p + "BATCH_SIZE"), d.batch_size),
    )


@dataclass(frozen=True)
class AnnuaireSettings:
    """The ANS directory (connectors/annuaire): ``COORDINATION_ANNUAIRE_<FIELD>``; an empty base URL
    means no directory (NullDirectory). The API key (``COORDINATION_ANNUAIRE_API_KEY`` or ``…_FILE``)
    is sent as the ``ESANTE-API-KEY`` header and never shown (repr=False)."""

    base_url: str = ""  # e.g. https://gateway.api.esante.gouv.fr/fhir/v2
    api_key: str | None = field(default=None, repr=False)
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    retries: int = 3
    backoff: float = 0.5
    ca_bundle: str = ""  # a CA bundle path instead of the system's (TLS is always verified)
    cache_ttl: float = 3600.0  # seconds a look-up answer is reused; 0: no cache
    cache_size: int = 10_000
    page_size: int = 100  # _count of paged searches
    max_pages: int = 10_000


def _annuaire(env: Mapping[str, str]) -> AnnuaireSettings:
    d = AnnuaireSettings()
    p = PREFIX + "ANNUAIRE_"
    return AnnuaireSettings(
        base_url=env.get(p + "BASE_URL", "").strip().rstrip("/"),
        api_key=_read_secret(env, "ANNUAIRE_API_KEY"),
        connect_timeout=_float(env.get(p + "CONNECT_TIMEOUT"), d.connect_timeout),
        read_timeout=_float(env.get(p + "READ_TIMEOUT"), d.read_timeout),
        retries=_int(env.get(p + "RETRIES"), d.retries),
        backoff=_float(env.get(p + "BACKOFF"), d.backoff),
        ca_bundle=env.get(p + "CA_BUNDLE", "").strip(),
        cache_ttl=_float(env.get(p + "CACHE_TTL"), d.cache_ttl),
        cache_size=_int(env.get(p + "CACHE_SIZE"), d.cache_size),
        page_size=_int(env.get(p + "PAGE_SIZE"), d.page_size),
        max_pages=_int(env.get(p + "MAX_PAGES"), d.max_pages),
    )


@dataclass(frozen=True)
class ExportSettings:
    """Bulk Data $export (coordination_api/bulk): ``COORDINATION_EXPORT_<FIELD>``, delays in seconds.

    ``directory`` (``COORDINATION_EXPORT_DIR``; empty: ``instance/exports``) holds the NDJSON files; with
    several app processes it must be a volume they all share (any of them serves the downloads).
    """

    directory: str = ""
    ttl: float = 3600.0  # files (and the job) are removed this long after completion
    resources_per_file: int = 100_000
    max_jobs_per_client: int = 2  # jobs not yet finished; more: 429
    lease: float = 60.0  # a worker's claim; renewed while it writes
    chunk_size: int = 1000  # rows read from the database at a time
    slice: float = 5.0  # a worker pass works this long on an export, then lets other work run
    poll_interval: int = 2  # Retry-After of an in-progress status answer
    # A job starts this long after its kick-off, so that writes in flight at transactionTime have
    # committed before it reads (it exports the database as of that instant).
    settle: float = 1.0


def _export(env: Mapping[str, str]) -> ExportSettings:
    d = ExportSettings()
    p = PREFIX + "EXPORT_"
    return ExportSettings(
        directory=env.get(p + "DIR", d.directory).strip(),
        ttl=_float(env.get(p + "TTL"), d.ttl),
        resources_per_file=_int(env.get(p + "RESOURCES_PER_FILE"), d.resources_per_file),
        max_jobs_per_client=_int(env.get(p + "MAX_JOBS_PER_CLIENT"), d.max_jobs_per_client),
        lease=_float(env.get(p + "LEASE"), d.lease),
        chunk_size=_int(env.get(p + "CHUNK_SIZE"), d.chunk_size),
        slice=_float(env.get(p + "SLICE"), d.slice),
        poll_interval=_int(env.get(p + "POLL_INTERVAL"), d.poll_interval),
        settle=_float(env.get(p + "SETTLE"), d.settle),
    )


@dataclass(frozen=True)
class SupervisionSettings:
    """Restart policy of ``coordination serve`` (server.py; docs/operations.md "Supervision"):
    ``COORDINATION_SERVE_<FIELD>``. A child that exits is started again after ``backoff_first``
    seconds, doubling with each exit in the window up to ``backoff_max``; the ``crash_loop_exits``-th
    exit of one child within ``crash_loop_window`` seconds stops the service (exit status 1)."""

    backoff_first: float = 0.5
    backoff_max: float = 30.0
    crash_loop_exits: int = 5
    crash_loop_window: float = 60.0


def _supervision(env: Mapping[str, str]) -> SupervisionSettings:
    d = SupervisionSettings()
    p = PREFIX + "SERVE_"
    return SupervisionSettings(
        backoff_first=max(0.0, _float(env.get(p + "BACKOFF_FIRST"), d.backoff_first)),
        backoff_max=max(0.0, _float(env.get(p + "BACKOFF_MAX"), d.backoff_max)),
        crash_loop_exits=max(1, _int(env.get(p + "CRASH_LOOP_EXITS"), d.crash_loop_exits)),
        crash_loop_window=max(0.0, _float(env.get(p + "CRASH_LOOP_WINDOW"), d.crash_loop_window)),
    )


@dataclass(frozen=True)
class EparcoursSettings:
    """The regional e-parcours platform (coordination_api/eparcours.py): ``COORDINATION_EPARCOURS_<FIELD>``.

    ``url`` (empty: nothing is forwarded) receives FHIR message Bundles over mutual TLS: the client
    certificate and key files the platform issued, and its CA bundle (TLS is always verified).
    """

    url: str = ""
    client_cert: str = ""
    client_key: str = ""
    ca_file: str = ""
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    types: tuple[str, ...] = ("Encounter", "CarePlan")
    sender: str = ""  # MessageHeader.source.name (the CPTS)


def _eparcours(env: Mapping[str, str]) -> EparcoursSettings:
    d = EparcoursSettings()
    p = PREFIX + "EPARCOURS_"
    return EparcoursSettings(
        url=env.get(p + "URL", "").strip(),
        client_cert=env.get(p + "CLIENT_CERT", "").strip(),
        client_key=env.get(p + "CLIENT_KEY", "").strip(),
        ca_file=env.get(p + "CA_FILE", "").strip(),
        connect_timeout=_float(env.get(p + "CONNECT_TIMEOUT"), d.connect_timeout),
        read_timeout=_float(env.get(p + "READ_TIMEOUT"), d.read_timeout),
        types=tuple(t for t in env.get(p + "TYPES", "").split() if t) or d.types,
        sender=env.get(p + "SENDER", "").strip(),
    )


@dataclass(frozen=True)
class DmpSettings:
    """The DMP through a PDSm (coordination_api/fhir/dmp.py): ``COORDINATION_DMP_<FIELD>``.

    ``recipient_url`` (empty: the Null recipient, nothing sent) receives IHE MHD ITI-65 transaction
    Bundles; ``client_cert``/``client_key``/``ca_file`` for mutual TLS; ``source_oid`` is our system's OID
    (SubmissionSet sourceId).
    """

    recipient_url: str = ""
    client_cert: str = ""
    client_key: str = ""
    ca_file: str = ""
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    source_oid: str = "1.2.250.1.999.1"


def _dmp(env: Mapping[str, str]) -> DmpSettings:
    d = DmpSettings()
    p = PREFIX + "DMP_"
    return DmpSettings(
        recipient_url=env.get(p + "RECIPIENT_URL", "").strip(),
        client_cert=env.get(p + "CLIENT_CERT", "").strip(),
        client_key=env.get(p + "CLIENT_KEY", "").strip(),
        ca_file=env.get(p + "CA_FILE", "").strip(),
        connect_timeout=_float(env.get(p + "CONNECT_TIMEOUT"), d.connect_timeout),
        read_timeout=_float(env.get(p + "READ_TIMEOUT"), d.read_timeout),
        source_oid=env.get(p + "SOURCE_OID", d.source_oid).strip(),
    )


@dataclass(frozen=True)
class MssanteSettings:
    """MSSanté, the subscriptions' ``email`` channel: ``COORDINATION_MSSANTE_<FIELD>``.

    ``smtp_host`` empty: the Null sender (nothing mailed). SMTP submission with STARTTLS; the client
    certificate and key the operator issued; its CA; optional login (password from env or _FILE).
    """

    smtp_host: str = ""
    smtp_port: int = 587
    from_address: str = ""
    client_cert: str = ""
    client_key: str = ""
    ca_file: str = ""
    username: str = ""
    password: str | None = field(default=None, repr=False)
    timeout: float = 20.0


def _mssante(env: Mapping[str, str]) -> MssanteSettings:
    d = MssanteSettings()
    p = PREFIX + "MSSANTE_"
    return MssanteSettings(
        smtp_host=env.get(p + "SMTP_HOST", "").strip(),
        smtp_port=_int(env.get(p + "SMTP_PORT"), d.smtp_port),
        from_address=env.get(p + "FROM", "").strip(),
        client_cert=env.get(p + "CLIENT_CERT", "").strip(),
        client_key=env.get(p + "CLIENT_KEY", "").strip(),
        ca_file=env.get(p + "CA_FILE", "").strip(),
        username=env.get(p + "SMTP_USERNAME", "").strip(),
        password=_read_secret(env, "MSSANTE_SMTP_PASSWORD"),
        timeout=_float(env.get(p + "TIMEOUT"), d.timeout),
    )


@dataclass(frozen=True)
class PscSettings:
    """Pro Santé Connect login (connectors/psc, auth/psc.py): ``COORDINATION_PSC_<FIELD>``.

    ``discovery_url`` empty: no PSC login. ``redirect_uri`` empty: ``/auth/psc/callback`` as reached;
    ``auto_create``: a professional unknown here gets a Practitioner and a federated login at first
    login; ``introspect``: the PSC access token is introspected (RFC 7662) and must be active.
    """

    discovery_url: str = ""
    client_id: str = ""
    client_secret: str | None = field(default=None, repr=False)
    redirect_uri: str = ""
    scopes: str = "openid scope_all"
    acr_values: str = "eidas1"
    auto_create: bool = False
    introspect: bool = False
    ca_file: str = ""
    connect_timeout: float = 5.0
    read_timeout: float = 10.0


def _psc(env: Mapping[str, str]) -> PscSettings:
    d = PscSettings()
    p = PREFIX + "PSC_"
    return PscSettings(
        discovery_url=env.get(p + "DISCOVERY_URL", "").strip(),
        client_id=env.get(p + "CLIENT_ID", "").strip(),
        client_secret=_read_secret(env, "PSC_CLIENT_SECRET"),
        redirect_uri=env.get(p + "REDIRECT_URI", "").strip(),
        scopes=env.get(p + "SCOPES", d.scopes).strip(),
        acr_values=env.get(p + "ACR_VALUES", d.acr_values).strip(),
        auto_create=_bool(env.get(p + "AUTO_CREATE"), d.auto_create),
        introspect=_bool(env.get(p + "INTROSPECT"), d.introspect),
        ca_file=env.get(p + "CA_FILE", "").strip(),
        connect_timeout=_float(env.get(p + "CONNECT_TIMEOUT"), d.connect_timeout),
        read_timeout=_float(env.get(p + "READ_TIMEOUT"), d.read_timeout),
    )


@dataclass(frozen=True)
class Hl7v2Settings:
    """HL7 v2 intake (issue 16). Caps ``COORDINATION_HL7V2_MAX_REPETITIONS`` / ``_MAX_FIELD_BYTES`` (every
    door: AE naming the limit and the field). The MLLP listener, ``COORDINATION_MLLP_<FIELD>``: plain MLLP
    binds loopback only unless ``ALLOW_REMOTE_PLAIN``; it accepts only ``SENDERS`` (space-separated
    ``MSH-3^MSH-4``; none by default, any when security is disabled) and keys its messages by ``CLIENT``.
    ``TLS_CERT``/``TLS_KEY``/``TLS_CA_FILE``: MLLP over TLS requiring a client certificate signed by that CA
    (IHE ATNA secure node); ``TLS_CLIENTS`` maps a certificate to a registered client, space-separated
    ``cn:<subject CN>=<client id>`` or ``sha256:<fingerprint hex>=<client id>``; the client's registered
    senders apply (and ``SENDERS`` too when set). A frame must complete within ``FRAME_DEADLINE`` s.

    Identifiers (issue 18): ``COORDINATION_HL7V2_LOCAL_ID_TYPES`` the PID-3 types (HL7 table 0203)
    accepted as the sender's local patient identifier (comma-separated, default ``PI,MR,PN,AN``);
    ``COORDINATION_HL7V2_AUTHORITIES`` assigning-authority namespaces (CX-4.1) → identifier system URI,
    comma-separated ``<namespace>=<URI>`` (a bare OID reads as ``urn:oid:<OID>``)."""

    max_repetitions: int = 100
    max_field_bytes: int = 65_536
    local_id_types: tuple[str, ...] = ("PI", "MR", "PN", "AN")
    authorities: tuple[tuple[str, str], ...] = ()
    host: str = "127.0.0.1"
    allow_remote_plain: bool = False
    senders: tuple[str, ...] = ()
    client: str = "mllp"
    frame_deadline: float = 30.0
    idle_timeout: float = 60.0
    max_connections: int = 64
    max_connections_per_peer: int = 8
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca_file: str = ""
    tls_clients: tuple[tuple[str, str], ...] = ()


_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")


def _authorities(text: str) -> tuple[tuple[str, str], ...]:
    """``COORDINATION_HL7V2_AUTHORITIES``: ``NS=urn:oid:1.2.3,NS2=https://…`` (comma or space separated)."""
    pairs = []
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        namespace, sep, uri = item.partition("=")
        uri = f"urn:oid:{uri}" if _OID.fullmatch(uri) else uri
        if not sep or not namespace or not _URI.fullmatch(uri):
            raise ValueError(
                f"{PREFIX}HL7V2_AUTHORITIES: {item[:80]!r} is not <namespace>=<absolute URI or OID>"
            )
        pairs.append((namespace, uri))
    return tuple(pairs)


def _hl7v2(env: Mapping[str, str]) -> Hl7v2Settings:
    d = Hl7v2Settings()
    p = PREFIX + "MLLP_"
    types = env.get(PREFIX + "HL7V2_LOCAL_ID_TYPES")
    pairs = [item.rsplit("=", 1) for item in env.get(p + "TLS_CLIENTS", "").split() if "=" in item]
    return Hl7v2Settings(
        max_repetitions=_int(env.get(PREFIX + "HL7V2_MAX_REPETITIONS"), d.max_repetitions),
        max_field_bytes=_int(env.get(PREFIX + "HL7V2_MAX_FIELD_BYTES"), d.max_field_bytes),
        local_id_types=(
            tuple(t.upper() for t in re.split(r"[,\s]+", types) if t) if types else d.local_id_types
        ),
        authorities=_authorities(env.get(PREFIX + "HL7V2_AUTHORITIES", "")),
        host=env.get(p + "HOST", d.host).strip() or d.host,
        allow_remote_plain=_bool(env.get(p + "ALLOW_REMOTE_PLAIN"), d.allow_remote_plain),
        senders=tuple(env.get(p + "SENDERS", "").split()),
        client=env.get(p + "CLIENT", d.client).strip() or d.client,
        frame_deadline=_float(env.get(p + "FRAME_DEADLINE"), d.frame_deadline),
        idle_timeout=_float(env.get(p + "IDLE_TIMEOUT"), d.idle_timeout),
        max_connections=_int(env.get(p + "MAX_CONNECTIONS"), d.max_connections),
        max_connections_per_peer=_int(env.get(p + "MAX_CONNECTIONS_PER_PEER"), d.max_connections_per_peer),
        tls_cert=env.get(p + "TLS_CERT", "").strip(),
        tls_key=env.get(p + "TLS_KEY", "").strip(),
        tls_ca_file=env.get(p + "TLS_CA_FILE", "").strip(),
        tls_clients=tuple((k, v) for k, v in pairs),
    )


@dataclass(frozen=True)
class DatabaseTimeouts:
    """Bounds on every database connection (docs/operations.md, database faults), in seconds.

    A statement cancelled by one of them, or a database that cannot be reached, is answered 503 with
    Retry-After (errors.py), never 500, and never after the request's own timeout.
    """

    # PostgreSQL statement_timeout: longest single statement, 0 = none (SQLite has no equivalent).
    statement: float = 30.0
    # PostgreSQL lock_timeout (0 = wait for ever); SQLite busy_timeout, how long a writer waits for
    # the write lock (0 = not at all).
    lock: float = 10.0
    # PostgreSQL connect_timeout (libpq rounds up to whole seconds, at least 2): how soon a request
    # learns that the server is down.
    connect: float = 5.0
    # PostgreSQL idle_in_transaction_session_timeout: a transaction left open (a stuck process) does
    # not hold its locks for ever (0 = none).
    idle_in_transaction: float = 60.0
    # Waiting for a free pooled connection (all COORDINATION_DB_POOL_SIZE, and as many again of
    # overflow, busy); with a whole statement timeout after it, a request still ends within gunicorn's
    # 60 s.
    pool: float = 10.0


def _database_timeouts(env: Mapping[str, str]) -> DatabaseTimeouts:
    p = PREFIX + "DB_"
    d = DatabaseTimeouts()
    return DatabaseTimeouts(
        statement=_float(env.get(p + "STATEMENT_TIMEOUT"), d.statement),
        lock=_float(env.get(p + "LOCK_TIMEOUT"), d.lock),
        connect=_float(env.get(p + "CONNECT_TIMEOUT"), d.connect),
        idle_in_transaction=_float(env.get(p + "IDLE_IN_TRANSACTION_TIMEOUT"), d.idle_in_transaction),
        pool=_float(env.get(p + "POOL_TIMEOUT"), d.pool),
    )


@dataclass(frozen=True)
class Settings:
    """Everything the application is configured with, resolved once at start."""

    database_url: str = field(default_factory=_default_database_url)
    # Public base URL of the FHIR endpoint; empty means "as the client reached it". It is also the
    # audience of access tokens and, with /fhir replaced by /auth/token, of client assertions: left
    # empty, only a loopback Host (local development) is accepted as an audience.
    public_base_url: str = ""
    max_body_bytes: int = 10 * 1024 * 1024
    default_page_size: int = 20
    max_page_size: int = 1000
    max_include_results: int = 1000
    max_transaction_entries: int = 10_000
    # Request JSON nested deeper than this (arrays/objects) is refused with 400 before any
    # recursive processing (150 nested extensions must not reach a RecursionError).
    max_json_depth: int = 64
    # Caller-supplied FHIRPath ($apply, PlanDefinition conditions and dynamic values): seconds one
    # evaluation may run, and one regular expression inside it (matches(), replaceMatches()).
    expression_regex_timeout: float = 0.1
    db_pool_size: int = 10
    db_echo: bool = False
    # COORDINATION_DB_STATEMENT_TIMEOUT, _LOCK_, _CONNECT_, _IDLE_IN_TRANSACTION_, _POOL_TIMEOUT.
    db_timeouts: DatabaseTimeouts = field(default_factory=DatabaseTimeouts)
    secret_key: str | None = None
    log_level: str = "INFO"
    # Observability (logs.py, metrics.py, health.py): "json" (one object a line) or "text"; one access
    # line per request (off for benchmarks); prometheus_client's multiprocess directory (its own
    # variable PROMETHEUS_MULTIPROC_DIR, set by `serve` for its children); /readyz wants a delivery
    # worker heartbeat younger than worker_heartbeat_max_age seconds when ready_requires_worker
    # (None: not set; `serve` then decides from --no-worker).
    log_format: str = "json"
    access_log: bool = True
    metrics_multiproc_dir: str = ""
    ready_requires_worker: bool | None = None
    worker_heartbeat_max_age: float = 30.0
    # A meta.profile we do not ship: a warning (default) or a refusal.
    reject_unknown_profiles: bool = False
    # Security (auth/): turning it off is for benchmarks and local experiments only; `serve` then
    # refuses any non-loopback address.
    security_disabled: bool = False
    access_token_ttl: int = 300
    auth_code_ttl: int = 60
    offline_token_ttl: int = 90 * 24 * 3600
    online_token_ttl: int = 12 * 3600
    # Login throttling (docs/security.md section 7): attempts a minute and failures per 10 minutes from
    # one address; a username locked from one address after login_max_failures consecutive failures,
    # and from every address after login_account_max_failures, for login_lockout_seconds doubled at
    # each further failure up to login_lockout_max_seconds (per address) and
    # login_account_lockout_max_seconds (per account).
    login_attempts_per_minute: int = 120
    login_failures_per_address: int = 30
    login_max_failures: int = 5
    login_lockout_seconds: int = 60
    login_lockout_max_seconds: int = 3600
    login_account_max_failures: int = 20
    login_account_lockout_max_seconds: int = 900
    # private_key_jwt: a client's JWKS URL is fetched again for an unknown kid at most once in this
    # many seconds (a forged assertion cannot make us fetch on every request).
    jwks_refetch_seconds: int = 300
    # Browsers allowed to call the API (CORS); empty = no cross-origin access.
    cors_origins: tuple[str, ...] = ()
    # Number of trusted reverse proxies in front (X-Forwarded-For/-Proto/-Host), for ProxyFix.
    trusted_proxies: int = 0
    # Session cookie only over HTTPS (set when served behind TLS).
    secure_cookies: bool = False
    # Audit of reads and searches (writes are always audited in their own transaction): "sync"
    # answers only once the event is committed (group commit by a writer thread); "async" does not
    # wait (committed within milliseconds; a hard crash may lose the last ones, as HAPI's BALP
    # memory-queue sink) and is an explicit operator choice.
    audit_reads: str = "sync"
    audit_queue_max: int = 10_000
    # Restart policy of `coordination serve`: COORDINATION_SERVE_*.
    supervision: SupervisionSettings = field(default_factory=SupervisionSettings)
    # Subscription delivery (worker delays, retries, endpoint safety): COORDINATION_SUBSCRIPTION_*.
    subscriptions: SubscriptionSettings = field(default_factory=SubscriptionSettings)
    # Task dispatch (offer delays, coordinator): COORDINATION_DISPATCH_*.
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    # Connector jobs (calls to outside services through the outbox): COORDINATION_JOBS_*.
    jobs: JobSettings = field(default_factory=JobSettings)
    # Pro Santé Connect login: COORDINATION_PSC_*.
    psc: PscSettings = field(default_factory=PscSettings)
    # MSSanté (the email subscription channel): COORDINATION_MSSANTE_*.
    mssante: MssanteSettings = field(default_factory=MssanteSettings)
    # DMP pushes through a PDSm (IHE MHD ITI-65): COORDINATION_DMP_*.
    dmp: DmpSettings = field(default_factory=DmpSettings)
    # Regional e-parcours platform forwarding (mutual TLS): COORDINATION_EPARCOURS_*.
    eparcours: EparcoursSettings = field(default_factory=EparcoursSettings)
    # The ANS directory (Annuaire Santé FHIR API): COORDINATION_ANNUAIRE_*.
    annuaire: AnnuaireSettings = field(default_factory=AnnuaireSettings)
    # Bulk Data $export (files, expiry, per-client limit): COORDINATION_EXPORT_*.
    export: ExportSettings = field(default_factory=ExportSettings)
    # HL7 v2 caps (COORDINATION_HL7V2_*) and the MLLP listener (COORDINATION_MLLP_*).
    hl7v2: Hl7v2Settings = field(default_factory=Hl7v2Settings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        base = cls(
            # The URL holds the database password: COORDINATION_DATABASE_URL_FILE (docker secret) too.
            database_url=_read_secret(env, "DATABASE_URL") or _default_database_url(),
            public_base_url=env.get(PREFIX + "PUBLIC_BASE_URL", "").rstrip("/"),
            max_body_bytes=_int(env.get(PREFIX + "MAX_BODY_BYTES"), 10 * 1024 * 1024),
            default_page_size=_int(env.get(PREFIX + "DEFAULT_PAGE_SIZE"), 20),
            max_page_size=_int(env.get(PREFIX + "MAX_PAGE_SIZE"), 1000),
            max_include_results=_int(env.get(PREFIX + "MAX_INCLUDE_RESULTS"), 1000),
            max_transaction_entries=_int(env.get(PREFIX + "MAX_TRANSACTION_ENTRIES"), 10_000),
            max_json_depth=_int(env.get(PREFIX + "MAX_JSON_DEPTH"), 64),
            expression_regex_timeout=_float(env.get(PREFIX + "EXPRESSION_REGEX_TIMEOUT"), 0.1),
            db_pool_size=_int(env.get(PREFIX + "DB_POOL_SIZE"), 10),
            db_echo=_bool(env.get(PREFIX + "DB_ECHO"), False),
            db_timeouts=_database_timeouts(env),
            secret_key=_read_secret(env, "SECRET_KEY"),
            log_level=env.get(PREFIX + "LOG_LEVEL", "INFO").upper(),
            log_format=env.get(PREFIX + "LOG_FORMAT", "json").strip().lower(),
            access_log=_bool(env.get(PREFIX + "ACCESS_LOG"), True),
            metrics_multiproc_dir=env.get("PROMETHEUS_MULTIPROC_DIR", ""),
            ready_requires_worker=(
                None
                if not env.get(PREFIX + "READY_REQUIRES_WORKER")
                else _bool(env.get(PREFIX + "READY_REQUIRES_WORKER"), False)
            ),
            worker_heartbeat_max_age=_float(env.get(PREFIX + "WORKER_HEARTBEAT_MAX_AGE"), 30.0),
            reject_unknown_profiles=_bool(env.get(PREFIX + "REJECT_UNKNOWN_PROFILES"), False),
            security_disabled=_bool(env.get(PREFIX + "SECURITY_DISABLED"), False),
            access_token_ttl=_int(env.get(PREFIX + "ACCESS_TOKEN_TTL"), 300),
            auth_code_ttl=_int(env.get(PREFIX + "AUTH_CODE_TTL"), 60),
            offline_token_ttl=_int(env.get(PREFIX + "OFFLINE_TOKEN_TTL"), 90 * 24 * 3600),
            online_token_ttl=_int(env.get(PREFIX + "ONLINE_TOKEN_TTL"), 12 * 3600),
            login_attempts_per_minute=_int(env.get(PREFIX + "LOGIN_ATTEMPTS_PER_MINUTE"), 120),
            login_failures_per_address=_int(env.get(PREFIX + "LOGIN_FAILURES_PER_ADDRESS"), 30),
            login_max_failures=_int(env.get(PREFIX + "LOGIN_MAX_FAILURES"), 5),
            login_lockout_seconds=_int(env.get(PREFIX + "LOGIN_LOCKOUT_SECONDS"), 60),
            login_lockout_max_seconds=_int(env.get(PREFIX + "LOGIN_LOCKOUT_MAX_SECONDS"), 3600),
            login_account_max_failures=_int(env.get(PREFIX + "LOGIN_ACCOUNT_MAX_FAILURES"), 20),
            login_account_lockout_max_seconds=_int(
                env.get(PREFIX + "LOGIN_ACCOUNT_LOCKOUT_MAX_SECONDS"), 900
            ),
            jwks_refetch_seconds=_int(env.get(PREFIX + "JWKS_REFETCH_SECONDS"), 300),
            audit_reads=env.get(PREFIX + "AUDIT_READS", "sync"),
            audit_queue_max=_int(env.get(PREFIX + "AUDIT_QUEUE_MAX"), 10_000),
            cors_origins=tuple(o for o in env.get(PREFIX + "CORS_ORIGINS", "").split() if o),
            trusted_proxies=_int(env.get(PREFIX + "TRUSTED_PROXIES"), 0),
            secure_cookies=_bool(env.get(PREFIX + "SECURE_COOKIES"), False),
            supervision=_supervision(env),
            subscriptions=_subscriptions(env),
            dispatch=_dispatch(env),
            jobs=_jobs(env),
            psc=_psc(env),
            mssante=_mssante(env),
            dmp=_dmp(env),
            eparcours=_eparcours(env),
            annuaire=_annuaire(env),
            export=_export(env),
            hl7v2=_hl7v2(env),
        )
        return replace(base, **overrides) if overrides else base
