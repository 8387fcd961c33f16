"""Domain types of the importers' own progress tables (frozen pydantic models, no I/O)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from common.models import FrozenModel

RunState = Literal["running", "completed", "failed", "rolled_back"]
FileState = Literal["pending", "done", "failed"]
RejectKind = Literal["invalid", "conflict", "skipped"]
Phase = Literal["users", "jobs"]


class ImportRun(FrozenModel):
    id: str
    source: str
    owner_override: str | None = None
    state: RunState
    create_time: datetime
    update_time: datetime


class FileProgress(FrozenModel):
    """One source file of a run: where it stands and what it became."""

    run_id: str
    source_path: str
    size_bytes: int
    mtime_ns: int
    sha256: str
    state: FileState
    owner_id: str
    display_name: str
    file_id: str | None = None
    version_id: str | None = None
    upload_id: str | None = None
    error: str = ""
    attempts: int = 0
    update_time: datetime


class UserMapping(FrozenModel):
    legacy_id: str
    email: str
    user_id: str | None = None
    state: Literal["pending", "done"]
    needs_password_reset: bool
    legacy_create_time: datetime | None = None
    claim_time: datetime
    import_time: datetime | None = None


class JobMapping(FrozenModel):
    legacy_id: str
    job_id: uuid.UUID | None = None
    legacy_state: str
    legacy_create_time: datetime | None = None
    import_time: datetime


class Reject(FrozenModel):
    source: str
    key: str
    kind: RejectKind
    reason: str
    detail: str = ""
    update_time: datetime


class Checkpoint(FrozenModel):
    source: str
    phase: Phase
    cursor: str
    done: bool
    records: int
    update_time: datetime
