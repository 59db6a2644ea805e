"""Settings: the only module that reads the environment.

One tree: ``Settings`` (pydantic-settings) and its sections (frozen pydantic dataclasses). Each setting
is declared once, with its type, its default, its environment variable and its meaning: the name is
the section's ``ENV_PREFIX`` plus the field name in capitals unless ``setting(env=...)`` names it. The
README's settings table is generated from this tree (``coordination settings``) and a test keeps it
exact (tests/config/).

``Settings.from_env()`` reads the process environment (or a given mapping); an empty variable counts as
unset, except for a text setting, which it empties. A secret (``secret=True``) is also read from the
file that ``NAME_FILE`` names (docker secrets). ``Settings(...)`` alone reads nothing: the defaults and
the given values (tests).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass as std_dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic.dataclasses import dataclass, is_pydantic_dataclass
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PREFIX = "COORDINATION_"
REPO_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A variable that cannot be read; the message names it (never a secret's value)."""


def setting(
    default: Any = None,
    doc: str = "",
    *,
    env: str | None = None,
    secret: bool = False,
    factory: Callable[[], Any] | None = None,
    shown: str | None = None,
    empty_is_default: bool = False,
) -> Any:
    """One setting: its default, its meaning (the README's), and what differs from the rule: the
    variable's name, a secret (``_FILE``, never shown), how the default reads in the README."""
    extra: dict[str, Any] = {"secret": secret, "empty_is_default": empty_is_default}
    if env:
        extra["env"] = env
    if shown is not None:
        extra["shown"] = shown
    if factory is not None:
        return Field(default_factory=factory, description=doc, repr=not secret, json_schema_extra=extra)
    return Field(default, description=doc, repr=not secret, json_schema_extra=extra)


# How a variable's text becomes a value (values given in code pass unchanged).
def _stripped(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _words(value: Any) -> Any:
    """Space-separated words."""
    return tuple(value.split()) if isinstance(value, str) else value


def _codes(value: Any) -> Any:
    """Comma- or space-separated codes, in capitals."""
    return tuple(t.upper() for t in re.split(r"[,\s]+", value) if t) if isinstance(value, str) else value


_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")


def _authorities(value: Any) -> Any:
    """``NS=urn:oid:1.2.3,NS2=https://…`` (comma or space separated; a bare OID reads as urn:oid)."""
    if not isinstance(value, str):
        return value
    pairs = []
    for item in re.split(r"[,\s]+", value.strip()):
        if not item:
            continue
        namespace, sep, uri = item.partition("=")
        uri = f"urn:oid:{uri}" if _OID.fullmatch(uri) else uri
        if not sep or not namespace or not _URI.fullmatch(uri):
            raise ValueError(f"{item[:80]!r} is not <namespace>=<absolute URI or OID>")
        pairs.append((namespace, uri))
    return tuple(pairs)


def _certificate_clients(value: Any) -> Any:
    """Space-separated ``<certificate>=<client id>`` (items without ``=`` are ignored)."""
    if not isinstance(value, str):
        return value
    return tuple(tuple(item.rsplit("=", 1)) for item in value.split() if "=" in item)


Text = Annotated[str, BeforeValidator(_stripped)]
Url = Annotated[str, BeforeValidator(lambda v: _stripped(v).rstrip("/") if isinstance(v, str) else v)]
Upper = Annotated[str, BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)]
Lower = Annotated[str, BeforeValidator(lambda v: _stripped(v).lower() if isinstance(v, str) else v)]
Words = Annotated[tuple[str, ...], BeforeValidator(_words)]
Codes = Annotated[tuple[str, ...], BeforeValidator(_codes)]
Pairs = Annotated[tuple[tuple[str, str], ...], BeforeValidator(_certificate_clients)]
Authorities = Annotated[tuple[tuple[str, str], ...], BeforeValidator(_authorities)]
Seconds = Annotated[float, AfterValidator(lambda v: max(0.0, v))]  # a negative delay means none
AtLeastOne = Annotated[int, AfterValidator(lambda v: max(1, v))]


