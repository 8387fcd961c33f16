"""The legacy Redis records (format in docs/migration.md) and their conversion to domain values.

Every field arrives as a Redis hash string; the models parse and validate them with the
same rules the users and jobs services apply to their own requests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from argon2 import extract_parameters
from argon2.exceptions import InvalidHashError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.context import Role
from common.errors import DomainError
from common.settings import Settings
from services.jobs import validation as job_validation
from services.jobs.models import JobSpec
from services.users import validation as user_validation

LEGACY_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_LEGACY_ID_RE = re.compile(LEGACY_ID)
ARGON2_PREFIXES = ("$argon2id$", "$argon2i$", "$argon2d$")

LegacyJobState = Literal["queued", "running", "done", "failed", "cancelled"]
# Legacy states whose jobs go into the new queue; the others are history (docs/migration.md).
QUEUED_STATES = frozenset({"queued", "running", "cancelled"})


class RecordError(ValueError):
    """A legacy record that cannot be imported: ``reason`` is UPPER_SNAKE_CASE."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse_time(value: Any) -> datetime:
    """Unix seconds (``1700000000`` or ``1700000000.25``) or ISO 8601; naive means UTC."""
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError("must be unix seconds or an ISO 8601 time") from None
        else:
            if not 0 <= seconds < 32_503_680_000:  # before year 3000
                raise ValueError("unix seconds out of range")
            return datetime.fromtimestamp(seconds, UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _domain(check: Any, value: str, field: str) -> Any:
    try:
        return check(value, field)
    except DomainError as exc:
        raise ValueError(exc.message) from None


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=False)

    id: str = Field(pattern=LEGACY_ID)
    created_at: datetime

    @field_validator("created_at", mode="before")
    @classmethod
    def _time(cls, value: Any) -> datetime:
        return parse_time(value)


class LegacyUser(_Record):
    """``user:{id}``: email, name, password_hash, role, created_at, disabled."""

    email: str
    name: str = ""
    password_hash: str = ""
    role: Role = "user"
    disabled: bool = False

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return str(_domain(user_validation.email, value, "email"))

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return str(_domain(user_validation.display_name, value, "name"))

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: Any) -> Any:
        # The old system called ordinary accounts "member".
        return "user" if value == "member" else value

    @field_validator("disabled", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> Any:
        return (
            {"": False, "0": False, "1": True}.get(value, value)
            if isinstance(value, str)
            else value
        )

    @property
    def kept_password_hash(self) -> str | None:
        """The legacy hash when the users service can verify it (argon2), else None."""
        if not self.password_hash.startswith(ARGON2_PREFIXES):
            return None
        try:
            extract_parameters(self.password_hash)
        except (InvalidHashError, ValueError):
            return None
        return self.password_hash

    @property
    def needs_password_reset(self) -> bool:
        return self.kept_password_hash is None


class LegacyJob(_Record):
    """``job:{id}``: type, payload (JSON object), owner, state, attempts, max_attempts, ..."""

    type: str
    payload: dict[str, Any] = Field(default_factory=dict)
    owner: str = Field(pattern=LEGACY_ID)
    state: LegacyJobState
    attempts: int = Field(default=0, ge=0)
    max_attempts: int = Field(default=3, ge=1)
    priority: int = 0
    run_at: datetime | None = None

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        violations = job_validation.check_type(value, "type")
        if violations:
            raise ValueError(violations[0].description)
        return value

    @field_validator("payload", mode="before")
    @classmethod
    def _payload(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"is not JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object")
        return value

    @field_validator("run_at", mode="before")
    @classmethod
    def _run_at(cls, value: Any) -> datetime | None:
        return None if value in (None, "") else parse_time(value)

    @property
    def request_id(self) -> str:
        """Makes the insert idempotent: the jobs service returns the job made before."""
        return f"legacy:{self.id}"

    def to_spec(self, settings: Settings, now: datetime | None = None) -> JobSpec:
        """The JobSpec of the new queue; RecordError(INVALID_JOB) names what does not fit.

        The remaining attempt budget carries over (a job that used 2 of 5 gets 3); a
        ``run_at`` in the past means "due now".
        """
        now = now or datetime.now(UTC)
        remaining = max(1, self.max_attempts - self.attempts)
        spec, violations = job_validation.validate_spec(
            type=self.type,
            payload=self.payload,
            priority=self.priority,
            schedule_time=self.run_at if self.run_at and self.run_at > now else None,
            max_attempts=min(remaining, settings.job_max_attempts_limit),
            request_id=self.request_id,
            files=(),
            settings=settings,
            now=now,
        )
        if spec is None:
            raise RecordError(
                "INVALID_JOB", "; ".join(f"{v.field}: {v.description}" for v in violations)
            )
        return spec


def _decode(fields: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in fields.items():
        try:
            k = key.decode() if isinstance(key, bytes) else key
            out[k] = value.decode() if isinstance(value, bytes) else value
        except UnicodeDecodeError:
            raise RecordError("NOT_UTF8", f"field {key!r} is not UTF-8") from None
    return out


def _summary(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'record'}: "
        + str(err["msg"])
        .removeprefix("Value error, ")
        .removeprefix(f"{err['loc'][-1] if err['loc'] else ''}: ")
        for err in exc.errors(include_url=False)
    )


def legacy_id_of(key: str, prefix: str, kind: str) -> str:
    """``{prefix}{kind}:{id}`` -> id (RecordError(INVALID_KEY) when the key is not that)."""
    head = f"{prefix}{kind}:"
    legacy_id = key[len(head) :] if key.startswith(head) else ""
    if not _LEGACY_ID_RE.fullmatch(legacy_id):
        raise RecordError("INVALID_KEY", f"{key!r} is not {head}{{id}}")
    return legacy_id


def parse_user(key: str, prefix: str, fields: Mapping[bytes | str, bytes | str]) -> LegacyUser:
    legacy_id = legacy_id_of(key, prefix, "user")
    try:
        return LegacyUser.model_validate({**_decode(fields), "id": legacy_id})
    except ValidationError as exc:
        raise RecordError("INVALID_USER", _summary(exc)) from None


def parse_job(key: str, prefix: str, fields: Mapping[bytes | str, bytes | str]) -> LegacyJob:
    legacy_id = legacy_id_of(key, prefix, "job")
    try:
        return LegacyJob.model_validate({**_decode(fields), "id": legacy_id})
    except ValidationError as exc:
        raise RecordError("INVALID_JOB", _summary(exc)) from None
