"""One validated settings model per process, read from ``MEDIAGRID_*`` environment variables.

Secrets are ``SecretStr`` so that ``repr()``/logs never show them. Bucket names are derived
(``{prefix}-{environment}-{purpose}``) and checked against S3's naming rules at start-up,
so a typo fails before the first request rather than at the first upload.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")

BUCKET_PURPOSES = ("files",)


class Environment(StrEnum):
    DEV = "dev"
    TEST = "test"
    STAGING = "staging"
    PROD = "prod"


class ConfigurationError(Exception):
    """The configuration is invalid; the message names the offending variable."""


def bucket_name_problem(name: str) -> str | None:
    """Return why ``name`` is not a valid S3 bucket name, or None when it is."""
    if not 3 <= len(name) <= 63:
        return f"must be 3 to 63 characters long (got {len(name)})"
    if not _BUCKET_RE.match(name):
        return "may contain only lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"
    if ".." in name or ".-" in name or "-." in name:
        return "must not contain '..', '.-' or '-.'"
    if _IP_RE.match(name):
        return "must not look like an IP address"
    if name.startswith(("xn--", "sthree-", "amzn-s3-demo-")) or name.endswith(
        ("-s3alias", "--ol-s3", "--x-s3", "--table-s3")
    ):
        return "uses a prefix or suffix that S3 reserves"
    return None


class Settings(BaseSettings):
    """Every knob of the suite. Field ``foo`` is read from ``MEDIAGRID_FOO``."""

    model_config = SettingsConfigDict(
        env_prefix="MEDIAGRID_", env_file=".env", extra="ignore", validate_default=True
    )

    # --- process -----------------------------------------------------------------------
    environment: Environment = Environment.DEV
    service_name: str = "mediagrid"
    data_dir: Path = Field(default=Path(".mediagrid"), description="Embedded state (PostgreSQL data).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    # --- gRPC --------------------------------------------------------------------------
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    grpc_max_message_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024)
    grpc_shutdown_grace_seconds: float = Field(default=20.0, ge=0, le=600)
    health_check_interval_seconds: float = Field(default=5.0, gt=0, le=300)
    # Addresses of the other services when each runs in its own process (None = in-process).
    users_address: str | None = None
    jobs_address: str | None = None
    files_address: str | None = None

    # --- PostgreSQL --------------------------------------------------------------------
    database_url: SecretStr | None = None
    db_pool_min_size: int = Field(default=1, ge=0, le=100)
    db_pool_max_size: int = Field(default=10, ge=1, le=500)
    db_connect_attempts: int = Field(default=8, ge=1, le=100)
    db_connect_backoff_seconds: float = Field(default=0.25, gt=0, le=30)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    db_statement_timeout_ms: int = Field(default=30_000, ge=0)
    db_idle_in_transaction_timeout_ms: int = Field(default=60_000, ge=0)

    # --- AWS / S3 ----------------------------------------------------------------------
    aws_region: str = "us-east-1"
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    s3_endpoint_url: str | None = None
    bucket_prefix: str = "mediagrid"
    s3_max_pool_connections: int = Field(default=32, ge=1, le=1024)
    s3_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    s3_read_timeout_seconds: float = Field(default=60.0, gt=0)
    s3_max_attempts: int = Field(default=5, ge=1, le=20)
    # Payload signing over plain HTTP costs a SHA-256 per byte; off is only for local endpoints.
    s3_payload_signing: bool = True

    # --- telemetry ---------------------------------------------------------------------
    telemetry_exporter: Literal["off", "console", "otlp"] = "off"
    otlp_endpoint: str = "http://127.0.0.1:4317"

    # --- users -------------------------------------------------------------------------
    auth_cache_ttl_seconds: float = Field(default=3.0, ge=0, le=300)
    session_idle_timeout_seconds: int = Field(default=2 * 3600, ge=60)
    session_absolute_timeout_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    bootstrap_admin_email: str | None = None
    bootstrap_admin_password: SecretStr | None = None

    # --- jobs --------------------------------------------------------------------------
    # Largest payload (or result) accepted, measured as compact JSON.
    job_payload_max_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Default lease a claim grants; workers heartbeat well within it.
    job_lease_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Longest lease a worker may ask for.
    job_lease_max_seconds: float = Field(default=600.0, gt=0, le=24 * 3600)
    # Allowed priority range (higher runs first).
    job_priority_min: int = Field(default=-100, ge=-1_000_000, le=0)
    job_priority_max: int = Field(default=100, ge=0, le=1_000_000)
    # Attempts a job gets when its creator does not say, and the most it may ask for.
    job_max_attempts_default: int = Field(default=3, ge=1, le=1000)
    job_max_attempts_limit: int = Field(default=25, ge=1, le=1000)
    # How far in the past / future a schedule_time may lie.
    job_schedule_past_seconds: float = Field(default=3600.0, ge=0, le=30 * 24 * 3600)
    job_schedule_future_seconds: float = Field(default=30 * 24 * 3600.0, ge=60, le=366 * 24 * 3600)
    # Most jobs one ClaimJobs / CompleteJobs / FailJobs call handles.
    job_claim_max_jobs: int = Field(default=1000, ge=1, le=10_000)
    # Longest a ClaimJobs call may wait for work.
    job_claim_max_wait_seconds: float = Field(default=60.0, ge=0, le=600)
    # Server-side retry backoff when the worker gives no delay:
    # min(max, base * 2^(attempt-1)) with full jitter.
    job_retry_base_seconds: float = Field(default=1.0, gt=0, le=3600)
    job_retry_max_seconds: float = Field(default=600.0, gt=0, le=7 * 24 * 3600)
    # Most jobs one CreateBatch call creates, and rows per INSERT statement inside it.
    job_batch_max_jobs: int = Field(default=10_000, ge=1, le=1_000_000)
    job_batch_insert_chunk: int = Field(default=1000, ge=1, le=50_000)
    # ListJobs page sizes.
    job_list_default_page_size: int = Field(default=50, ge=1, le=1000)
    job_list_max_page_size: int = Field(default=1000, ge=1, le=10_000)
    # How often the reaper returns jobs whose lease expired.
    job_reaper_interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    # How long finished jobs are kept, per final state, and how often/how much the sweep deletes.
    job_retention_succeeded_seconds: float = Field(default=7 * 24 * 3600.0, ge=0)
    job_retention_failed_seconds: float = Field(default=30 * 24 * 3600.0, ge=0)
    job_retention_dead_seconds: float = Field(default=30 * 24 * 3600.0, ge=0)
    job_retention_cancelled_seconds: float = Field(default=7 * 24 * 3600.0, ge=0)
    job_retention_interval_seconds: float = Field(default=600.0, gt=0, le=7 * 24 * 3600)
    job_retention_chunk_size: int = Field(default=1000, ge=1, le=100_000)
    # Rows per statement when DeleteUserJobs cancels and deletes a user's jobs.
    job_delete_chunk_size: int = Field(default=1000, ge=1, le=100_000)
    # Worker process: bearer token (role service), handler modules (JSON list), defaults.
    worker_token: SecretStr | None = None
    worker_handler_modules: list[str] = Field(
        default=["services.jobs.builtin_handlers", "services.files.video.handlers"]
    )
    worker_concurrency: int = Field(default=8, ge=1, le=10_000)
    # Jobs claimed ahead of free slots, and outcomes acknowledged per CompleteJobs/FailJobs call.
    worker_prefetch: int = Field(default=0, ge=0, le=10_000)
    worker_ack_batch_size: int = Field(default=200, ge=1, le=10_000)
    # Longest an outcome waits to be batched with others before it is sent.
    worker_ack_interval_seconds: float = Field(default=0.01, ge=0, le=10)
    # Longest a ClaimJobs call waits for work before the worker asks again.
    worker_claim_wait_seconds: float = Field(default=10.0, ge=0, le=600)
    # Minimum interval between progress reports of one job (faster ones are coalesced).
    worker_progress_interval_seconds: float = Field(default=0.5, ge=0, le=600)
    # On SIGTERM: how long in-flight jobs may run before they are released to the queue.
    worker_shutdown_grace_seconds: float = Field(default=20.0, ge=0, le=3600)

    # --- files -------------------------------------------------------------------------
    upload_part_size_bytes: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024)
    upload_concurrency: int = Field(default=4, ge=1, le=64)
    presign_default_seconds: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    presign_max_seconds: int = Field(default=7 * 24 * 3600, ge=1, le=7 * 24 * 3600)

    @field_validator("bucket_prefix")
    @classmethod
    def _prefix_is_bucket_safe(cls, value: str) -> str:
        problem = bucket_name_problem(f"{value}-prod-files")
        if problem:
            raise ValueError(f"bucket names built from this prefix {problem}")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError("db_pool_min_size must not exceed db_pool_max_size")
        if self.database_url is None and not self.is_local:
            raise ValueError(f"database_url is required in the {self.environment.value} environment")
        for purpose in BUCKET_PURPOSES:
            problem = bucket_name_problem(self.bucket(purpose))
            if problem:
                raise ValueError(f"bucket name {self.bucket(purpose)!r} {problem}")
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
    def embedded_s3(self) -> bool:
        """No S3 endpoint and no credentials configured in dev/test: start a local S3 endpoint.

        In staging/prod an unset endpoint means real AWS with the default credential chain.
        """
        return self.s3_endpoint_url is None and self.aws_access_key_id is None and self.is_local

    def database_dsn(self) -> str:
        if self.database_url is None:
            raise ConfigurationError("MEDIAGRID_DATABASE_URL is not set")
        return self.database_url.get_secret_value()


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, turning validation errors into one clear message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        variable = f"MEDIAGRID_{field.upper()}" if field else "(settings)"
        lines.append(f"  {variable}: {error['msg']}")
    return "\n".join(lines)