def _time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"not an IANA time zone name: {name!r}") from exc
    return name


TimeZone = Annotated[str, BeforeValidator(_stripped), AfterValidator(_time_zone)]


@dataclass(frozen=True)
class SubscriptionSettings:
    """Subscription delivery (subscriptions/): worker delays, retries, endpoint safety."""

    ENV_PREFIX: ClassVar[str] = PREFIX + "SUBSCRIPTION_"

    allow_loopback: bool = setting(
        True,
        "plain `http://` and loopback endpoints are accepted (`make run`); turn off in production",
    )
    allowed_networks: Words = setting((), "networks (CIDR, space-separated) exempt from the SSRF guard")
    mail_domains: Words = setting(
        (),
        "domains the `mailto:` endpoints of the email (MSSanté) channel may name, e.g. `*.mssante.fr`; "
        "empty: no `mailto:` endpoint is accepted",
    )
    connect_timeout: float = setting(5.0, "seconds to connect, one notification POST")
    read_timeout: float = setting(10.0, "seconds to read the answer, one notification POST")
    retry_base: float = setting(2.0, "retries: base * 2^(attempt-1) seconds, capped, with ± jitter")
    retry_cap: float = setting(600.0, "longest wait between two retries, seconds")
    retry_jitter: float = setting(0.2, "fraction of each retry delay taken off at random (outbox/backoff.py)")
    retry_period: float = setting(
        24 * 3600.0,
        "seconds of retries, then the subscription goes to status `error` (its events stay for `$events`)",
    )
    lease: float = setting(
        20.0,
        "seconds a claimed notification or handshake belongs to its worker (renewed while a send runs: "
        "outbox `Queue.kept`); a crashed worker's row waits this long",
    )
    concurrency: int = setting(8, "notifications a worker sends at once (a thread each)")
    per_origin: int = setting(
        2,
        "of them at most to one origin (the listener's address and port however the endpoint spells it; "
        "all `mailto:` count as one): a hanging endpoint holds these threads, not the worker",
    )
    poll_interval: float = setting(
        1.0,
        "seconds the worker waits between idle polls (with the doorbell, a safety net: retries due "
        "later, a missed wake-up)",
    )
    doorbell: bool = setting(
        True,
        "the worker is woken by the writes that give it work (PostgreSQL LISTEN/NOTIFY; SQLite: a local "
        "socket) instead of waiting for the next poll; off: it only polls",
    )
    batch_size: int = setting(50, "rows a worker pass claims")
    max_events: int = setting(1000, "most events one `$events` answer replays")
    max_count_cap: int = setting(
        100, "ceiling on a subscription's `backport-max-count` (events per notification Bundle)"
    )


@dataclass(frozen=True)
class DispatchSettings:
    """Task dispatch (coordination/dispatch.py): who is offered an open Task, and when."""

    ENV_PREFIX: ClassVar[str] = PREFIX + "DISPATCH_"

    usual_seconds: float = setting(
        1800.0, "an open Task is offered to the patient's usual professional this long, then to the area"
    )
    escalate_seconds: float = setting(
        7200.0, "not accepted this long after it entered dispatch: escalated to the CPTS coordinator"
    )
    coordinator: Text = setting(
        "",
        "the coordinator, as a reference (`Organization/x`, `PractitionerRole/y`, `Practitioner/z`); "
        "empty: the patient's CareTeam participant whose role has the code `COORDINATOR_ROLE`",
    )
    coordinator_role: Text = setting(
        "coordinateur-parcours", "that role code (any system; default: the CareTeam profile's)"
    )
    batch_size: int = setting(50, "due Tasks one dispatch tick claims")
    lease_seconds: float = setting(60.0, "how long that claim holds")
    max_candidates: int = setting(500, "PractitionerRoles of a kind examined for area coverage")


