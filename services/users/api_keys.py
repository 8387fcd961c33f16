"""API keys of service users: the key format, the scope, storage, creation and resolution.

A key is ``mgk_{id}_{secret}``. ``id`` (16 base32 characters, also in the key's resource name
``users/{user}/apiKeys/{id}``) finds the row; ``secret`` (256 random bits, URL-safe base64)
proves possession and is stored only as its SHA-256. A key authenticates as its service user
with a scope: the permissions it holds (a subset of the user's, recomputed from the user's
current role and grants at every resolution, so a key never outlives a lost grant) and the
job types it may claim. Only admins create, list and revoke keys; keys are for ``service``
users only (people log in).

``CredentialResolver`` is what the auth layer resolves bearer tokens with: API keys here,
session tokens in ``sessions.SessionManager``.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from common.auth import granted
from common.context import Principal
from common.db import Queries, SuitePool, as_suite_pool
from common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Violations,
)
from services.jobs.validation import TYPE_MAX_LENGTH, TYPE_RE
from services.users.models import ApiKey, User
from services.users.permissions import VOCABULARY, effective_permissions
from services.users.repository import UserRepository, new_id
from services.users.sessions import SessionManager, token_hash

Q = Queries(Path(__file__).parent / "sql" / "api_keys.sql")

KEY_PREFIX = "mgk_"
_KEY_RE = re.compile(r"^mgk_([a-z2-7]{16})_([A-Za-z0-9_-]{43})$")
API_KEY_NAME_RE = re.compile(r"^users/([a-z0-9]{1,64})/apiKeys/([a-z0-9]{1,64})$")
WORK_PERMISSION = "jobs.work"
MAX_JOB_TYPES = 64
# Compared against when no key has the id, so that an unknown id costs the same compare.
_NO_HASH = bytes(32)


def new_key(key_id: str) -> tuple[str, bytes]:
    """A fresh key for ``key_id`` and the hash of its secret (the only part stored)."""
    secret = secrets.token_urlsafe(32)
    # The secret is hashed as a session token is (sessions.token_hash, SHA-256): a fast hash is
    # enough for 256 random bits the server made, where no dictionary or brute-force search
    # profits from its speed, and a slow one would cost every authentication that misses the
    # cache.
    return f"{KEY_PREFIX}{key_id}_{secret}", token_hash(secret)


def parse_key(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None."""
    match = _KEY_RE.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None


def is_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def key_name(name: str, field: str = "name") -> tuple[str, str]:
    """(user id, key id) of ``users/{user}/apiKeys/{key}``."""
    match = API_KEY_NAME_RE.fullmatch(name)
    if not match:
        raise InvalidArgument.field(
            field,
            "must be an API key name like 'users/{id}/apiKeys/{id}'" if name else "is required",
        )
    return match.group(1), match.group(2)


def scoped_permissions(
    held: frozenset[str], permissions: Sequence[str], job_types: Sequence[str]
) -> frozenset[str]:
    """What a key holds of its user's effective permissions ``held``.

    Entries of the permissions the key names (all when it names none) are kept; with job
    types, the ``jobs.work`` entries become ``jobs.work:job-types/{type}`` for each type the
    user's own ``jobs.work`` covers.
    """
    names = frozenset(permissions)
    kept = frozenset(e for e in held if not names or e.partition(":")[0] in names)
    if not job_types:
        return kept
    work = frozenset(e for e in kept if e.partition(":")[0] == WORK_PERMISSION)
    claimable = frozenset(
        f"{WORK_PERMISSION}:job-types/{t}"
        for t in job_types
        if granted(work, WORK_PERMISSION, f"job-types/{t}")
    )
    return (kept - work) | claimable


def permission_names(held: frozenset[str]) -> frozenset[str]:
    return frozenset(entry.partition(":")[0] for entry in held)


def scope_violations(
    held: frozenset[str], permissions: Sequence[str], job_types: Sequence[str], field: str
) -> list[FieldViolation]:
    """What is wrong with a requested scope, given the permissions its user holds."""
    violations: list[FieldViolation] = []
    names = permission_names(held)
    if len(permissions) > len(VOCABULARY):
        violations.append(
            FieldViolation(f"{field}.permissions", f"at most {len(VOCABULARY)} permissions")
        )
    for i, permission in enumerate(permissions[: len(VOCABULARY)]):
        where = f"{field}.permissions[{i}]"
        if permission not in VOCABULARY:
            violations.append(FieldViolation(where, "is not a known permission"))
        elif permission not in names:
            violations.append(FieldViolation(where, "is not held by the key's user"))
    if len(set(permissions)) != len(permissions):
        violations.append(FieldViolation(f"{field}.permissions", "names a permission twice"))
    if len(job_types) > MAX_JOB_TYPES:
        violations.append(FieldViolation(f"{field}.job_types", f"at most {MAX_JOB_TYPES}"))
    for i, job_type in enumerate(job_types[:MAX_JOB_TYPES]):
        if len(job_type) > TYPE_MAX_LENGTH or not TYPE_RE.fullmatch(job_type):
            violations.append(
                FieldViolation(
                    f"{field}.job_types[{i}]", "is not a job type name like 'video.probe'"
                )
            )
    if len(set(job_types)) != len(job_types):
        violations.append(FieldViolation(f"{field}.job_types", "names a job type twice"))
    scope_names = frozenset(permissions) or names
    if job_types and WORK_PERMISSION not in scope_names:
        violations.append(
            FieldViolation(f"{field}.job_types", f"needs {WORK_PERMISSION} in the key's scope")
        )
    return violations


