"""The only code of the users service that runs SQL; returns the frozen models of ``models``."""

from __future__ import annotations

import base64
import secrets
from datetime import datetime
from pathlib import Path

import asyncpg

from common.db import PooledConnection, Queries, SuitePool, as_suite_pool
from common.errors import Aborted, AlreadyExists, NotFound
from services.users.models import (
    ActivityEntry,
    Credentials,
    Grant,
    PendingPurge,
    Session,
    SessionAuth,
    User,
)

Q = Queries(Path(__file__).parent / "sql" / "queries.sql")

SWEEP_LOCK_KEY = 0x75736572  # "user"


def new_id() -> str:
    """A random resource id: 16 lowercase base32 characters (80 bits)."""
    return base64.b32encode(secrets.token_bytes(10)).decode().lower()


def _email_taken(email: str) -> AlreadyExists:
    return AlreadyExists(
        f"a user with email {email!r} already exists",
        reason="EMAIL_TAKEN",
        metadata={"email": email},
    )


def _user_not_found(user_id: str) -> NotFound:
    return NotFound(f"user 'users/{user_id}' does not exist", reason="USER_NOT_FOUND")


def _grant_not_found(user_id: str, grant_id: str) -> NotFound:
    return NotFound(
        f"grant 'users/{user_id}/grants/{grant_id}' does not exist", reason="GRANT_NOT_FOUND"
    )