@dataclass(frozen=True)
class JobSettings:
    """Connector jobs (coordination_api/jobs.py): calls to outside services through the outbox."""

    ENV_PREFIX: ClassVar[str] = PREFIX + "JOBS_"

    retry_base: float = setting(5.0, "retries: base * 2^(attempt-1) seconds, capped, with ± jitter")
    retry_cap: float = setting(3600.0, "longest wait between two retries, seconds")
    retry_jitter: float = setting(0.2, "fraction of each retry delay taken off at random (outbox/backoff.py)")
    max_attempts: int = setting(15, "attempts before the job goes to the dead-letter")
    lease: float = setting(
        300.0, "seconds a claimed job belongs to its worker (longer than any call's timeouts)"
    )
    batch_size: int = setting(20, "jobs a worker pass claims")


@dataclass(frozen=True)
class AnnuaireSettings:
    """The ANS directory (connectors/annuaire, Annuaire Santé FHIR API)."""

    ENV_PREFIX: ClassVar[str] = PREFIX + "ANNUAIRE_"

    base_url: Url = setting("", "e.g. `https://gateway.api.esante.gouv.fr/fhir/v2`; empty: no directory")
    api_key: str | None = setting(None, "sent as the `ESANTE-API-KEY` header", secret=True)
    connect_timeout: float = setting(5.0, "seconds to connect")
    read_timeout: float = setting(20.0, "seconds to read an answer")
    retries: int = setting(3, "retries of a failed call")
    backoff: float = setting(0.5, "first retry delay, seconds (doubling)")
    ca_bundle: Text = setting("", "a CA bundle instead of the system's (TLS is always verified)")
    cache_ttl: float = setting(3600.0, "seconds a look-up answer is reused; 0: no cache")
    cache_size: int = setting(10_000, "look-up answers kept")
    page_size: int = setting(100, "`_count` of paged searches")
    max_pages: int = setting(10_000, "most pages one search follows")


@dataclass(frozen=True)
class ExportSettings:
    """Bulk Data `$export` (bulk/): files, expiry, per-client limit."""

    ENV_PREFIX: ClassVar[str] = PREFIX + "EXPORT_"

    directory: Text = setting(
        "",
        "where the NDJSON files go (empty: `instance/exports`); with several app processes, a volume "
        "they all share",
        env=PREFIX + "EXPORT_DIR",
    )
    ttl: float = setting(3600.0, "files (and the job) are removed this long after completion, seconds")
    resources_per_file: int = setting(100_000, "resources per NDJSON file")
    max_jobs_per_client: int = setting(2, "unfinished jobs a client may have; more: 429")
    lease: float = setting(60.0, "seconds a worker's claim on a job lasts (renewed while it writes)")
    chunk_size: int = setting(1000, "rows read from the database at a time")
    slice: float = setting(5.0, "seconds a worker pass works on an export before other work runs")
    poll_interval: int = setting(2, "`Retry-After` of an in-progress status answer, seconds")
    settle: float = setting(
        1.0,
        "seconds between kick-off and start, so that writes in flight at `transactionTime` have committed",
    )


@dataclass(frozen=True)
class SupervisionSettings:
    """Restart policy of ``coordination serve`` (server.py; docs/operations.md "Supervision"): a child
    that exits is started again after ``backoff_first`` seconds, doubling with each exit in the window up
    to ``backoff_max``; the ``crash_loop_exits``-th exit of one child within ``crash_loop_window``
    seconds stops the service (exit status 1)."""

    ENV_PREFIX: ClassVar[str] = PREFIX + "SERVE_"

    backoff_first: Seconds = setting(0.5, "`serve` restarts a child that exited after this many seconds")
    backoff_max: Seconds = setting(30.0, "doubling with each exit in the window up to this")
    crash_loop_exits: AtLeastOne = setting(
        5, "this many exits of one child within the window stop the service (exit status 1)"
    )
    crash_loop_window: Seconds = setting(60.0, "that window, seconds")


