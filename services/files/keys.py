"""Object keys and ids, built by the server from ids only (no client string reaches a key)."""

from __future__ import annotations

import uuid


def new_id() -> str:
    """A fresh resource id: 32 lowercase hex digits."""
    return uuid.uuid4().hex


def user_prefix(owner_id: str) -> str:
    """``users/{owner}/`` — everything of one user's files lives under it."""
    return f"users/{owner_id}/"


def object_prefix(owner_id: str, file_id: str, job_id: str | None = None) -> str:
    """``users/{owner}/[jobs/{job}/]{file}/`` — everything of one file lives under it."""
    job = f"jobs/{job_id}/" if job_id else ""
    return f"{user_prefix(owner_id)}{job}{file_id}/"


def content_key(owner_id: str, file_id: str, job_id: str | None = None) -> str:
    return object_prefix(owner_id, file_id, job_id) + "content"
