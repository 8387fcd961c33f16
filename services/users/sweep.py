"""Retention and cleanup: ended sessions, old activity, stale login throttles, pending purges.

One replica sweeps at a time (a PostgreSQL advisory lock); deletes run in batches so that no
statement holds locks for long. Runs periodically inside ``serve`` and once from
``mediagrid users sweep``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from common.db import declare_session_state
from common.settings import Settings
from services.users.models import SweepReport
from services.users.purge import UserDataPurger, attempt_purge
from services.users.repository import UserRepository

log = logging.getLogger("mediagrid.users.sweep")

BATCH = 1000
MAX_PURGE_DELAY_SECONDS = 3600.0


class Sweeper:
    def __init__(
        self, repository: UserRepository, settings: Settings, purger: UserDataPurger
    ) -> None:
        self.repository = repository
        self.settings = settings
        self.purger = purger

    async def run_once(self, *, now: datetime | None = None) -> SweepReport:
        """One full pass; ``skipped`` when another replica is sweeping."""
        async with self.repository.pool.acquire() as conn:
            declare_session_state(conn)  # the sweep lock is a session advisory lock
            if not await self.repository.try_sweep_lock(conn):
                return SweepReport(skipped=True)
            try:
                return await self._sweep(now or datetime.now(UTC))
            finally:
                await self.repository.sweep_unlock(conn)

    async def _sweep(self, now: datetime) -> SweepReport:
        settings = self.settings
        session_cutoff = now - timedelta(days=settings.session_retention_days)
        activity_cutoff = now - timedelta(days=settings.activity_retention_days)
        throttle_cutoff = now - timedelta(
            seconds=max(
                settings.login_failure_window_seconds, settings.login_address_window_seconds
            )
        )
        sessions = await self._batched(
            lambda: self.repository.delete_ended_sessions(
                session_cutoff, idle_seconds=settings.session_idle_timeout_seconds, batch=BATCH
            )
        )
        activity = await self._batched(
            lambda: self.repository.delete_old_activity(activity_cutoff, batch=BATCH)
        )
        throttles = await self._batched(
            lambda: self.repository.delete_stale_login_throttles(throttle_cutoff, batch=BATCH)
        )
        done, failed = await self.retry_purges()
        report = SweepReport(
            sessions_deleted=sessions,
            activity_deleted=activity,
            login_failures_deleted=throttles,
            purges_done=done,
            purges_failed=failed,
        )
        log.info("users sweep: %s", report.model_dump())
        return report

    @staticmethod
    async def _batched(step: Callable[[], Awaitable[int]]) -> int:
        total = 0
        while True:
            count = await step()
            total += count
            if count < BATCH:
                return total

    async def retry_purges(self) -> tuple[int, int]:
        done = failed = 0
        for pending in await self.repository.due_purges(100):
            delay = min(
                MAX_PURGE_DELAY_SECONDS,
                self.settings.users_purge_retry_seconds * 2 ** min(pending.attempts, 20),
            )
            if await attempt_purge(
                self.purger,
                self.repository,
                pending.user_id,
                attempt=pending.attempts + 1,
                retry_in_seconds=delay,
            ):
                done += 1
            else:
                failed += 1
        return done, failed

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.users_sweep_interval_seconds)
            try:
                await self.run_once()
            except Exception:
                log.exception("users sweep failed; retrying at the next interval")