@dataclass(frozen=True)
class EparcoursSettings:
    """The regional e-parcours platform (integrations/eparcours.py, connectors/eparcours): FHIR message
    Bundles over mutual TLS."""

    ENV_PREFIX: ClassVar[str] = PREFIX + "EPARCOURS_"

    url: Text = setting("", "the platform's message endpoint; empty: nothing is forwarded")
    client_cert: Text = setting("", "client certificate file the platform issued (mutual TLS)")
    client_key: Text = setting("", "its key file")
    ca_file: Text = setting("", "the platform's CA bundle (TLS is always verified)")
    connect_timeout: float = setting(5.0, "seconds to connect")
    read_timeout: float = setting(20.0, "seconds to read an answer")
    types: Words = setting(("Encounter", "CarePlan"), "resource types forwarded (space-separated)")
    sender: Text = setting("", "`MessageHeader.source.name` (the CPTS)")


@dataclass(frozen=True)
class DmpSettings:
    """The DMP through a PDSm (integrations/dmp.py): IHE MHD ITI-65 transaction Bundles."""

    ENV_PREFIX: ClassVar[str] = PREFIX + "DMP_"

    recipient_url: Text = setting("", "the PDSm's MHD endpoint; empty: nothing is sent")
    client_cert: Text = setting("", "client certificate file (mutual TLS)")
    client_key: Text = setting("", "its key file")
    ca_file: Text = setting("", "the PDSm's CA bundle")
    connect_timeout: float = setting(5.0, "seconds to connect")
    read_timeout: float = setting(30.0, "seconds to read an answer")
    source_oid: Text = setting("1.2.250.1.999.1", "our system's OID (SubmissionSet `sourceId`)")


@dataclass(frozen=True)
class MssanteSettings:
    """MSSanté, the subscriptions' ``email`` channel: SMTP submission with STARTTLS."""

    ENV_PREFIX: ClassVar[str] = PREFIX + "MSSANTE_"

    smtp_host: Text = setting("", "the operator's SMTP submission host; empty: nothing is mailed")
    smtp_port: int = setting(587, "its port (STARTTLS)")
    from_address: Text = setting(
        "", "the sender address (empty: `notifications@localhost`)", env=PREFIX + "MSSANTE_FROM"
    )
    client_cert: Text = setting("", "client certificate file the operator issued")
    client_key: Text = setting("", "its key file")
    ca_file: Text = setting("", "the operator's CA bundle")
    username: Text = setting("", "SMTP login (optional)", env=PREFIX + "MSSANTE_SMTP_USERNAME")
    password: str | None = setting(None, "its password", env=PREFIX + "MSSANTE_SMTP_PASSWORD", secret=True)
    timeout: float = setting(20.0, "seconds for one SMTP exchange")


@dataclass(frozen=True)
class PscSettings:
    """Pro Santé Connect login (connectors/psc, auth/psc.py)."""

    ENV_PREFIX: ClassVar[str] = PREFIX + "PSC_"

    discovery_url: Text = setting("", "PSC's OpenID discovery document; empty: no PSC login")
    client_id: Text = setting("", "our client id at PSC")
    client_secret: str | None = setting(None, "our client secret at PSC", secret=True)
    redirect_uri: Text = setting("", "empty: `/auth/psc/callback` as reached")
    scopes: Text = setting("openid scope_all", "scopes asked")
    acr_values: Text = setting("eidas1", "`acr_values` asked")
    auto_create: bool = setting(
        False,
        "a professional unknown here gets a Practitioner and a federated login at first login",
    )
    introspect: bool = setting(False, "the PSC access token is introspected (RFC 7662) and must be active")
    ca_file: Text = setting("", "a CA bundle for PSC instead of the system's")
    connect_timeout: float = setting(5.0, "seconds to connect")
    read_timeout: float = setting(10.0, "seconds to read an answer")


