"""Opening an upload session: the header validated and authorized, a new session created or
a broken one claimed at its committed offset; the part size and the object's target."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from common.context import Principal
from common.errors import FailedPrecondition, InvalidArgument
from common.settings import Settings
from services.files import keys, validation
from services.files.access import require_file, require_upload
from services.files.models import FileKind, NewUpload, UploadSession, UploadVia
from services.files.ports import JobAccess
from services.files.repository import FileRepository
from services.files.storage import META_FILE_ID, META_OWNER, META_SHA256

if TYPE_CHECKING:
    from services.files.upload.engine import UploadDeps

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000
MiB = 1024 * 1024


@dataclass(frozen=True)
class TransferProfile:
    """How one kind of upload is transferred and what it accepts."""

    part_size: int
    concurrency: int
    allows_content_type: Callable[[str], bool]
    kind: FileKind = "file"

    @classmethod
    def files(cls, settings: Settings) -> TransferProfile:
        return cls(settings.upload_part_size_bytes, settings.upload_concurrency, lambda _: True)


@dataclass(frozen=True)
class UploadStart:
    """The header of an upload stream (validated by :func:`run_upload`)."""

    display_name: str = ""
    content_type: str = ""
    size_bytes: int = 0
    sha256: str = ""
    job: str = ""
    upload: str = ""
    offset: int = 0
    parent: str = ""
    labels: dict[str, str] = field(default_factory=dict)


def choose_part_size(configured: int, declared_size: int) -> int:
    """At least 5 MiB and the configured size, grown (in MiB) so the file fits in 10,000 parts."""
    part = max(configured, MIN_PART_SIZE)
    needed = -(-declared_size // MAX_PARTS)
    if needed > part:
        part = -(-needed // MiB) * MiB
    return part


@dataclass(frozen=True)
class UploadTarget:
    """Where a new upload's bytes go: a new version of an existing file, or a new file."""

    file_id: str
    owner_id: str
    object_key: str
    job_id: str | None
    parent_file_id: str | None

    def new_upload(
        self,
        *,
        display_name: str,
        content_type: str,
        declared_size: int,
        client_sha256: str,
        labels: dict[str, str],
        kind: FileKind,
        via: UploadVia,
        bucket: str,
        part_size: int,
        stream_token: str | None,
    ) -> NewUpload:
        """The session record of an upload into this target, streamed or by presigned URL."""
        return NewUpload(
            id=keys.new_id(),
            owner_id=self.owner_id,
            file_id=self.file_id,
            parent_file_id=self.parent_file_id,
            job_id=self.job_id,
            object_key=self.object_key,
            display_name=display_name,
            content_type=content_type,
            declared_size=declared_size,
            client_sha256=client_sha256,
            labels=labels,
            kind=kind,
            via=via,
            bucket=bucket,
            part_size=part_size,
            stream_token=stream_token,
        )


async def upload_target(
    repo: FileRepository,
    principal: Principal,
    parent: str,
    job_id: str | None,
    kind: str,
    *,
    jobs: JobAccess,
) -> UploadTarget:
    """A new version of ``parent`` (``files/{file}``: the caller needs write access and the
    kinds must match), or, when ``parent`` is empty, a new file of the caller's, attached to
    ``jobs/{job_id}`` when given (the caller must have access to that job)."""
    if not parent:
        if job_id is not None:
            await jobs.require_job(principal, job_id)
        file_id = keys.new_id()
        key = keys.content_key(principal.user_id, file_id, job_id)
        return UploadTarget(file_id, principal.user_id, key, job_id, None)
    record = await require_file(
        repo, principal, validation.file_id(parent, "header.parent"), "write"
    )
    if record.kind != kind:
        raise FailedPrecondition(
            f"{record.name} is a {record.kind}, not a {kind}", reason="KIND_MISMATCH"
        )
    return UploadTarget(record.id, record.owner_id, record.object_key, record.job_id, record.id)


async def open_session(
    deps: UploadDeps,
    principal: Principal,
    header: UploadStart,
    profile: TransferProfile,
    token: str,
) -> UploadSession:
    """A new session for ``header``, or the claimed one it resumes (authorized either way)."""
    if header.upload:
        return await _resume_session(deps, principal, header, profile, token)
    settings = deps.settings
    display_name = validation.display_name(header.display_name, "header.display_name")
    content_type = validation.content_type(header.content_type, "header.content_type")
    if not profile.allows_content_type(content_type):
        raise InvalidArgument.field(
            "header.content_type",
            f"{content_type!r} is not accepted by this upload",
            reason="CONTENT_TYPE_NOT_ALLOWED",
        )
    size = validation.size(header.size_bytes, settings.upload_max_bytes, "header.size_bytes")
    digest = validation.sha256(header.sha256, "header.sha256")
    labels = validation.labels(header.labels, "header.labels")
    job_id = validation.job_id(header.job, "header.job")
    if header.offset:
        raise InvalidArgument.field(
            "header.offset", "must be 0 for a new upload", reason="INVALID_OFFSET"
        )
    target = await upload_target(
        deps.repo, principal, header.parent, job_id, profile.kind, jobs=deps.jobs
    )
    new = target.new_upload(
        display_name=display_name,
        content_type=content_type,
        declared_size=size,
        client_sha256=digest,
        labels=labels,
        kind=profile.kind,
        via="stream",
        bucket=deps.storage.bucket,
        part_size=choose_part_size(profile.part_size, size),
        stream_token=token,
    )
    session = await deps.repo.create_upload(new)
    await deps.activity.record(
        "files.upload.start", session.name, {"file": f"files/{target.file_id}"}
    )
    return session


async def _resume_session(
    deps: UploadDeps,
    principal: Principal,
    header: UploadStart,
    profile: TransferProfile,
    token: str,
) -> UploadSession:
    upload_id = validation.upload_id(header.upload, "header.upload")
    existing = await require_upload(deps.repo, principal, upload_id)
    # Two uploads of one part number at once are undefined on some S3 implementations:
    # let the parts of the broken stream land first.
    await deps.settled(upload_id, existing.part_size)
    if existing.kind != profile.kind or existing.via != "stream":
        raise FailedPrecondition(
            f"{existing.name} cannot be resumed by this RPC", reason="UPLOAD_KIND_MISMATCH"
        )
    if existing.state != "active":
        raise FailedPrecondition(
            f"{existing.name} is {existing.state}",
            reason="UPLOAD_NOT_ACTIVE",
            metadata={"state": existing.state},
        )
    claimed = None
    if header.offset == existing.committed_bytes:
        claimed = await deps.repo.claim_upload(upload_id, token, header.offset)
    if claimed is None:
        # Re-read: a part acknowledged after the client asked may have moved the offset.
        current = await deps.repo.get_upload(upload_id)
        committed = current.committed_bytes if current else existing.committed_bytes
        if current is not None and current.state != "active":
            raise FailedPrecondition(
                f"{existing.name} is {current.state}",
                reason="UPLOAD_NOT_ACTIVE",
                metadata={"state": current.state},
            )
        raise FailedPrecondition(
            f"resume from offset {committed}, not {header.offset}",
            reason="WRONG_OFFSET",
            metadata={"committed_offset": str(committed), "upload": existing.name},
        )
    return claimed


def object_metadata(session: UploadSession, sha256: str) -> dict[str, str]:
    metadata = {META_FILE_ID: session.file_id, META_OWNER: f"users/{session.owner_id}"}
    if sha256:
        metadata[META_SHA256] = sha256
    return metadata
