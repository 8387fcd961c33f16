"""Input rules of the users service: emails, passwords, names, actions, metadata, page sizes.

Each function returns the clean value or raises ``InvalidArgument`` naming the field, so a
request is rejected as a whole before anything is stored.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from email_validator import EmailNotValidError, validate_email

from common import pagination
from common.errors import InvalidArgument, Violations

MAX_EMAIL_LENGTH = 254
MAX_PASSWORD_LENGTH = 256
MAX_DISPLAY_NAME_LENGTH = 128
MAX_RESOURCE_LENGTH = 512
MAX_ACTION_LENGTH = 64
MAX_METADATA_ENTRIES = 32
MAX_METADATA_KEY_LENGTH = 64
MAX_METADATA_VALUE_LENGTH = 1024
MAX_REQUEST_ID_LENGTH = 128
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MIN_DISTINCT_PASSWORD_CHARS = 5

_ID = r"[a-z0-9]{1,64}"
USER_NAME_RE = re.compile(rf"^users/({_ID})$")
SESSION_NAME_RE = re.compile(rf"^users/({_ID})/sessions/({_ID})$")
GRANT_NAME_RE = re.compile(rf"^users/({_ID})/grants/({_ID})$")
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$")
_RESOURCE_RE = re.compile(r"^[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$")
_METADATA_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]+$")

ME = "me"
EVERYONE = "-"


def _has_control_chars(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in text)


def email(value: str, field: str = "email") -> str:
    """The normalized address (domain lowercased); uniqueness ignores case entirely."""
    if not value:
        raise InvalidArgument.field(field, "is required")
    if len(value) > MAX_EMAIL_LENGTH:
        raise InvalidArgument.field(field, f"must be at most {MAX_EMAIL_LENGTH} characters")
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidArgument.field(field, f"is not a valid email address: {exc}") from None
    return str(result.normalized)


def password_problem(value: str, *, min_length: int, email_address: str = "") -> str | None:
    """Why ``value`` breaks the password policy, or None when it is acceptable."""
    if len(value) < min_length:
        return f"must be at least {min_length} characters"
    if len(value) > MAX_PASSWORD_LENGTH:
        return f"must be at most {MAX_PASSWORD_LENGTH} characters"
    if "\x00" in value or any(unicodedata.category(ch) == "Cc" for ch in value):
        return "must not contain control characters"
    if not value.strip():
        return "must not be blank"
    if len(set(value)) < MIN_DISTINCT_PASSWORD_CHARS:
        return f"must use at least {MIN_DISTINCT_PASSWORD_CHARS} different characters"
    lowered = value.lower()
    if email_address and lowered in (email_address.lower(), email_address.lower().split("@")[0]):
        return "must not be the email address"
    return None


def password(
    value: str, *, min_length: int, email_address: str = "", field: str = "password"
) -> str:
    problem = password_problem(value, min_length=min_length, email_address=email_address)
    if problem:
        raise InvalidArgument.field(field, problem, reason="WEAK_PASSWORD")
    return value


def display_name(value: str, field: str = "display_name") -> str:
    value = value.strip()
    if len(value) > MAX_DISPLAY_NAME_LENGTH:
        raise InvalidArgument.field(field, f"must be at most {MAX_DISPLAY_NAME_LENGTH} characters")
    if _has_control_chars(value):
        raise InvalidArgument.field(field, "must not contain control characters")
    return value


def user_id(name: str, field: str = "name", *, allow_everyone: bool = False) -> str:
    """The id of ``users/{id}``; ``me`` and (when allowed) ``-`` are returned as they are."""
    if name == f"users/{ME}":
        return ME
    if allow_everyone and name == f"users/{EVERYONE}":
        return EVERYONE
    match = USER_NAME_RE.fullmatch(name)
    if not match:
        raise InvalidArgument.field(
            field, "must be a user name like 'users/{id}'" if name else "is required"
        )
    return match.group(1)


def session_name(name: str, field: str = "name") -> tuple[str, str]:
    match = SESSION_NAME_RE.fullmatch(name)
    if not match:
        raise InvalidArgument.field(field, "must be a session name like 'users/{id}/sessions/{id}'")
    return match.group(1), match.group(2)


def grant_name(name: str, field: str = "name") -> tuple[str, str]:
    match = GRANT_NAME_RE.fullmatch(name)
    if not match:
        raise InvalidArgument.field(field, "must be a grant name like 'users/{id}/grants/{id}'")
    return match.group(1), match.group(2)


def page_size(value: int) -> int:
    return pagination.page_size(value, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)


def action(value: str, field: str = "action") -> str:
    if not value:
        raise InvalidArgument.field(field, "is required")
    if len(value) > MAX_ACTION_LENGTH or not _ACTION_RE.fullmatch(value):
        raise InvalidArgument.field(
            field,
            f"must look like 'service.verb' (lowercase, dots, at most {MAX_ACTION_LENGTH} chars)",
        )
    return value


def action_filter(value: str, field: str = "action") -> str:
    """An action, or a family of actions ending in ``.*``; empty means any."""
    if not value:
        return ""
    if value.endswith(".*"):
        stem = value[:-2]
        if not re.fullmatch(r"[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*", stem):
            raise InvalidArgument.field(field, "must be an action or a prefix like 'files.*'")
        return value
    return action(value, field)


def resource(value: str, field: str = "resource") -> str:
    if not value:
        raise InvalidArgument.field(field, "is required")
    if len(value) > MAX_RESOURCE_LENGTH or not _RESOURCE_RE.fullmatch(value):
        raise InvalidArgument.field(
            field,
            f"must be a resource name like 'files/abc' (at most {MAX_RESOURCE_LENGTH} characters)",
        )
    return value


def metadata(values: Mapping[str, str], field: str = "metadata") -> dict[str, str]:
    found = Violations()
    if len(values) > MAX_METADATA_ENTRIES:
        found.add(field, f"must have at most {MAX_METADATA_ENTRIES} entries")
    for key, value in values.items():
        if not key or len(key) > MAX_METADATA_KEY_LENGTH or not _METADATA_KEY_RE.fullmatch(key):
            found.add(
                f"{field}[{key[:MAX_METADATA_KEY_LENGTH]!r}]",
                f"keys are 1 to {MAX_METADATA_KEY_LENGTH} of A-Z a-z 0-9 _ . -",
            )
        elif len(value) > MAX_METADATA_VALUE_LENGTH or "\x00" in value:
            found.add(
                f"{field}[{key!r}]",
                f"values are at most {MAX_METADATA_VALUE_LENGTH} characters without NUL",
            )
    found.raise_if_any()
    return dict(values)


def request_id(value: str, field: str = "request_id") -> str:
    if value and (len(value) > MAX_REQUEST_ID_LENGTH or not _REQUEST_ID_RE.fullmatch(value)):
        raise InvalidArgument.field(
            field, f"must be at most {MAX_REQUEST_ID_LENGTH} of A-Z a-z 0-9 . _ : -"
        )
    return value