@dataclass(frozen=True)
class Hl7v2Settings:
    """HL7 v2 intake (integrations/hl7v2.py, connectors/hl7v2): caps, identifiers and the MLLP listener.
    Plain MLLP binds loopback only unless ``allow_remote_plain``; it accepts only ``senders`` (none by
    default, any when security is disabled) and keys its messages by ``client``. With ``tls_*``, MLLP
    over TLS requires a client certificate signed by that CA (IHE ATNA secure node), mapped to a
    registered client by ``tls_clients``; the client's registered senders apply (and ``senders`` too
    when set)."""

    ENV_PREFIX: ClassVar[str] = PREFIX + "MLLP_"

    max_repetitions: int = setting(
        100,
        "repetitions of one field (every door: AE naming the limit and the field)",
        env=PREFIX + "HL7V2_MAX_REPETITIONS",
    )
    max_field_bytes: int = setting(65_536, "bytes of one field", env=PREFIX + "HL7V2_MAX_FIELD_BYTES")
    local_id_types: Codes = setting(
        ("PI", "MR", "PN", "AN"),
        "PID-3 identifier types (HL7 table 0203) accepted as the sender's local patient identifier "
        "(comma-separated)",
        env=PREFIX + "HL7V2_LOCAL_ID_TYPES",
        shown="PI,MR,PN,AN",
    )
    authorities: Authorities = setting(
        (),
        "assigning authorities (CX-4.1) to identifier systems, comma-separated `<namespace>=<URI>` (a bare "
        "OID reads as `urn:oid:<OID>`)",
        env=PREFIX + "HL7V2_AUTHORITIES",
    )
    port: int = setting(2575, "MLLP port of `coordination serve` and `mllp` (`--port` wins)", env="MLLP_PORT")
    host: Text = setting("127.0.0.1", "address of `coordination mllp` (`--host` wins)", empty_is_default=True)
    allow_remote_plain: bool = setting(False, "plain MLLP may bind a non-loopback address")
    senders: Words = setting((), "senders plain MLLP accepts, space-separated `MSH-3^MSH-4`")
    client: Text = setting("mllp", "the client plain MLLP messages are keyed by", empty_is_default=True)
    frame_deadline: float = setting(30.0, "seconds a frame must complete within")
    idle_timeout: float = setting(60.0, "seconds an idle connection is kept (`--idle-timeout` wins)")
    max_connections: int = setting(64, "connections at once")
    max_connections_per_peer: int = setting(8, "connections at once from one address")
    tls_cert: Text = setting("", "server certificate file: MLLP over TLS")
    tls_key: Text = setting("", "its key file")
    tls_ca_file: Text = setting("", "the CA client certificates must be signed by")
    tls_clients: Pairs = setting(
        (),
        "certificate to registered client, space-separated `cn:<subject CN>=<client id>` or "
        "`sha256:<fingerprint hex>=<client id>`",
    )


@dataclass(frozen=True)
class DatabaseTimeouts:
    """Bounds on every database connection (docs/operations.md, database faults), in seconds. A statement
    cancelled by one of them, or a database that cannot be reached, is answered 503 with Retry-After
    (errors.py), never 500, and never after the request's own timeout."""

    ENV_PREFIX: ClassVar[str] = PREFIX + "DB_"

    statement: float = setting(
        30.0,
        "PostgreSQL `statement_timeout`: the longest single statement, 0: none (SQLite has none)",
        env=PREFIX + "DB_STATEMENT_TIMEOUT",
    )
    lock: float = setting(
        10.0,
        "PostgreSQL `lock_timeout` (0: wait for ever); SQLite `busy_timeout`, how long a writer waits "
        "for the write lock",
        env=PREFIX + "DB_LOCK_TIMEOUT",
    )
    connect: float = setting(
        5.0,
        "PostgreSQL `connect_timeout` (whole seconds, at least 2): how soon a request learns the server "
        "is down",
        env=PREFIX + "DB_CONNECT_TIMEOUT",
    )
    idle_in_transaction: float = setting(
        60.0,
        "PostgreSQL `idle_in_transaction_session_timeout`: a transaction left open does not hold its "
        "locks for ever (0: none)",
        env=PREFIX + "DB_IDLE_IN_TRANSACTION_TIMEOUT",
    )
    pool: float = setting(
        10.0,
        "waiting for a free pooled connection (the pool and as many again of overflow busy)",
        env=PREFIX + "DB_POOL_TIMEOUT",
    )


