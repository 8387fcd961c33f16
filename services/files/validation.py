"""Parsing and validation of client-supplied values: resource names, headers, labels.

Every function raises ``InvalidArgument`` naming the offending field, so a bad request never
reaches S3 or SQL. Object keys are never built from these strings (see ``keys.py``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from common import pagination
from common.errors import InvalidArgument

_ID = r"[0-9a-f]{32}"
_FILE_NAME = re.compile(rf"^files/({_ID})$")
_UPLOAD_NAME = re.compile(rf"^uploads/({_ID})$")
# User and job ids come from other services: allow their usual id alphabets, nothing else.
_FOREIGN_ID = r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}"
_USER_NAME = re.compile(rf"^users/({_FOREIGN_ID})$")
_JOB_NAME = re.compile(rf"^jobs/({_FOREIGN_ID})$")
_TOKEN = r"[A-Za-z0-9!#$&^_.+-]{1,127}"
_CONTENT_TYPE = re.compile(rf"^({_TOKEN})/({_TOKEN})$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")

MAX_DISPLAY_NAME_BYTES = 1024
MAX_LABELS = 64
MAX_LABEL_VALUE_CHARS = 256
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def _match(pattern: re.Pattern[str], value: str, field: str, example: str) -> str:
    match = pattern.fullmatch(value)  # not match(): "$" also matches before a final newline
    if match is None:
        raise InvalidArgument.field(field, f"must look like {example!r}", reason="INVALID_NAME")
    return match.group(1)


def file_id(name: str, field: str = "name") -> str:
    return _match(_FILE_NAME, name, field, "files/{32 hex digits}")


def upload_id(name: str, field: str = "name") -> str:
    return _match(_UPLOAD_NAME, name, field, "uploads/{32 hex digits}")


def user_id(name: str, field: str = "user") -> str:
    return _match(_USER_NAME, name, field, "users/{user}")


def job_id(name: str, field: str = "job") -> str | None:
    """``jobs/{job}`` -> job id; empty -> None."""
    return _match(_JOB_NAME, name, field, "jobs/{job}") if name else None


def display_name(value: str, field: str = "display_name") -> str:
    """A file name shown to people: printable, not a path that climbs, at most 1 KiB."""

    def bad(description: str) -> InvalidArgument:
        return InvalidArgument.field(field, description, reason="INVALID_DISPLAY_NAME")

    if not value or not value.strip():
        raise bad("must not be empty")
    if len(value.encode()) > MAX_DISPLAY_NAME_BYTES:
        raise bad(f"must be at most {MAX_DISPLAY_NAME_BYTES} bytes of UTF-8")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in value):
        raise bad("must not contain NUL, control or format characters")
    segments = value.replace("\\", "/").split("/")
    if value.startswith(("/", "\\")) or any(s in (".", "..") for s in segments):
        raise bad("must not be an absolute path or contain '.' or '..' path segments")
    return value


def content_type(value: str, field: str = "content_type") -> str:
    if not value:
        return DEFAULT_CONTENT_TYPE
    lowered = value.strip().lower()
    if len(lowered) > 255 or not _CONTENT_TYPE.fullmatch(lowered):
        raise InvalidArgument.field(
            field, "must be a MIME type such as 'video/mp4'", reason="INVALID_CONTENT_TYPE"
        )
    return lowered


def sha256(value: str, field: str = "sha256") -> str:
    if not value:
        return ""
    lowered = value.lower()
    if not _SHA256.fullmatch(lowered):
        raise InvalidArgument.field(field, "must be 64 hex digits", reason="INVALID_SHA256")
    return lowered


def size(value: int, maximum: int, field: str = "size_bytes") -> int:
    if value < 0:
        raise InvalidArgument.field(field, "must not be negative", reason="INVALID_SIZE")
    if value > maximum:
        raise InvalidArgument.field(
            field, f"must be at most {maximum} bytes", reason="FILE_TOO_LARGE"
        )
    return value


def required_size(value: int, maximum: int, field: str = "size_bytes") -> int:
    """A size the client must declare (presigned uploads): at least 1 byte, at most ``maximum``.

    0 is proto3's "not set", so it is refused as missing rather than taken as an empty file.
    """
    if value == 0:
        raise InvalidArgument.field(field, "is required (at least 1 byte)", reason="SIZE_REQUIRED")
    return size(value, maximum, field)


def labels(values: Mapping[str, str], field: str = "labels") -> dict[str, str]:
    if len(values) > MAX_LABELS:
        raise InvalidArgument.field(field, f"at most {MAX_LABELS} labels", reason="INVALID_LABELS")
    for key, value in values.items():
        if not _LABEL_KEY.fullmatch(key):
            raise InvalidArgument.field(
                f"{field}[{key!r}]",
                "keys are 1-63 lowercase letters, digits, '_', '.', '-', starting with a letter",
                reason="INVALID_LABELS",
            )
        if len(value) > MAX_LABEL_VALUE_CHARS or any(
            unicodedata.category(ch) == "Cc" for ch in value
        ):
            raise InvalidArgument.field(
                f"{field}[{key!r}]",
                f"values are at most {MAX_LABEL_VALUE_CHARS} printable characters",
                reason="INVALID_LABELS",
            )
    return dict(values)


def page_size(value: int) -> int:
    return pagination.page_size(value, default=50, maximum=1000)


# Leading bytes of formats whose declared content type we can check cheaply. A declared type
# in this table whose bytes do not match is refused (CONTENT_TYPE_MISMATCH); other types are
# taken as declared (metadata only).
_SIGNATURES: dict[str, tuple[tuple[int, bytes], ...]] = {
    "image/png": ((0, b"\x89PNG\r\n\x1a\n"),),
    "image/jpeg": ((0, b"\xff\xd8\xff"),),
    "image/gif": ((0, b"GIF87a"), (0, b"GIF89a")),
    "application/pdf": ((0, b"%PDF-"),),
    "application/zip": ((0, b"PK\x03\x04"), (0, b"PK\x05\x06")),
    "application/gzip": ((0, b"\x1f\x8b"),),
    "video/mp4": ((4, b"ftyp"),),
    "video/quicktime": ((4, b"ftyp"), (4, b"moov"), (4, b"wide"), (4, b"mdat")),
    "video/webm": ((0, b"\x1a\x45\xdf\xa3"),),
    "video/x-matroska": ((0, b"\x1a\x45\xdf\xa3"),),
    "video/mp2t": ((0, b"\x47"),),
    "video/x-msvideo": ((0, b"RIFF"),),
}
SNIFF_BYTES = 16


def content_matches(declared: str, head: bytes) -> bool:
    """False when ``declared`` is a type we recognise and ``head`` is not that format.

    Empty content matches everything (a zero-byte file has no format).
    """
    signatures = _SIGNATURES.get(declared)
    if not signatures or not head:
        return True
    return any(head[offset : offset + len(magic)] == magic for offset, magic in signatures)
