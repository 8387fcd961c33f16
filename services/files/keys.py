"""Object keys and ids, built by the server from ids only (no client string reaches a key)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass


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


# users/{owner}/[jobs/{job}/]{file}/content with ids of the alphabets validation.py accepts:
# no dots or slashes inside a segment, so a parsed key cannot climb out of its prefix.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}"
_CONTENT_KEY = re.compile(rf"^users/({_SEGMENT})/(?:jobs/({_SEGMENT})/)?({_SEGMENT})/content$")


@dataclass(frozen=True)
class ContentKey:
    """The ids a content key was built from."""

    owner_id: str
    file_id: str
    job_id: str | None


def parse_content_key(key: str) -> ContentKey | None:
    """The ids of a key :func:`content_key` builds, or None for any other string."""
    match = _CONTENT_KEY.fullmatch(key)
    if match is None:
        return None
    owner_id, job_id, file_id = match.groups()
    return ContentKey(owner_id=owner_id, file_id=file_id, job_id=job_id)