def _default_database_url() -> str:
    return f"sqlite:///{REPO_ROOT / 'instance' / 'coordination.db'}"


class Settings(BaseSettings):
    """Everything the application is configured with, resolved once at start."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid")
    ENV_PREFIX: ClassVar[str] = PREFIX

    database_url: Text = setting(
        doc="SQLAlchemy URL, e.g. `postgresql+psycopg://postgres@127.0.0.1:5432/test` (it holds the "
        "password: `_FILE` reads it from a docker secret)",
        factory=_default_database_url,
        secret=True,
        shown="sqlite:///<repo>/instance/coordination.db",
    )
    public_base_url: Url = setting(
        "",
        "the FHIR base, e.g. `https://cpts.example/fhir`: `Location`, `fullUrl`, paging links, token "
        "audiences, and the base whose absolute references are stored relative. **Required in "
        "production**: empty, it is as the client reached it and only a loopback `Host` gets tokens",
    )
    port: int = setting(8080, "HTTP port of `coordination serve` (`--port` wins)", env="PORT")
    time_zone: TimeZone = setting(
        "Europe/Paris",
        "IANA time zone the coordinator pages show dates in (e.g. `Indian/Reunion`, `America/Cayenne`)",
    )
    max_body_bytes: int = setting(10 * 1024 * 1024, "larger bodies get 413")
    default_page_size: int = setting(20, "`_count` default")
    max_page_size: int = setting(1000, "`_count` cap")
    max_include_results: int = setting(1000, "cap on `_include`/`_revinclude` results per page")
    max_transaction_entries: int = setting(10_000, "larger Bundles get 403 too-costly")
    preload_definitions: bool = setting(
        True,
        "`serve` loads the FHIR definitions and resource models before its HTTP workers fork (shared, "
        "about 10 s of CPU at start): off, the first writes of each worker wait for them instead",
    )
    max_json_depth: int = setting(
        64,
        "request JSON nested deeper (arrays/objects) gets 400, checked before any recursive processing",
    )
    expression_regex_timeout: float = setting(
        0.1,
        "seconds one `matches()`/`replaceMatches()` regex of a caller-supplied FHIRPath (`$apply`, "
        "protocols) may run; past it 422 (expressions are capped at 4,000 characters, patterns at 1,000)",
    )
    db_pool_size: int = setting(10, "SQLAlchemy pool size (PostgreSQL)")
    analyze_after_writes: bool = setting(
        True,
        "refresh the planner statistics (`ANALYZE`) of the tables this server's writes grow, as "
        "autovacuum would; needed when autovacuum is off (docs/operations.md, statistics)",
    )
    analyze_threshold: int = setting(
        1000, "rows written to a table since its last `ANALYZE` before it is analyzed again, plus ..."
    )
    analyze_scale_factor: float = setting(
        0.1, "... this fraction of its size at that `ANALYZE` (autovacuum's default: 50 + 0.1 x size)"
    )
    db_echo: bool = setting(False, "log every SQL statement")
    secret_key: str | None = setting(
        None, "signs the login/consent session cookie; unset: generated, kept in the database", secret=True
    )
    log_level: Upper = setting("INFO", "level of the `coordination_api` loggers")
    log_format: Lower = setting("json", "`json` (one object a line) or `text`")
    access_log: bool = setting(True, "one access line per request (off for benchmarks)")
    metrics_multiproc_dir: str = setting(
        "",
        "prometheus_client's multiprocess directory (`serve` sets it for its children)",
        env="PROMETHEUS_MULTIPROC_DIR",
    )
    ready_requires_worker: bool | None = setting(
        None,
        "`/readyz` wants a delivery worker heartbeat; unset: `serve` decides from `--no-worker`",
    )
    worker_heartbeat_max_age: float = setting(30.0, "seconds that heartbeat may be old")
    reject_unknown_profiles: bool = setting(
        False, "a `meta.profile` we do not ship: warning (default) or 422"
    )
    security_disabled: bool = setting(
        False,
        "no authentication nor access control, for benchmarks and local experiments only; `serve` then "
        "refuses any non-loopback address",
    )
    access_token_ttl: int = setting(300, "access token lifetime, seconds")
    auth_code_ttl: int = setting(60, "authorization code lifetime, seconds")
    offline_token_ttl: int = setting(90 * 24 * 3600, "offline refresh token lifetime, seconds")
    online_token_ttl: int = setting(12 * 3600, "online refresh token lifetime, seconds")
    login_attempts_per_minute: int = setting(120, "login attempts a minute from one address")
    login_failures_per_address: int = setting(30, "login failures per 10 minutes from one address")
    login_max_failures: int = setting(
        5, "consecutive failures that lock a username from one address (docs/security.md section 7)"
    )
    login_lockout_seconds: int = setting(60, "first lock, seconds, doubled at each further failure")
    login_lockout_max_seconds: int = setting(3600, "longest lock from one address, seconds")
    login_account_max_failures: int = setting(
        20, "consecutive failures that lock a username from every address"
    )
    login_account_lockout_max_seconds: int = setting(900, "longest lock of an account, seconds")
    jwks_refetch_seconds: int = setting(
        300, "a client's JWKS URL is fetched again for an unknown `kid` at most once in this many seconds"
    )
    cors_origins: Words = setting((), "browser origins allowed to call the API (CORS), space-separated")
    trusted_proxies: int = setting(
        0,
        "trusted reverse proxies in front (`X-Forwarded-For`/`-Proto`/`-Host`/`-Port`/`-Prefix`: the proxy "
        "must set or strip each)",
    )
    secure_cookies: bool = setting(
        False, "session cookie marked Secure also when the server is reached on loopback (it is otherwise)"
    )
    audit_reads: str = setting(
        "sync",
        "`sync`: a read is answered once its AuditEvent is committed; `async`: without waiting (a hard "
        "crash may lose the last ones)",
    )
    audit_queue_max: int = setting(
        10_000, "read audit events waiting for the database before requests get 503"
    )
    db_timeouts: DatabaseTimeouts = setting(factory=DatabaseTimeouts)
    supervision: SupervisionSettings = setting(factory=SupervisionSettings)
    subscriptions: SubscriptionSettings = setting(factory=SubscriptionSettings)
    dispatch: DispatchSettings = setting(factory=DispatchSettings)
    jobs: JobSettings = setting(factory=JobSettings)
    psc: PscSettings = setting(factory=PscSettings)
    mssante: MssanteSettings = setting(factory=MssanteSettings)
    dmp: DmpSettings = setting(factory=DmpSettings)
    eparcours: EparcoursSettings = setting(factory=EparcoursSettings)
    annuaire: AnnuaireSettings = setting(factory=AnnuaireSettings)
    export: ExportSettings = setting(factory=ExportSettings)
    hl7v2: Hl7v2Settings = setting(factory=Hl7v2Settings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Constructed directly: only the given values (tests); the environment through from_env.
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """The settings of ``env`` (default: the process environment); ``overrides`` win."""
        values = Environment(cls, os.environ if env is None else env)()
        try:
            return cls(**{**values, **overrides})
        except ValidationError as exc:
            raise SettingsError(_explain(exc)) from None


@std_dataclass(frozen=True)
class Spec:
    """One setting of the tree: where it is, its variable, its declaration."""

    path: tuple[str, ...]
    env: str
    field: FieldInfo

    @property
    def secret(self) -> bool:
        return bool(self.extra.get("secret"))

    @property
    def extra(self) -> dict[str, Any]:
        extra = self.field.json_schema_extra
        return extra if isinstance(extra, dict) else {}


def _fields(cls: Any) -> dict[str, FieldInfo]:
    fields: dict[str, FieldInfo] = cls.__pydantic_fields__ if is_pydantic_dataclass(cls) else cls.model_fields
    return fields


def _walk(cls: Any, path: tuple[str, ...] = ()) -> Iterator[Spec]:
    for name, info in _fields(cls).items():
        section = info.annotation
        if isinstance(section, type) and is_pydantic_dataclass(section):
            yield from _walk(section, (*path, name))
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        env = extra.get("env") or cls.ENV_PREFIX + name.upper()
        yield Spec((*path, name), str(env), info)


SPECS: tuple[Spec, ...] = tuple(_walk(Settings))
_BY_PATH = {spec.path: spec for spec in SPECS}
assert len({spec.env for spec in SPECS}) == len(SPECS), "two settings share an environment variable"


class Environment(PydanticBaseSettingsSource):
    """The settings source: each setting's variable of a mapping (``NAME_FILE`` too for a secret)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.env = env

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads the whole tree at once

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for spec in SPECS:
            raw = self.env.get(spec.env)
            if not raw and spec.secret and self.env.get(spec.env + "_FILE"):
                path = self.env[spec.env + "_FILE"]
                try:
                    raw = Path(path).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise SettingsError(f"{spec.env}_FILE: cannot read {path}: {exc.strerror}") from None
            if raw is None:
                continue
            if raw == "" and (
                spec.secret or spec.field.annotation is not str or spec.extra.get("empty_is_default")
            ):
                continue  # empty: unset (compose passes ${X:-} so); a text setting is emptied
            section = values
            for key in spec.path[:-1]:
                section = section.setdefault(key, {})
            section[spec.path[-1]] = raw
        return values


