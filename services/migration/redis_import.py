"""Legacy Redis users and jobs -> PostgreSQL, through the users and jobs repositories.

Keys are read with SCAN (never KEYS), a batch at a time; each record is validated by the
models of :mod:`services.migration.records`, written through ``UserRepository.create_user`` /
``JobRepository.create_job``, and the SCAN cursor is saved after each batch
(``users.legacy_checkpoints``) so ``--resume`` continues where a run stopped. Re-reading a
record is harmless: users are mapped by legacy id (``users.legacy_user_map``) and jobs carry
``request_id = legacy:{id}``. See docs/migration.md for the format and the rules.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from common.errors import AlreadyExists, DomainError
from common.settings import Settings
from services.jobs.repository import JobRepository
from services.migration.models import Phase, RejectKind
from services.migration.records import (
    QUEUED_STATES,
    LegacyJob,
    LegacyUser,
    RecordError,
    parse_job,
    parse_user,
)
from services.migration.repository import LegacyRepository
from services.users.repository import UserRepository

log = logging.getLogger("mediagrid.legacy.redis")

PHASES: tuple[Phase, ...] = ("users", "jobs")


def source_name(url: str, prefix: str) -> str:
    """The Redis URL without credentials, plus the key prefix: names a source in tables."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) + (f"#{prefix}" if prefix else "")


@dataclass(frozen=True)
class RejectedRecord:
    key: str
    kind: RejectKind
    reason: str
    detail: str


@dataclass
class PhaseCounts:
    imported: int = 0
    already: int = 0  # imported by an earlier run (or earlier in this one)
    rejected: int = 0


@dataclass
class RedisReport:
    source: str
    counts: dict[str, PhaseCounts] = field(
        default_factory=lambda: {p: PhaseCounts() for p in PHASES}
    )
    rejects: list[RejectedRecord] = field(default_factory=list)
    stopped_early: bool = False  # the record limit was reached; resume with --resume

    @property
    def records(self) -> int:
        return sum(c.imported + c.already + c.rejected for c in self.counts.values())


class _Stop(Exception):
    """The record limit was reached inside a batch."""


