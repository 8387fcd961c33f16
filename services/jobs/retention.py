"""Background sweeps: the reaper (expired leases) and retention (old finished jobs).

Both work in bounded chunks, each chunk its own short statement with SKIP LOCKED, so they
never hold locks that a claim would wait for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from common.settings import Settings
from services.jobs.metrics import JobMetrics
from services.jobs.repository import JobRepository
from services.jobs.states import FINAL, JobState

log = logging.getLogger("mediagrid.jobs.sweeps")

REAP_CHUNK = 500


def retention_seconds(settings: Settings, state: JobState) -> float:
    return {
        JobState.SUCCEEDED: settings.job_retention_succeeded_seconds,
        JobState.FAILED: settings.job_retention_failed_seconds,
        JobState.DEAD: settings.job_retention_dead_seconds,
        JobState.CANCELLED: settings.job_retention_cancelled_seconds,
    }[state]


async def purge(
    repo: JobRepository,
    settings: Settings,
    *,
    states: Sequence[JobState] | None = None,
    before: datetime | None = None,
    now: datetime | None = None,
) -> int:
    """Delete finished jobs older than their state's retention (or ``before``), chunk by chunk."""
    now = now or datetime.now(UTC)
    chunk = settings.job_retention_chunk_size
    deleted = 0
    oldest_cutoff = now
    for state in states or sorted(FINAL):
        cutoff = before or now - timedelta(seconds=retention_seconds(settings, state))
        oldest_cutoff = min(oldest_cutoff, cutoff)
        while True:
            n = await repo.purge_finished_chunk(state, cutoff, chunk)
            deleted += n
            if n < chunk:
                break
            await asyncio.sleep(0)  # let claims and RPCs run between chunks
    while True:
        if await repo.purge_empty_batches_chunk(oldest_cutoff, chunk) < chunk:
            return deleted
        await asyncio.sleep(0)


async def reap(repo: JobRepository, metrics: JobMetrics) -> int:
    """Return every job whose lease expired to the queue (or to DEAD)."""
    total = 0
    while True:
        reaped = await repo.reap_expired(REAP_CHUNK)
        total += len(reaped)
        for _job_id, job_type, state in reaped:
            metrics.expired(job_type, state.value)
        if len(reaped) < REAP_CHUNK:
            return total


async def reaper_loop(repo: JobRepository, settings: Settings, metrics: JobMetrics) -> None:
    while True:
        try:
            n = await reap(repo, metrics)
            if n:
                log.warning("returned %d job(s) with expired leases", n)
        except Exception:
            log.exception("reaper pass failed")
        await asyncio.sleep(settings.job_reaper_interval_seconds)


async def retention_loop(repo: JobRepository, settings: Settings) -> None:
    while True:
        try:
            n = await purge(repo, settings)
            if n:
                log.info("retention deleted %d finished job(s)", n)
        except Exception:
            log.exception("retention pass failed")
        await asyncio.sleep(settings.job_retention_interval_seconds)
