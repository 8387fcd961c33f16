"""Request validation of the jobs service: names, job specs, bounds from settings."""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from common import pagination
from common.errors import FieldViolation, InvalidArgument
from common.settings import Settings
from services.jobs.models import JobSpec, trusted

TYPE_RE = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$")
TYPE_MAX_LENGTH = 100
FILE_RE = re.compile(r"^files/[A-Za-z0-9_-]{1,64}$")
OWNER_RE = re.compile(r"^users/[A-Za-z0-9_-]{1,64}$")
REQUEST_ID_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
MAX_FILES = 100
WORKER_ID_MAX_LENGTH = 200
ERROR_MAX_LENGTH = 8000
MESSAGE_MAX_LENGTH = 1000


def parse_name(value: str, collection: str, field: str = "name") -> uuid.UUID:
    """``jobs/{uuid}`` -> UUID; INVALID_ARGUMENT when malformed."""
    prefix = f"{collection}/"
    if value.startswith(prefix):
        try:
            return uuid.UUID(value[len(prefix) :])
        except ValueError:
            pass
    raise InvalidArgument.field(
        field, f"must be a resource name like {collection}/{{id}}", reason="INVALID_NAME"
    )


def parse_uuid(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument.field(
            field, "must be a lease id returned by ClaimJobs", reason="INVALID_LEASE_ID"
        ) from None


@functools.lru_cache(maxsize=1024)
def _type_ok(value: str) -> bool:
    return len(value) <= TYPE_MAX_LENGTH and TYPE_RE.fullmatch(value) is not None


def check_type(value: str, field: str) -> list[FieldViolation]:
    if not value:
        return [FieldViolation(field, "is required")]
    if not _type_ok(value):
        return [
            FieldViolation(
                field,
                "must be lowercase words joined by '.', for example video.probe "
                f"(at most {TYPE_MAX_LENGTH} characters)",
            )
        ]
    return []


def check_types(values: Sequence[str], field: str = "types") -> list[FieldViolation]:
    """The violations of each job type in a repeated field, with its index."""
    return [v for i, value in enumerate(values) for v in check_type(value, f"{field}[{i}]")]


def check_owner(value: str, field: str = "owner") -> str:
    if not OWNER_RE.fullmatch(value):
        raise InvalidArgument.field(
            field, "must be a user name like users/{user}", reason="INVALID_NAME"
        )
    return value


def json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


def check_payload_size(
    value: Mapping[str, Any], field: str, settings: Settings
) -> list[FieldViolation]:
    if not value:
        return []
    size = json_size(value)
    if size > settings.job_payload_max_bytes:
        return [
            FieldViolation(
                field,
                f"is {size} bytes as JSON; the limit is {settings.job_payload_max_bytes}",
            )
        ]
    return []


def validate_spec(
    *,
    type: str,
    payload: dict[str, Any],
    priority: int,
    schedule_time: datetime | None,
    max_attempts: int,
    request_id: str,
    files: Sequence[str],
    settings: Settings,
    prefix: str = "job",
    now: datetime | None = None,
    priority_max: int | None = None,
) -> tuple[JobSpec | None, list[FieldViolation]]:
    """A JobSpec, or the violations that prevent one (field paths under ``prefix``).

    ``priority_max`` is the highest priority any caller may ask for (default
    ``job_priority_max``); the bound of each caller kind and job type is checked with the
    job type (``job_types.check_specs``).
    """
    violations = check_type(type, f"{prefix}.type")
    violations += check_payload_size(payload, f"{prefix}.payload", settings)
    highest = settings.job_priority_max if priority_max is None else priority_max
    if not settings.job_priority_min <= priority <= highest:
        violations.append(
            FieldViolation(
                f"{prefix}.priority", f"must be between {settings.job_priority_min} and {highest}"
            )
        )
    if schedule_time is not None:
        now = now or datetime.now(UTC)
        if schedule_time < now - timedelta(seconds=settings.job_schedule_past_seconds):
            violations.append(
                FieldViolation(
                    f"{prefix}.schedule_time",
                    f"is more than {settings.job_schedule_past_seconds:.0f}s in the past",
                )
            )
        elif schedule_time > now + timedelta(seconds=settings.job_schedule_future_seconds):
            violations.append(
                FieldViolation(
                    f"{prefix}.schedule_time",
                    f"is more than {settings.job_schedule_future_seconds:.0f}s in the future",
                )
            )
    if max_attempts < 0 or max_attempts > settings.job_max_attempts_limit:
        violations.append(
            FieldViolation(
                f"{prefix}.max_attempts",
                f"must be between 1 and {settings.job_max_attempts_limit} (0 = default)",
            )
        )
    if request_id and not REQUEST_ID_RE.fullmatch(request_id):
        violations.append(
            FieldViolation(f"{prefix}.request_id", "must be 1 to 128 printable ASCII characters")
        )
    if len(files) > MAX_FILES:
        violations.append(FieldViolation(f"{prefix}.files", f"at most {MAX_FILES} files"))
    for index, file in enumerate(files[:MAX_FILES]):
        if not FILE_RE.fullmatch(file):
            violations.append(
                FieldViolation(f"{prefix}.files[{index}]", "must be a file name like files/{file}")
            )
    if violations:
        return None, violations
    # Every field was checked above: construct without a second validation pass (batches
    # validate thousands of specs per call).
    spec = trusted(
        JobSpec,
        {
            "type": type,
            "payload": payload,
            "priority": priority,
            "schedule_time": schedule_time,
            "max_attempts": max_attempts or settings.job_max_attempts_default,
            "request_id": request_id or None,
            "files": tuple(files),
        },
    )
    return spec, []


def check_page_size(page_size: int, settings: Settings) -> int:
    return pagination.page_size(
        page_size,
        default=settings.job_list_default_page_size,
        maximum=settings.job_list_max_page_size,
    )