def _explain(exc: ValidationError) -> str:
    """One line per bad variable, naming it; a secret's value is never repeated."""
    lines = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        spec = next((_BY_PATH[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in _BY_PATH), None)
        if spec is None:
            lines.append(f"{'.'.join(loc)}: {error['msg']}")
            continue
        shown = "" if spec.secret else f" (got {str(error['input'])[:80]!r})"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{spec.env}: {message}{shown}")
    return "; ".join(lines)


def process_environment(**extra: str) -> dict[str, str]:
    """The environment a child process of ``serve`` starts with: ours, plus ``extra``."""
    return {**os.environ, **extra}


def shown_default(spec: Spec) -> str:
    """A setting's default as the README shows it."""
    if "shown" in spec.extra:
        return str(spec.extra["shown"])
    value = spec.field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return " ".join(value) if value else "empty"
    return str(value) if value != "" else "empty"


def _title(section: tuple[str, ...]) -> str:
    """A section's row in the table: its docstring up to the first sentence's end."""
    cls: Any = Settings
    for name in section:
        cls = _fields(cls)[name].annotation
    head = re.split(r"\.\s|:\s", " ".join((cls.__doc__ or name).split()), maxsplit=1)[0]
    return f"| **{head.rstrip('.').replace('``', '`')}** | | |"


def settings_table() -> str:
    """The README's settings table (Markdown), one row per setting in the tree's order, a row naming
    each section."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    section: tuple[str, ...] = ()
    for spec in SPECS:
        if spec.path[:-1] != section:
            section = spec.path[:-1]
            rows.append(_title(section))
        name = f"`{spec.env}` (or `_FILE`)" if spec.secret else f"`{spec.env}`"
        default = shown_default(spec)
        default = default if default in {"empty", "unset"} else f"`{default}`"
        meaning = (spec.field.description or "").replace("|", "\\|")
        rows.append(f"| {name} | {default} | {meaning} |")
    return "\n".join(rows) + "\n"
