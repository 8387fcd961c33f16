"""The upload engine: a stream of header + byte chunks in, progress and a committed file out.

Protocol-neutral (no protobuf here): the files servicer's ``Upload`` and the video servicer's
``UploadVideo`` both convert their messages and call :func:`run_upload` with their own
:class:`~services.files.upload.session.TransferProfile`. The session is opened in
``session.py``, the bytes go through ``parts.py``. See docs/files.md for the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from common import deadlines
from common.activity import ActivityRecorder
from common.context import Principal
from common.dependencies import S3
from common.errors import DataLoss, InvalidArgument, Unavailable
from common.settings import Settings
from services.files.models import FileRecord
from services.files.ports import (
    JobAccess,
    UnavailableJobAccess,
    UnavailableUserDirectory,
    UserDirectory,
)
from services.files.repository import FileRepository
from services.files.storage import RETRY_AFTER_SECONDS, Storage
from services.files.upload.hash_cache import HashCache
from services.files.upload.parts import PartWriter, Progress
from services.files.upload.session import TransferProfile, UploadStart, open_session

# Errors after which the session cannot succeed: it is failed and its parts are aborted.
# Any other interruption (broken stream, protocol slip, S3 hiccup) leaves it resumable.
FATAL_REASONS = frozenset(
    {"SHA256_MISMATCH", "SIZE_EXCEEDED", "SIZE_MISMATCH", "CONTENT_TYPE_MISMATCH", "FILE_TOO_LARGE"}
)


UploadItem = UploadStart | bytes | memoryview


@dataclass
class UploadDeps:
    """What the engine needs; built once by the service (``services/files/app.py``)."""

    settings: Settings
    repo: FileRepository
    storage: Storage
    activity: ActivityRecorder
    hash_cache: HashCache
    # Whether a caller may attach an upload to a job (the jobs service decides).
    jobs: JobAccess = field(default_factory=UnavailableJobAccess)
    # Whether a user exists (a share's grantee; the users service decides).
    users: UserDirectory = field(default_factory=UnavailableUserDirectory)
    # Parts still landing after a stream broke, per session (this process only).
    draining: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    async def settled(self, upload_id: str, part_size: int) -> None:
        """Wait until parts of a broken stream of this session have landed (or failed).

        Each of those parts is bounded by the transfer bound, so waiting that long is
        enough; UNAVAILABLE (retry) if they are still on their way after it (a shorter
        RPC deadline cut the wait)."""
        task = self.draining.get(upload_id)
        if task is None:
            return
        seconds = deadlines.bound(self.storage.transfer_cap(part_size), dependency=S3)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(task), seconds)
        if not task.done():
            raise Unavailable(
                f"uploads/{upload_id}: parts of the previous stream are still on their way to S3",
                reason="UPLOAD_DRAINING",
                metadata={"upload": f"uploads/{upload_id}"},
                retry_after_seconds=RETRY_AFTER_SECONDS,
            )


def _fatal(exc: BaseException) -> bool:
    return isinstance(exc, DataLoss) or (
        isinstance(exc, InvalidArgument) and exc.reason in FATAL_REASONS
    )


async def run_upload(
    deps: UploadDeps,
    principal: Principal,
    items: AsyncIterator[UploadItem],
    profile: TransferProfile,
) -> AsyncIterator[Progress | FileRecord]:
    """Run one upload stream: yields :class:`Progress` (rate-limited) and finally the file.

    The first item must be an :class:`UploadStart`, the rest ``bytes``. Raises domain
    errors (see docs/files.md for each status); a broken stream leaves the session
    resumable from its committed offset.
    """
    token = uuid.uuid4().hex
    # A client still sending when this fails is drained by the suite interceptor, so it
    # receives the real status (common/interceptors.py, grpc_error_drain_seconds).
    first = await anext(items, None)
    if not isinstance(first, UploadStart):
        raise InvalidArgument.field(
            "header", "the first message must be the upload header", reason="HEADER_REQUIRED"
        )
    session = await open_session(deps, principal, first, profile, token)
    writer = await PartWriter.start(deps, session, token, profile)
    yield writer.progress()
    try:
        async for item in items:
            if isinstance(item, UploadStart):
                raise InvalidArgument.field(
                    "header", "the header may only be sent once", reason="HEADER_REPEATED"
                )
            await writer.write(item)
            for progress in writer.due():
                yield progress
        async for out in writer.finish():
            if isinstance(out, Progress):
                yield out
            else:
                record = out
    except BaseException as exc:
        await writer.interrupted(fatal=_fatal(exc), error=str(exc))
        raise
    deps.hash_cache.drop(session.id)
    await deps.activity.record(
        "files.upload",
        record.name,
        {
            "upload": session.name,
            "size_bytes": str(record.size_bytes),
            "version_id": record.version_id,
        },
    )
    yield writer.progress()
    yield record
