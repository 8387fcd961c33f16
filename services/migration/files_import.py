"""Local upload directory -> S3, through the files service's own upload engine.

Every file goes through :func:`services.files.upload.run_upload` exactly as a
``FileService.Upload`` stream would: same object key layout, object metadata, SHA-256
verification, upload session and ``files.files``/``files.file_versions`` rows. Files are
streamed from disk in chunks (never read whole). Progress per source file is kept in
``files.legacy_import_files`` so a run resumes and can be rolled back (docs/migration.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import mimetypes
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from common.activity import ActivityRecorder
from common.context import Principal
from common.errors import DataLoss, DomainError, FailedPrecondition, NotFound
from common.settings import Settings
from services.files import validation
from services.files.models import FileRecord
from services.files.repository import FileRepository
from services.files.storage import Storage
from services.files.upload import (
    HashCache,
    Progress,
    TransferProfile,
    UploadDeps,
    UploadItem,
    UploadStart,
    run_upload,
)
from services.migration.models import FileProgress
from services.migration.repository import LegacyRepository
from services.users.repository import UserRepository

log = logging.getLogger("mediagrid.legacy.files")

READ_CHUNK = 1024 * 1024
LABEL_SOURCE = "imported-from"
LABEL_RUN = "legacy-run"
Verify = Literal["engine", "readback"]
Outcome = Literal["imported", "skipped", "failed", "planned"]


@dataclass(frozen=True)
class FileResult:
    source_path: str
    outcome: Outcome
    size_bytes: int
    reason: str = ""
    file_name: str = ""


@dataclass
class ImportReport:
    run_id: str
    dry_run: bool
    results: list[FileResult] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    def bytes(self, outcome: Outcome) -> int:
        return sum(r.size_bytes for r in self.results if r.outcome == outcome)

    @property
    def failures(self) -> list[FileResult]:
        return [r for r in self.results if r.outcome == "failed"]


@dataclass(frozen=True)
class RollbackReport:
    run_id: str
    files_removed: int
    objects_removed: int
    uploads_aborted: int


@dataclass(frozen=True)
class SourceFile:
    path: Path  # on disk
    key: str  # relative to the source directory, as stored in the progress table
    legacy_owner: str | None  # the first path segment (None with --owner)
    display_name: str


class SkipFile(Exception):
    """A file that cannot be imported; ``reason`` is UPPER_SNAKE_CASE."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _text(part: str) -> str:
    """A path as text PostgreSQL accepts (undecodable bytes shown as \\xNN)."""
    return os.fsencode(part).decode("utf-8", "backslashreplace")


