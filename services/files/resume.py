"""Where an interrupted upload of a local file can be found again, across process runs.

A record maps a local file, as it is now (path, size, modification time and a fingerprint
of its first and last MiB), to the upload session (``uploads/{upload}``) that carries it
on one server. ``FilesClient.upload(path, resume=store)`` looks the file up before it
starts, continues that session from its committed offset when the server still holds it,
records a new session as soon as the server names it, and forgets it once committed. A file
changed in between has another size, time or fingerprint, so it starts a new upload.

``JsonResumeStore`` keeps the records in one small JSON file (the CLI's is under
``$XDG_STATE_HOME/mediagrid/``); any object with the ``ResumeStore`` methods will do.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

FINGERPRINT_BYTES = 1024 * 1024


class ResumeKey(BaseModel):
    """A local file as it is now, plus what kind of upload of it to which server."""

    model_config = ConfigDict(frozen=True)

    server: str
    kind: str  # "file" or "video": a session resumes only through the RPC that opened it
    parent: str  # files/{file} the upload adds a version to, or ""
    path: str
    size_bytes: int
    mtime_ns: int
    fingerprint: str

    def id(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


class ResumeRecord(BaseModel):
    """An unfinished upload session of a local file."""

    key: ResumeKey
    upload: str
    create_time: dt.datetime


class ResumeStore(Protocol):
    def get(self, key: ResumeKey) -> str | None:
        """The upload session recorded for ``key``, if any."""

    def put(self, key: ResumeKey, upload: str) -> None:
        """Remember that ``upload`` carries the file of ``key``."""

    def remove(self, key: ResumeKey) -> None:
        """Forget ``key`` (committed, cancelled or no longer resumable)."""


def resume_key(path: Path, *, server: str, kind: str = "file", parent: str = "") -> ResumeKey:
    """Describe ``path`` as it is now (blocking: reads up to two MiB of it)."""
    resolved = path.resolve()
    stat = resolved.stat()
    digest = hashlib.sha256()
    with resolved.open("rb") as stream:
        digest.update(stream.read(FINGERPRINT_BYTES))
        if stat.st_size > FINGERPRINT_BYTES:
            stream.seek(max(FINGERPRINT_BYTES, stat.st_size - FINGERPRINT_BYTES))
            digest.update(stream.read(FINGERPRINT_BYTES))
    return ResumeKey(
        server=server,
        kind=kind,
        parent=parent,
        path=str(resolved),
        size_bytes=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        fingerprint=digest.hexdigest(),
    )


class JsonResumeStore:
    """Records in one JSON file, rewritten atomically (readable by its owner only)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> list[ResumeRecord]:
        return list(self._load().values())

    def get(self, key: ResumeKey) -> str | None:
        record = self._load().get(key.id())
        return record.upload if record is not None else None

    def put(self, key: ResumeKey, upload: str) -> None:
        records = self._load()
        records[key.id()] = ResumeRecord(
            key=key, upload=upload, create_time=dt.datetime.now(dt.UTC)
        )
        self._save(records)

    def remove(self, key: ResumeKey) -> None:
        records = self._load()
        if records.pop(key.id(), None) is not None:
            self._save(records)

    def remove_upload(self, upload: str) -> bool:
        """Forget every record of ``upload``; True when there was one."""
        records = self._load()
        kept = {k: r for k, r in records.items() if r.upload != upload}
        if len(kept) == len(records):
            return False
        self._save(kept)
        return True

    def _load(self) -> dict[str, ResumeRecord]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # a damaged store only costs a fresh upload
        records: dict[str, ResumeRecord] = {}
        for item in raw.get("uploads", []) if isinstance(raw, dict) else []:
            with contextlib.suppress(ValidationError):
                record = ResumeRecord.model_validate(item)
                records[record.key.id()] = record
        return records

    def _save(self, records: dict[str, ResumeRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        body = json.dumps({"uploads": [r.model_dump(mode="json") for r in records.values()]})
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".uploads-")
        try:
            with os.fdopen(handle, "w") as stream:
                stream.write(body)
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
