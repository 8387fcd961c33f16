"""Handlers that ship with the jobs service: for tests, benchmarks and smoke checks.

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

from services.jobs.worker.api import JobContext, PermanentJobError, RetryableJobError, handler


@handler("noop", timeout_seconds=60)
async def noop(job: JobContext) -> Mapping[str, Any] | None:
    return None


@handler("sleep", timeout_seconds=3600)
async def sleep(job: JobContext) -> Mapping[str, Any] | None:
    seconds = float(job.payload.get("seconds", 0.1))
    steps = max(int(job.payload.get("steps", 1)), 1)
    for step in range(steps):
        await asyncio.sleep(seconds / steps)
        await job.progress(100.0 * (step + 1) / steps, f"step {step + 1} of {steps}")
    return {"slept_seconds": seconds, "attempt": job.attempt}


@handler("fail", timeout_seconds=60, retry_base_seconds=0.01, retry_max_seconds=0.05)
async def fail(job: JobContext) -> Mapping[str, Any] | None:
    succeed_on = job.payload.get("succeed_on_attempt")
    if succeed_on is not None and job.attempt >= int(succeed_on):
        return {"attempt": job.attempt}
    if job.payload.get("mode") == "permanent":
        raise PermanentJobError("asked to fail permanently")
    raise RetryableJobError(f"asked to fail (attempt {job.attempt})")


@handler("stamp", timeout_seconds=60)
async def stamp(job: JobContext) -> Mapping[str, Any] | None:
    """Record when the handler started (wall clock), for enqueue-to-start latency."""
    return {"started_unix": time.time()}