def walk(source: Path, *, flat: bool) -> list[SourceFile]:
    """Every regular file (or symlink) below ``source``, sorted by path.

    Layout: ``source/<legacy user id>/<anything...>/<file>``; with ``flat`` every file
    belongs to the ``--owner`` and its display name is its path below ``source``.
    """
    found: list[SourceFile] = []
    for directory, dirs, names in os.walk(source):
        dirs.sort()
        for name in sorted(names):
            path = Path(directory) / name
            rel = path.relative_to(source)
            key = _text(rel.as_posix())
            if flat:
                found.append(SourceFile(path, key, None, key))
            elif len(rel.parts) < 2:
                found.append(SourceFile(path, key, "", key))  # not below a user directory
            else:
                below = _text(Path(*rel.parts[1:]).as_posix())
                found.append(SourceFile(path, key, _text(rel.parts[0]), below))
    return found


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(4 * READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _read_head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(validation.SNIFF_BYTES)


def guess_content_type(name: str, head: bytes) -> str:
    """The type its extension suggests, unless its bytes contradict it (then octet-stream)."""
    guessed, _ = mimetypes.guess_type(name, strict=False)
    if not guessed:
        return validation.DEFAULT_CONTENT_TYPE
    try:
        ctype = validation.content_type(guessed)
    except DomainError:
        return validation.DEFAULT_CONTENT_TYPE
    return ctype if validation.content_matches(ctype, head) else validation.DEFAULT_CONTENT_TYPE


async def _chunks(path: Path, expected: int) -> AsyncIterator[bytes]:
    """The file's bytes, ``READ_CHUNK`` at a time, read in a worker thread."""
    f = await asyncio.to_thread(path.open, "rb")
    try:
        total = 0
        while chunk := await asyncio.to_thread(f.read, READ_CHUNK):
            total += len(chunk)
            if total > expected:
                raise DataLoss("the file grew during the import", reason="CHANGED_DURING_IMPORT")
            yield chunk
    finally:
        await asyncio.to_thread(f.close)


class FileImporter:
    """Imports one source directory as one named run; also rolls a run back."""

    def __init__(
        self,
        *,
        settings: Settings,
        files: FileRepository,
        storage: Storage,
        legacy: LegacyRepository,
        users: UserRepository,
        activity: ActivityRecorder,
        verify: Verify = "engine",
        concurrency: int = 4,
        on_result: Callable[[FileResult], None] | None = None,
    ) -> None:
        self.settings = settings
        self.files = files
        self.storage = storage
        self.legacy = legacy
        self.users = users
        self.verify = verify
        self.concurrency = max(1, concurrency)
        self.on_result = on_result
        self.deps = UploadDeps(
            settings=settings,
            repo=files,
            storage=storage,
            activity=activity,
            hash_cache=HashCache(0),
        )
        self.profile = TransferProfile.files(settings)
        self._owners: dict[str, asyncio.Future[str]] = {}

    # --- owners ------------------------------------------------------------------------

    async def resolve_owner(self, legacy_id: str) -> str:
        """The mediagrid user id of a legacy user directory (cached per importer)."""
        future = self._owners.get(legacy_id)
        if future is None:
            future = asyncio.ensure_future(self._lookup_owner(legacy_id))
            self._owners[legacy_id] = future
        return await asyncio.shield(future)

    async def _lookup_owner(self, legacy_id: str) -> str:
        mapped = await self.legacy.user_ids_of_legacy([legacy_id])
        if legacy_id in mapped:
            return mapped[legacy_id]
        try:
            user = await self.users.get_user(legacy_id)
        except NotFound as exc:
            raise SkipFile(
                "UNKNOWN_OWNER",
                f"directory {legacy_id!r} is neither an imported legacy user nor a user id",
            ) from exc
        return user.id

    async def check_owner(self, owner: str) -> str:
        """``users/{id}`` of ``--owner`` -> the id, when that user exists."""
        user_id = validation.user_id(owner, "--owner")
        return (await self.users.get_user(user_id)).id

    # --- import ------------------------------------------------------------------------

    async def run(
        self, source: Path, run_id: str, *, owner: str | None = None, dry_run: bool = False
    ) -> ImportReport:
        source = await asyncio.to_thread(source.resolve)
        if not await asyncio.to_thread(source.is_dir):
            raise FailedPrecondition(f"{source} is not a directory", reason="SOURCE_NOT_FOUND")
        owner_id = await self.check_owner(owner) if owner else None
        run = await self.legacy.get_run(run_id)
        if run is not None and run.source != str(source):
            raise FailedPrecondition(
                f"run {run_id!r} imported {run.source}, not {source}; choose another --run",
                reason="RUN_SOURCE_MISMATCH",
            )
        if not dry_run:
            await self.legacy.start_run(run_id, str(source), owner)
        report = ImportReport(run_id, dry_run)
        entries = await asyncio.to_thread(walk, source, flat=owner_id is not None)
        pending = iter(entries)

        async def worker() -> None:
            # A fixed set of workers (not one task per file): memory stays flat for any tree.
            for entry in pending:
                result = await self._import_one(run_id, entry, owner_id, dry_run)
                report.results.append(result)
                if self.on_result is not None:
                    self.on_result(result)

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(entries)))))
        report.results.sort(key=lambda r: r.source_path)
        if not dry_run:
            await self.legacy.set_run_state(run_id, "failed" if report.failures else "completed")
        return report

    async def _import_one(
        self, run_id: str, entry: SourceFile, owner_id: str | None, dry_run: bool
    ) -> FileResult:
        size = mtime = 0
        owner = owner_id or ""
        try:
            stat = await asyncio.to_thread(entry.path.stat)
            size, mtime = stat.st_size, stat.st_mtime_ns
            if owner_id is None:
                if not entry.legacy_owner:
                    raise SkipFile(
                        "NOT_IN_USER_DIRECTORY",
                        "files must be below DIR/<user-id>/ (or use --owner)",
                    )
                owner = await self.resolve_owner(entry.legacy_owner)
            previous = await self.legacy.file_progress(run_id, entry.key)
            if (
                previous is not None
                and previous.state == "done"
                and previous.size_bytes == size
                and previous.mtime_ns == mtime
            ):
                name = f"files/{previous.file_id}"
                return FileResult(entry.key, "skipped", size, "unchanged", name)
            display_name = validation.display_name(entry.display_name, "display_name")
            if dry_run:
                return FileResult(entry.key, "planned", size)
            if previous is not None and previous.state != "done" and previous.upload_id:
                recovered = await self._recover(run_id, entry, previous, size, mtime)
                if isinstance(recovered, FileResult):
                    return recovered
                if recovered is not None:  # committed, but the file changed since
                    previous = previous.model_copy(update={"file_id": recovered})
            return await self._upload(run_id, entry, owner, display_name, size, mtime, previous)
        except Exception as exc:
            reason = _describe(exc)
            if not dry_run:
                await self.legacy.record_failure(
                    run_id,
                    entry.key,
                    size_bytes=size,
                    mtime_ns=mtime,
                    owner_id=owner,
                    display_name=entry.display_name,
                    error=reason,
                )
            log.warning("legacy import of %s failed: %s", entry.key, reason)
            return FileResult(entry.key, "failed", size, reason)

    async def _upload(
        self,
        run_id: str,
        entry: SourceFile,
        owner: str,
        display_name: str,
        size: int,
        mtime: int,
        previous: FileProgress | None,
    ) -> FileResult:
        sha256, hashed_size = await asyncio.to_thread(_hash_file, entry.path)
        if hashed_size != size:
            raise SkipFile("CHANGED_DURING_IMPORT", "the file changed while it was read")
        head = await asyncio.to_thread(_read_head, entry.path)
        content_type = guess_content_type(entry.path.name, head)
        await self.legacy.start_file(
            run_id,
            entry.key,
            size_bytes=size,
            mtime_ns=mtime,
            sha256=sha256,
            owner_id=owner,
            display_name=display_name,
        )
        # A file this run imported before and that changed since becomes a new version.
        parent = ""
        if previous is not None and previous.file_id:
            existing = await self.files.get_file(previous.file_id)
            if existing is not None and not existing.deleted:
                parent = existing.name
        start = UploadStart(
            display_name=display_name,
            content_type=content_type,
            size_bytes=size,
            sha256=sha256,
            parent=parent,
            labels={LABEL_SOURCE: "legacy", LABEL_RUN: run_id[:256]},
        )
        principal = Principal(name=f"users/{owner}", user_id=owner, role="user")
        upload_id = ""

        async def items() -> AsyncIterator[UploadItem]:
            yield start
            async for chunk in _chunks(entry.path, size):
                yield chunk

        record: FileRecord | None = None
        try:
            async for out in run_upload(self.deps, principal, items(), self.profile):
                if isinstance(out, Progress) and not upload_id:
                    upload_id = out.upload.removeprefix("uploads/")
                    await self.legacy.set_file_upload(run_id, entry.key, upload_id)
                elif isinstance(out, FileRecord):
                    record = out
        except BaseException as exc:
            await self._abandon(upload_id)
            await self.legacy.file_failed(run_id, entry.key, _describe(exc))
            if isinstance(exc, Exception):
                return FileResult(entry.key, "failed", size, _describe(exc))
            raise
        assert record is not None
        try:
            await self._verify(record, sha256, size)
        except DataLoss as exc:
            if not parent:
                await self.storage.purge_prefix(_prefix(record))
                await self.files.purge_file(record.id)
            await self.legacy.file_failed(run_id, entry.key, _describe(exc))
            return FileResult(entry.key, "failed", size, _describe(exc))
        await self.legacy.file_done(
            run_id, entry.key, file_id=record.id, version_id=record.version_id, sha256=sha256
        )
        return FileResult(entry.key, "imported", size, file_name=record.name)

    async def _recover(
        self, run_id: str, entry: SourceFile, previous: FileProgress, size: int, mtime: int
    ) -> FileResult | str | None:
        """An attempt that committed but stopped before recording it: adopt its file.

        Returns the result when the committed file is this file unchanged, the committed
        file's id when the file changed since (the new upload becomes a version of it, so
        the run still owns it), or None (an open session is failed and aborted first).
        """
        assert previous.upload_id is not None
        session = await self.files.get_upload(previous.upload_id)
        if session is None:
            return None
        if session.state != "completed":
            await self._abandon(previous.upload_id)
            return None
        record = await self.files.get_file(session.file_id)
        if record is None or record.deleted:
            return None
        if (
            previous.size_bytes != size
            or previous.mtime_ns != mtime
            or record.sha256 != previous.sha256
            or record.size_bytes != size
        ):
            return record.id
        await self.legacy.file_done(
            run_id,
            entry.key,
            file_id=record.id,
            version_id=record.version_id,
            sha256=record.sha256,
        )
        return FileResult(entry.key, "imported", size, "recovered", record.name)

    async def _verify(self, record: FileRecord, sha256: str, size: int) -> None:
        """The stored file must have the local file's size and SHA-256."""
        stored_sha, stored_size = record.sha256, record.size_bytes
        if self.verify == "readback":
            stored_sha, stored_size = await self.storage.sha256_of(
                record.object_key, record.version_id
            )
        if stored_sha != sha256 or stored_size != size:
            raise DataLoss(
                f"stored {stored_size} bytes with SHA-256 {stored_sha}; "
                f"the local file has {size} bytes with SHA-256 {sha256}",
                reason="VERIFY_FAILED",
            )

    async def _abandon(self, upload_id: str) -> None:
        """Fail a broken attempt's upload session and abort its multipart upload."""
        if not upload_id:
            return
        with contextlib.suppress(DomainError):
            session = await self.files.get_upload(upload_id)
            if session is None or session.state != "active":
                return
            if session.s3_upload_id:
                await self.storage.abort_multipart(session.object_key, session.s3_upload_id)
            await self.files.finish_upload(upload_id, "failed", "legacy import attempt failed")

    # --- rollback ----------------------------------------------------------------------

    async def rollback(self, run_id: str) -> RollbackReport:
        """Remove every file record and S3 object (all versions) the run created."""
        run = await self.legacy.get_run(run_id)
        if run is None:
            raise NotFound(f"no legacy import run named {run_id!r}", reason="RUN_NOT_FOUND")
        files_removed = objects_removed = uploads_aborted = 0
        seen: set[str] = set()
        file_ids: list[str] = []
        for row in await self.legacy.run_files(run_id):
            if row.file_id:
                file_ids.append(row.file_id)
            if not row.upload_id:
                continue
            session = await self.files.get_upload(row.upload_id)
            if session is None:
                continue
            if session.state == "active":
                await self._abandon(row.upload_id)
                uploads_aborted += 1
            elif session.state == "completed" and session.parent_file_id is None:
                # Committed by an attempt that stopped before recording it.
                file_ids.append(session.file_id)
        for file_id in file_ids:
            if file_id in seen:
                continue
            seen.add(file_id)
            if await self.legacy.file_owned_by_other_run(run_id, file_id):
                continue
            record = await self.files.get_file(file_id)
            if record is not None:
                objects_removed += await self.storage.purge_prefix(_prefix(record))
                if await self.files.purge_file(record.id):
                    files_removed += 1
        await self.legacy.delete_run_files(run_id)
        await self.legacy.set_run_state(run_id, "rolled_back")
        return RollbackReport(run_id, files_removed, objects_removed, uploads_aborted)


def _prefix(record: FileRecord) -> str:
    """``users/{owner}/[jobs/{job}/]{file}/``: every object of that file, nothing else."""
    return record.object_key.rsplit("/", 1)[0] + "/"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SkipFile):
        return f"{exc.reason}: {exc}"
    if isinstance(exc, DomainError):
        return f"{exc.reason}: {exc.message}"
    if isinstance(exc, OSError):
        return f"UNREADABLE: {exc.strerror or exc} ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"