class RedisImporter:
    def __init__(
        self,
        *,
        settings: Settings,
        redis: Any,
        url: str,
        prefix: str,
        users: UserRepository,
        jobs: JobRepository,
        legacy: LegacyRepository,
        batch: int = 500,
        limit: int | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.prefix = prefix
        self.source = source_name(url, prefix)
        self.users = users
        self.jobs = jobs
        self.legacy = legacy
        self.batch = max(1, batch)
        self.limit = limit

    async def run(self, *, resume: bool = False) -> RedisReport:
        """Import users, then jobs. Without ``resume`` the SCAN starts over (still idempotent)."""
        report = RedisReport(self.source)
        if not resume:
            await self.legacy.reset_checkpoints(self.source)
        for phase in PHASES:
            if not await self._phase(phase, report):
                report.stopped_early = True
                break
        return report

    async def _phase(self, phase: Phase, report: RedisReport) -> bool:
        """Scan one kind of record to the end (True) or until the limit (False)."""
        checkpoint = await self.legacy.checkpoint(self.source, phase)
        if checkpoint is not None and checkpoint.done:
            return True
        cursor = int(checkpoint.cursor) if checkpoint else 0
        pattern = f"{self.prefix}{'user' if phase == 'users' else 'job'}:*"
        while True:
            next_cursor, keys = await self.redis.scan(
                cursor, match=pattern, count=self.batch, _type="HASH"
            )
            keys = [
                k.decode("utf-8", "backslashreplace") if isinstance(k, bytes) else k for k in keys
            ]
            pipe = self.redis.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            values = await pipe.execute() if keys else []
            records = list(zip(keys, values, strict=True))
            try:
                handled = await (
                    self._users(records, report)
                    if phase == "users"
                    else self._jobs(records, report)
                )
            except _Stop:
                # The batch is read again on resume; what it already imported is skipped.
                await self.legacy.save_checkpoint(
                    self.source, phase, str(cursor), done=False, records=0
                )
                return False
            done = int(next_cursor) == 0
            await self.legacy.save_checkpoint(
                self.source, phase, str(next_cursor), done=done, records=handled
            )
            if done:
                return True
            cursor = int(next_cursor)

    def _count(self, report: RedisReport) -> None:
        if self.limit is not None and report.records >= self.limit:
            raise _Stop

    async def _reject(
        self,
        report: RedisReport,
        phase: Phase,
        key: str,
        kind: RejectKind,
        reason: str,
        detail: str,
    ) -> None:
        await self.legacy.reject(self.source, key, kind, reason, detail)
        report.rejects.append(RejectedRecord(key, kind, reason, detail))
        report.counts[phase].rejected += 1

    # --- users -------------------------------------------------------------------------

    async def _users(self, records: list[tuple[str, Any]], report: RedisReport) -> int:
        parsed: list[tuple[str, LegacyUser]] = []
        handled = 0
        for key, fields in records:
            try:
                parsed.append((key, parse_user(key, self.prefix, fields)))
            except RecordError as exc:
                self._count(report)
                await self._reject(report, "users", key, "invalid", exc.reason, exc.detail)
                handled += 1
        mapped = await self.legacy.user_mappings([u.id for _, u in parsed])
        imported: list[str] = []
        for key, user in parsed:
            self._count(report)
            handled += 1
            existing = mapped.get(user.id)
            if existing is not None and existing.state == "done":
                report.counts["users"].already += 1
                continue
            if await self._import_user(key, user, report):
                imported.append(key)
        await self.legacy.clear_rejects(self.source, imported)
        return handled

    async def _import_user(self, key: str, user: LegacyUser, report: RedisReport) -> bool:
        claim = await self.legacy.claim_user(
            user.id,
            user.email,
            needs_password_reset=user.needs_password_reset,
            legacy_create_time=user.created_at,
        )
        if claim is None:  # done meanwhile
            report.counts["users"].already += 1
            return False
        password_hash = user.kept_password_hash
        try:
            created = await self.users.create_user(
                email=user.email,
                display_name=user.name,
                role=user.role,
                password_hash=password_hash,
            )
        except AlreadyExists:
            # Created by an earlier run that stopped before recording it? Then adopt it.
            found = await self.users.find_credentials(user.email)
            if (
                found is not None
                and found.user.create_time >= claim.claim_time
                and found.password_hash == password_hash
                and found.user.role == user.role
                and found.user.display_name == user.name
            ):
                try:
                    await self.legacy.finish_user(user.id, found.user.id)
                except Exception:  # mapped to another legacy id: a real conflict
                    log.info("users/%s is already mapped", found.user.id)
                else:
                    report.counts["users"].imported += 1
                    return True
            await self.legacy.drop_pending_user(user.id)
            owner = f" (users/{found.user.id})" if found else ""
            await self._reject(
                report,
                "users",
                key,
                "conflict",
                "EMAIL_TAKEN",
                f"a user with email {user.email!r} already exists{owner}",
            )
            return False
        if user.disabled:
            await self.users.update_user(created.id, status="disabled")
        await self.legacy.finish_user(user.id, created.id)
        report.counts["users"].imported += 1
        return True

    # --- jobs --------------------------------------------------------------------------

    async def _jobs(self, records: list[tuple[str, Any]], report: RedisReport) -> int:
        parsed: list[tuple[str, LegacyJob]] = []
        handled = 0
        for key, fields in records:
            try:
                parsed.append((key, parse_job(key, self.prefix, fields)))
            except RecordError as exc:
                self._count(report)
                await self._reject(report, "jobs", key, "invalid", exc.reason, exc.detail)
                handled += 1
        mapped = await self.legacy.job_mappings([j.id for _, j in parsed])
        owners = await self.legacy.user_ids_of_legacy(sorted({j.owner for _, j in parsed}))
        new_maps: list[tuple[str, uuid.UUID | None, str, datetime | None]] = []
        imported: list[str] = []
        try:
            for key, job in parsed:
                self._count(report)
                handled += 1
                known = mapped.get(job.id)
                if known is not None and known.job_id is not None:
                    report.counts["jobs"].already += 1
                    continue
                outcome = await self._import_job(key, job, owners, report)
                if outcome is not None:
                    new_maps.append((job.id, outcome, job.state, job.created_at))
                    imported.append(key)
                elif job.state not in QUEUED_STATES:
                    new_maps.append((job.id, None, job.state, job.created_at))
        finally:
            await self.legacy.map_jobs(new_maps)
            await self.legacy.clear_rejects(self.source, imported)
        return handled

    async def _import_job(
        self, key: str, job: LegacyJob, owners: dict[str, str], report: RedisReport
    ) -> uuid.UUID | None:
        if job.state not in QUEUED_STATES:
            await self._reject(
                report,
                "jobs",
                key,
                "skipped",
                "FINISHED_JOB_NOT_MIGRATED",
                f"the legacy job is {job.state}; only queued, running and cancelled jobs move",
            )
            return None
        owner_id = owners.get(job.owner)
        if owner_id is None:
            await self._reject(
                report,
                "jobs",
                key,
                "invalid",
                "UNKNOWN_OWNER",
                f"legacy user {job.owner!r} was not imported",
            )
            return None
        try:
            spec = job.to_spec(self.settings)
            created = await self.jobs.create_job(f"users/{owner_id}", spec, None)
            if job.state == "cancelled" and not created.finished:
                await self.jobs.cancel_jobs([created.id], "cancelled in the legacy system")
        except RecordError as exc:
            await self._reject(report, "jobs", key, "invalid", exc.reason, exc.detail)
            return None
        except DomainError as exc:
            await self._reject(report, "jobs", key, "conflict", exc.reason, exc.message)
            return None
        report.counts["jobs"].imported += 1
        return created.id