class ApiKeyStore:
    """The ``users.api_keys`` table (the only code running the queries of ``api_keys.sql``)."""

    def __init__(self, pool: asyncpg.Pool | SuitePool) -> None:
        self.pool = as_suite_pool(pool)

    async def insert(
        self,
        *,
        key_id: str,
        user_id: str,
        hashed: bytes,
        display_name: str,
        permissions: Sequence[str],
        job_types: Sequence[str],
        creator: str,
        expire_time: datetime | None,
    ) -> ApiKey:
        row = await self.pool.fetchrow(
            Q.insert_api_key,
            key_id,
            user_id,
            hashed,
            display_name,
            list(permissions),
            list(job_types),
            creator,
            expire_time,
        )
        return ApiKey.from_row(row)

    async def auth(self, key_id: str) -> asyncpg.Record | None:
        """The key with its secret hash, expiry and its user's role, status and grants."""
        return await self.pool.fetchrow(Q.api_key_auth, key_id, idempotent=True)

    async def revoke(self, user_id: str, key_id: str) -> ApiKey:
        row = await self.pool.fetchrow(Q.revoke_api_key, user_id, key_id, idempotent=True)
        if row is None:
            raise NotFound(
                f"API key 'users/{user_id}/apiKeys/{key_id}' does not exist",
                reason="API_KEY_NOT_FOUND",
            )
        return ApiKey.from_row(row)

    async def list(
        self,
        *,
        user_id: str | None,
        active_only: bool,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[ApiKey]:
        after_time, after_id = after if after else (None, None)
        rows = await self.pool.fetch(
            Q.list_api_keys, user_id, active_only, after_time, after_id, limit, idempotent=True
        )
        return [ApiKey.from_row(row) for row in rows]


class ApiKeyManager:
    """Creates keys for service users and turns keys into scoped principals."""

    def __init__(self, store: ApiKeyStore, repository: UserRepository) -> None:
        self.store = store
        self.repository = repository

    async def held_permissions(self, user: User) -> frozenset[str]:
        grants = await self.repository.list_grants(
            user_id=user.id, permission=None, resource=None, after=None, limit=10_000
        )
        return effective_permissions(user.role, (f"{g.permission}:{g.resource}" for g in grants))

    async def create(
        self,
        *,
        user_id: str,
        creator: str,
        display_name: str,
        permissions: Sequence[str],
        job_types: Sequence[str],
        expire_time: datetime | None,
    ) -> tuple[str, ApiKey]:
        """A new key (returned once, in clear) of an active service user within its scope."""
        user = await self.repository.get_user(user_id)
        if user.role != "service" or user.status != "active":
            raise FailedPrecondition(
                f"API keys are for active service users; {user.name} is an {user.status} "
                f"{user.role} user",
                reason="NOT_A_SERVICE_USER",
                metadata={"user": user.name, "role": user.role, "status": user.status},
            )
        found = Violations()
        found.extend(
            scope_violations(await self.held_permissions(user), permissions, job_types, "api_key")
        )
        found.raise_if_any("SCOPE_NOT_HELD")
        key_id = new_id()
        key, hashed = new_key(key_id)
        record = await self.store.insert(
            key_id=key_id,
            user_id=user.id,
            hashed=hashed,
            display_name=display_name,
            permissions=permissions,
            job_types=job_types,
            creator=creator,
            expire_time=expire_time,
        )
        return key, record

    async def resolve_key(self, token: str) -> Principal:
        """The scoped principal of a key, or UNAUTHENTICATED saying why it is not valid."""
        parsed = parse_key(token)
        if parsed is None:
            raise Unauthenticated("the token is not a mediagrid API key", reason="INVALID_TOKEN")
        key_id, secret = parsed
        row = await self.store.auth(key_id)
        stored = bytes(row["secret_hash"]) if row is not None else _NO_HASH
        # Constant time: how much of a guessed secret is right must not show in the timing.
        if not hmac.compare_digest(stored, token_hash(secret)) or row is None:
            raise Unauthenticated("the token is not valid", reason="INVALID_TOKEN")
        key = ApiKey.from_row(row)
        if key.revoke_time is not None:
            raise Unauthenticated("the API key was revoked", reason="API_KEY_REVOKED")
        if row["expired"]:
            raise Unauthenticated("the API key expired", reason="API_KEY_EXPIRED")
        if row["status"] != "active":
            raise Unauthenticated("the user is not active", reason="USER_INACTIVE")
        if row["role"] != "service":
            raise Unauthenticated(
                "the API key's user is no longer a service user", reason="NOT_A_SERVICE_USER"
            )
        held = effective_permissions("service", row["grants"])
        return Principal(
            name=f"users/{key.user_id}",
            user_id=key.user_id,
            role="service",
            permissions=scoped_permissions(held, key.permissions, key.job_types),
            api_key=key.name,
        )


class CredentialResolver:
    """Resolves a bearer token: an API key (``mgk_``) or a session token."""

    def __init__(self, sessions: SessionManager, keys: ApiKeyManager) -> None:
        self.sessions = sessions
        self.keys = keys

    async def resolve_token(self, token: str) -> Principal:
        if is_api_key(token):
            return await self.keys.resolve_key(token)
        return await self.sessions.resolve_token(token)


def expiry(value: datetime | None, field: str, now: datetime | None = None) -> datetime | None:
    """A requested expiry: unset (never), or a time in the future."""
    if value is not None and value <= (now or datetime.now(UTC)):
        raise InvalidArgument.field(field, "must be in the future", reason="INVALID_EXPIRY")
    return value
