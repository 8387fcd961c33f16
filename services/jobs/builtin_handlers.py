"""Handlers of the demo job types (declared in ``demo_job_types``): for tests, benchmarks and
smoke checks. Workers load them only while the setting ``demo_job_types`` is on.

- ``noop``: returns at once (measures the queue itself).
- ``sleep``: sleeps ``payload.seconds`` (default 0.1), reporting progress in ``payload.steps``.
- ``stamp``: returns ``{"started_unix": <wall clock at start>}`` (latency benchmarks).
- ``fail``: fails with ``payload.mode`` = ``permanent`` or ``retryable`` (default retryable),
  succeeding from attempt ``payload.succeed_on_attempt`` on when given.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from services.jobs.demo_job_types import (
    FAIL_MAX_RUN_SECONDS,
    NOOP_MAX_RUN_SECONDS,
    SLEEP_MAX_RUN_SECONDS,
    STAMP_MAX_RUN_SECONDS,
    FailPayload,
    SleepPayload,
)
from services.jobs.worker.api import JobContext, PermanentJobError, RetryableJobError, handler


@handler("noop", timeout_seconds=NOOP_MAX_RUN_SECONDS)
async def noop(job: JobContext) -> Mapping[str, Any] | None:
    return None


@handler("sleep", timeout_seconds=SLEEP_MAX_RUN_SECONDS)
async def sleep(job: JobContext) -> Mapping[str, Any] | None:
    try:
        payload = SleepPayload.model_validate(job.payload)
    except ValidationError as exc:
        raise PermanentJobError(f"invalid payload: {exc.error_count()} error(s)") from None
    for step in range(payload.steps):
        await asyncio.sleep(payload.seconds / payload.steps)
        await job.progress(
            100.0 * (step + 1) / payload.steps, f"step {step + 1} of {payload.steps}"
        )
    return {"slept_seconds": payload.seconds, "attempt": job.attempt}


@handler(
    "fail", timeout_seconds=FAIL_MAX_RUN_SECONDS, retry_base_seconds=0.01, retry_max_seconds=0.05
)
async def fail(job: JobContext) -> Mapping[str, Any] | None:
    try:
        payload = FailPayload.model_validate(job.payload)
    except ValidationError as exc:
        raise PermanentJobError(f"invalid payload: {exc.error_count()} error(s)") from None
    if payload.succeed_on_attempt is not None and job.attempt >= payload.succeed_on_attempt:
        return {"attempt": job.attempt}
    if payload.mode == "permanent":
        raise PermanentJobError("asked to fail permanently")
    raise RetryableJobError(f"asked to fail (attempt {job.attempt})")


@handler("stamp", timeout_seconds=STAMP_MAX_RUN_SECONDS)
async def stamp(job: JobContext) -> Mapping[str, Any] | None:
    """Record when the handler started (wall clock), for enqueue-to-start latency."""
    return {"started_unix": time.time()}