class UserRepository:
    """Users, sessions, grants, activity, login throttling and pending purges in schema users.

    Every statement goes through ``SuitePool`` (breaker, time bound); reads and writes that may
    run twice are declared ``idempotent`` so that a dead pooled connection is retried once."""

    def __init__(self, pool: asyncpg.Pool | SuitePool) -> None:
        self.pool = as_suite_pool(pool)

    # --- users ------------------------------------------------------------------------

    async def create_user(
        self, *, email: str, display_name: str, role: str, password_hash: str | None
    ) -> User:
        try:
            row = await self.pool.fetchrow(
                Q.insert_user, new_id(), email, display_name, role, password_hash
            )
        except asyncpg.UniqueViolationError:
            raise _email_taken(email) from None
        return User.from_row(row)

    async def get_user(self, user_id: str) -> User:
        row = await self.pool.fetchrow(Q.get_user, user_id, idempotent=True)
        if row is None:
            raise _user_not_found(user_id)
        return User.from_row(row)

    async def find_credentials(self, email: str) -> Credentials | None:
        row = await self.pool.fetchrow(Q.get_user_by_email, email, idempotent=True)
        if row is None:
            return None
        return Credentials(user=User.from_row(row), password_hash=row["password_hash"])

    async def get_credentials(self, user_id: str) -> Credentials:
        row = await self.pool.fetchrow(Q.get_user, user_id, idempotent=True)
        if row is None:
            raise _user_not_found(user_id)
        return Credentials(user=User.from_row(row), password_hash=row["password_hash"])

    async def update_user(
        self,
        user_id: str,
        *,
        email: str | None = None,
        display_name: str | None = None,
        role: str | None = None,
        status: str | None = None,
        revoke_sessions: bool = False,
    ) -> User:
        """Change the given columns; optionally revoke the sessions in the same transaction."""

        async def update(conn: PooledConnection) -> User:
            try:
                row = await conn.fetchrow(Q.update_user, user_id, email, display_name, role, status)
            except asyncpg.UniqueViolationError:
                raise _email_taken(email or "") from None
            if row is None:
                raise _user_not_found(user_id)
            if revoke_sessions:
                await conn.fetchval(Q.revoke_user_sessions, user_id, None)
            return User.from_row(row)

        return await self.pool.transaction(update, what="update_user")

    async def set_password(
        self, user_id: str, password_hash: str, *, keep_session: str | None
    ) -> int:
        """Store a new hash and revoke every other session; return how many were revoked."""

        async def store(conn: PooledConnection) -> int:
            row = await conn.fetchrow(Q.set_password_hash, user_id, password_hash)
            if row is None:
                raise _user_not_found(user_id)
            return int(await conn.fetchval(Q.revoke_user_sessions, user_id, keep_session))

        return await self.pool.transaction(store, what="set_password")

    async def rehash_password(self, user_id: str, old_hash: str, new_hash: str) -> None:
        # Guarded by the old hash: a second run matches nothing.
        await self.pool.execute(Q.rehash_password, user_id, old_hash, new_hash, idempotent=True)

    async def record_login(self, user_id: str) -> None:
        await self.pool.execute(Q.set_last_login, user_id, idempotent=True)

    async def list_users(
        self,
        *,
        role: str | None,
        status: str | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[User]:
        after_time, after_id = after if after else (None, None)
        rows = await self.pool.fetch(
            Q.list_users, role, status, after_time, after_id, limit, idempotent=True
        )
        return [User.from_row(row) for row in rows]

    async def count_other_active_admins(self, user_id: str) -> int:
        return int(await self.pool.fetchval(Q.count_other_active_admins, user_id, idempotent=True))

    async def delete_user(self, user_id: str) -> User:
        """Mark deleted, revoke sessions, drop grants and queue the purge, atomically."""

        async def delete(conn: PooledConnection) -> User:
            row = await conn.fetchrow(Q.mark_user_deleted, user_id)
            if row is None:
                raise _user_not_found(user_id)
            await conn.fetchval(Q.revoke_user_sessions, user_id, None)
            await conn.execute(Q.delete_user_grants, user_id)
            await conn.fetchrow(Q.insert_pending_purge, user_id)
            return User.from_row(row)

        return await self.pool.transaction(delete, what="delete_user")

    async def scrub_user(self, user_id: str) -> None:
        await self.pool.execute(Q.scrub_user, user_id, idempotent=True)

    # --- sessions ---------------------------------------------------------------------

    async def create_session(
        self,
        *,
        user_id: str,
        token_hash: bytes,
        lifetime_seconds: float,
        user_agent: str = "",
        peer: str = "",
    ) -> Session:
        row = await self.pool.fetchrow(
            Q.insert_session, new_id(), user_id, token_hash, lifetime_seconds, user_agent, peer
        )
        return Session.from_row(row)

    async def session_auth(
        self, token_hash: bytes, *, idle_seconds: float, touch_after_seconds: float
    ) -> tuple[SessionAuth, bool, bool, bool] | None:
        """The session of a token hash with (within_absolute, within_idle, needs_touch)."""
        row = await self.pool.fetchrow(
            Q.session_auth, token_hash, idle_seconds, touch_after_seconds, idempotent=True
        )
        if row is None:
            return None
        auth = SessionAuth(
            session=Session.from_row(row),
            role=row["role"],
            status=row["status"],
            grants=tuple(row["grants"]),
        )
        return auth, row["within_absolute"], row["within_idle"], row["needs_touch"]

    async def touch_session(self, session_id: str) -> None:
        await self.pool.execute(Q.touch_session, session_id, idempotent=True)

    async def revoke_session(self, user_id: str, session_id: str) -> Session:
        row = await self.pool.fetchrow(Q.revoke_session, user_id, session_id)
        if row is None:
            raise NotFound(
                f"session 'users/{user_id}/sessions/{session_id}' does not exist",
                reason="SESSION_NOT_FOUND",
            )
        return Session.from_row(row)

    async def list_sessions(
        self,
        user_id: str,
        *,
        active_only: bool,
        idle_seconds: float,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Session]:
        before_time, before_id = before if before else (None, None)
        rows = await self.pool.fetch(
            Q.list_sessions,
            user_id,
            active_only,
            idle_seconds,
            before_time,
            before_id,
            limit,
            idempotent=True,
        )
        return [Session.from_row(row) for row in rows]

    # --- login throttling -------------------------------------------------------------

    async def throttle_key(self) -> bytes:
        """The HMAC key of the throttle table made by its migration (when no setting gives one)."""
        return bytes(await self.pool.fetchval(Q.get_throttle_key, idempotent=True))

    async def count_login_attempt(self, key: bytes, *, window_seconds: float) -> tuple[int, float]:
        """Count one attempt under ``key``: (attempts in the window, seconds the window has left)."""
        row = await self.pool.fetchrow(Q.count_login_events, [key], window_seconds)
        return int(row["count"]), float(row["window_left"])

    async def count_login_failure(
        self, pair_key: bytes, account_key: bytes, *, window_seconds: float
    ) -> None:
        keys = sorted({pair_key, account_key})
        await self.pool.fetch(Q.count_login_events, keys, window_seconds)

    async def login_failures(
        self, pair_key: bytes, account_key: bytes, *, window_seconds: float
    ) -> tuple[tuple[int, float], tuple[int, float]]:
        """(failures, seconds since the last) of the (account, address) key and the account key."""
        rows = await self.pool.fetch(
            Q.login_throttle_counts, [pair_key, account_key], window_seconds, idempotent=True
        )
        found = {bytes(r["key"]): (int(r["count"]), float(r["age"])) for r in rows}
        return found.get(pair_key, (0, 0.0)), found.get(account_key, (0, 0.0))

    async def forget_login_failures(self, pair_key: bytes, account_key: bytes) -> None:
        await self.pool.execute(Q.forget_login_failures, pair_key, account_key, idempotent=True)

    # --- grants -----------------------------------------------------------------------

    async def grant(
        self, *, user_id: str, permission: str, resource: str, creator: str
    ) -> tuple[Grant, bool]:
        """Insert a grant; an identical existing grant is returned with ``created=False``."""
        try:
            row = await self.pool.fetchrow(
                Q.insert_grant, new_id(), user_id, permission, resource, creator
            )
        except asyncpg.ForeignKeyViolationError:
            raise _user_not_found(user_id) from None
        if row is not None:
            return Grant.from_row(row), True
        row = await self.pool.fetchrow(
            Q.get_grant_by_key, user_id, permission, resource, idempotent=True
        )
        if row is None:  # revoked between the two statements: report the race, the caller retries
            raise Aborted("the grant changed concurrently; retry", reason="CONCURRENT_CHANGE")
        return Grant.from_row(row), False

    async def get_grant(self, user_id: str, grant_id: str) -> Grant:
        row = await self.pool.fetchrow(Q.get_grant, user_id, grant_id, idempotent=True)
        if row is None:
            raise _grant_not_found(user_id, grant_id)
        return Grant.from_row(row)

    async def revoke_grant(self, user_id: str, grant_id: str) -> Grant:
        row = await self.pool.fetchrow(Q.delete_grant, user_id, grant_id)
        if row is None:
            raise _grant_not_found(user_id, grant_id)
        return Grant.from_row(row)

    async def list_grants(
        self,
        *,
        user_id: str | None,
        permission: str | None,
        resource: str | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Grant]:
        after_time, after_id = after if after else (None, None)
        rows = await self.pool.fetch(
            Q.list_grants,
            user_id,
            permission,
            resource,
            after_time,
            after_id,
            limit,
            idempotent=True,
        )
        return [Grant.from_row(row) for row in rows]

    # --- activity ---------------------------------------------------------------------

    async def record_activity(
        self,
        *,
        actor: str,
        actor_id: str | None,
        action: str,
        resource: str,
        request_id: str,
        metadata: dict[str, str],
    ) -> ActivityEntry:
        row = await self.pool.fetchrow(
            Q.insert_activity, actor, actor_id, action, resource, request_id, metadata
        )
        return ActivityEntry.from_row(row)

    async def list_activity(
        self,
        *,
        actor_id: str | None,
        action: str | None,
        action_prefix: str | None,
        start: datetime | None,
        end: datetime | None,
        before_id: int | None,
        limit: int,
    ) -> list[ActivityEntry]:
        rows = await self.pool.fetch(
            Q.list_activity,
            actor_id,
            action,
            action_prefix,
            start,
            end,
            before_id,
            limit,
            idempotent=True,
        )
        return [ActivityEntry.from_row(row) for row in rows]

    # --- retention and purges ---------------------------------------------------------

    async def get_pending_purge(self, user_id: str) -> PendingPurge | None:
        row = await self.pool.fetchrow(Q.get_pending_purge, user_id, idempotent=True)
        return None if row is None else PendingPurge.from_row(row)

    async def due_purges(self, limit: int) -> list[PendingPurge]:
        rows = await self.pool.fetch(Q.due_purges, limit, idempotent=True)
        return [PendingPurge.from_row(row) for row in rows]

    async def purge_done(self, user_id: str) -> None:
        await self.pool.execute(Q.purge_done, user_id)

    async def purge_failed(self, user_id: str, error: str, retry_in_seconds: float) -> None:
        await self.pool.execute(Q.purge_failed, user_id, error[:2000], retry_in_seconds)

    async def delete_ended_sessions(
        self, cutoff: datetime, *, idle_seconds: float, batch: int
    ) -> int:
        return _count(
            await self.pool.execute(
                Q.delete_ended_sessions, cutoff, idle_seconds, batch, cap=self.pool.long_cap
            )
        )

    async def delete_old_activity(self, cutoff: datetime, *, batch: int) -> int:
        return _count(
            await self.pool.execute(Q.delete_old_activity, cutoff, batch, cap=self.pool.long_cap)
        )

    async def delete_stale_login_throttles(self, cutoff: datetime, *, batch: int) -> int:
        return _count(
            await self.pool.execute(
                Q.delete_stale_login_throttles, cutoff, batch, cap=self.pool.long_cap
            )
        )

    async def try_sweep_lock(self, conn: PooledConnection) -> bool:
        return bool(await conn.fetchval(Q.try_sweep_lock, SWEEP_LOCK_KEY))

    async def sweep_unlock(self, conn: PooledConnection) -> None:
        await conn.fetchval(Q.sweep_unlock, SWEEP_LOCK_KEY)


def _count(status: str) -> int:
    """Rows affected, from an asyncpg command tag such as ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])
