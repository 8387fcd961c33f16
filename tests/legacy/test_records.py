"""Property tests of the legacy record validators (services/migration/records.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher, Type
from hypothesis import given
from hypothesis import strategies as st

from common.settings import Settings
from services.migration.records import (
    LegacyJob,
    RecordError,
    legacy_id_of,
    parse_job,
    parse_time,
    parse_user,
)
from tests.support.hypo import relaxed

IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True)
TEXT = st.text(max_size=40)
FIELD_VALUES = st.one_of(TEXT, st.binary(max_size=20))
SETTINGS = Settings(environment="test")
HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID).hash("pw")


@given(
    st.dictionaries(
        st.sampled_from(
            ["email", "name", "password_hash", "role", "created_at", "disabled", "other"]
        ),
        FIELD_VALUES,
    ),
    IDS,
)
@relaxed(max_examples=300)
def test_user_parser_accepts_or_raises_record_error(
    fields: dict[str, object], legacy_id: str
) -> None:
    try:
        user = parse_user(f"p:user:{legacy_id}", "p:", fields)  # type: ignore[arg-type]
    except RecordError as exc:
        assert exc.reason in {"INVALID_USER", "NOT_UTF8"}
        return
    assert user.id == legacy_id
    assert "@" in user.email
    assert user.role in ("admin", "user", "service")
    assert user.created_at.tzinfo is not None
    assert user.needs_password_reset == (user.kept_password_hash is None)


@given(
    IDS,
    st.emails(),
    st.sampled_from(["admin", "member", "user", "service"]),
    st.integers(min_value=0, max_value=4_000_000_000),
)
@relaxed(max_examples=100)
def test_valid_users_parse(legacy_id: str, email: str, role: str, seconds: int) -> None:
    user = parse_user(
        f"user:{legacy_id}",
        "",
        {"email": email, "role": role, "created_at": str(seconds), "password_hash": HASH},
    )
    assert user.role == ("user" if role == "member" else role)
    assert user.created_at == datetime.fromtimestamp(seconds, UTC)
    assert user.kept_password_hash == HASH and not user.needs_password_reset


@pytest.mark.parametrize("stored", ["", "$2b$12$abc", "plain", "$argon2id$broken", "$scrypt$x"])
def test_unverifiable_hashes_need_a_reset(stored: str) -> None:
    user = parse_user(
        "user:x", "", {"email": "x@example.com", "created_at": "1", "password_hash": stored}
    )
    assert user.kept_password_hash is None and user.needs_password_reset


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "type",
                "payload",
                "owner",
                "state",
                "attempts",
                "max_attempts",
                "priority",
                "run_at",
                "created_at",
            ]
        ),
        FIELD_VALUES,
    ),
    IDS,
)
@relaxed(max_examples=300)
def test_job_parser_accepts_or_raises_record_error(
    fields: dict[str, object], legacy_id: str
) -> None:
    try:
        job = parse_job(f"job:{legacy_id}", "", fields)  # type: ignore[arg-type]
    except RecordError as exc:
        assert exc.reason in {"INVALID_JOB", "NOT_UTF8"}
        return
    assert isinstance(job.payload, dict) and job.attempts >= 0 and job.max_attempts >= 1
    try:
        spec = job.to_spec(SETTINGS)
    except RecordError as exc:
        assert exc.reason == "INVALID_JOB"
        return
    assert spec.request_id == f"legacy:{legacy_id}"
    assert 1 <= spec.max_attempts <= SETTINGS.job_max_attempts_limit


@given(
    st.integers(0, 30),
    st.integers(1, 30),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
@relaxed()
def test_job_spec_keeps_the_remaining_attempts(
    attempts: int, maximum: int, payload: dict[str, int]
) -> None:
    job = parse_job(
        "job:j",
        "",
        {
            "type": "a.b",
            "owner": "u",
            "state": "queued",
            "attempts": str(attempts),
            "max_attempts": str(maximum),
            "payload": json.dumps(payload),
            "created_at": "1",
        },
    )
    spec = job.to_spec(SETTINGS)
    assert spec.max_attempts == min(max(1, maximum - attempts), SETTINGS.job_max_attempts_limit)
    assert spec.payload == payload and spec.schedule_time is None


def test_run_at_in_the_future_schedules_and_in_the_past_means_now() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = now + timedelta(hours=1)
    base = {"type": "a.b", "owner": "u", "state": "queued", "created_at": "1"}
    future = LegacyJob.model_validate({**base, "id": "j", "run_at": later.isoformat()})
    assert future.to_spec(SETTINGS, now).schedule_time == later
    past = LegacyJob.model_validate({**base, "id": "j", "run_at": "1000"})
    assert past.to_spec(SETTINGS, now).schedule_time is None


@given(st.text(max_size=30))
@relaxed()
def test_keys_outside_the_layout_are_invalid(suffix: str) -> None:
    key = f"p:job:{suffix}"
    try:
        assert legacy_id_of(key, "p:", "job") == suffix
    except RecordError as exc:
        assert exc.reason == "INVALID_KEY"


@given(st.one_of(st.integers(0, 32_503_679_999), st.datetimes(timezones=st.just(UTC))))
@relaxed()
def test_parse_time_roundtrip(value: int | datetime) -> None:
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    parsed = parse_time(text)
    assert parsed.tzinfo is not None
    if isinstance(value, datetime):
        assert parsed == value
    else:
        assert parsed.timestamp() == value
