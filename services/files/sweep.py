"""The upload sweep: aborts idle sessions' multipart uploads and orphaned multipart uploads.

A session is idle when no part was acknowledged for ``upload_idle_timeout_seconds``; it
becomes ``expired`` and its S3 multipart upload is aborted (and, for presigned-URL uploads,
any uncommitted object version is deleted). A multipart upload in the bucket that no active
session owns and that is older than ``upload_orphan_grace_seconds`` is aborted too, so no
parts survive a crash between CreateMultipartUpload and recording its id.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from common.errors import DomainError
from services.files.models import UploadSession
from services.files.upload import UploadDeps

log = logging.getLogger("mediagrid.files.sweep")


@dataclass(frozen=True)
class SweepReport:
    expired_sessions: int
    aborted_orphans: int


async def release_session_objects(deps: UploadDeps, session: UploadSession) -> None:
    """Release what an ended, unfinished session held: its hash state in this process and,
    in S3, its multipart parts or unverified PUTs."""
    deps.hash_cache.drop(session.id)
    storage = deps.storage
    if session.s3_upload_id:
        await storage.abort_multipart(session.object_key, session.s3_upload_id)
    if session.via == "url":
        committed = await deps.repo.version_ids(session.file_id)
        for key, version_id in await storage.version_ids(session.object_key):
            if key == session.object_key and version_id not in committed:
                await storage.delete_version(key, version_id)


async def sweep_once(deps: UploadDeps, now: datetime | None = None) -> SweepReport:
    now = now or datetime.now(UTC)
    settings = deps.settings
    expired = 0
    idle_before = now - timedelta(seconds=settings.upload_idle_timeout_seconds)
    for session in await deps.repo.idle_uploads(idle_before):
        if await deps.repo.finish_upload(session.id, "expired", "idle timeout") is None:
            continue  # finished meanwhile
        await release_session_objects(deps, session)
        expired += 1
    orphans = []
    grace_before = now - timedelta(seconds=settings.upload_orphan_grace_seconds)
    async for upload in deps.storage.list_multipart_uploads():
        if upload.initiated <= grace_before:
            orphans.append(upload)
    known = await deps.repo.known_s3_uploads([u.upload_id for u in orphans]) if orphans else set()
    aborted = 0
    for upload in orphans:
        if upload.upload_id not in known:
            await deps.storage.abort_multipart(upload.key, upload.upload_id)
            aborted += 1
    if expired or aborted:
        log.info(
            "upload sweep: %d idle sessions expired, %d orphaned uploads aborted", expired, aborted
        )
    return SweepReport(expired, aborted)


async def sweep_forever(deps: UploadDeps) -> None:
    while True:
        try:
            await sweep_once(deps)
        except DomainError as exc:  # S3 or the database is away: try again next round
            log.warning("upload sweep failed: %s", exc)
        await asyncio.sleep(deps.settings.upload_sweep_interval_seconds)
