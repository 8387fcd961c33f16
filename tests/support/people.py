"""The whole suite in-process with real users: accounts and session tokens made cheaply.

Users are inserted through the users repository (no password hashing) and get a session
token each, so a test can call every service as different people with real authentication.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from common.app import AppContext
from services.users.models import User
from services.users.passwords import Passwords
from services.users.repository import UserRepository
from services.users.sessions import SessionManager


@dataclass
class People:
    server: Any
    ctx: AppContext
    channel: grpc.aio.Channel
    repository: UserRepository
    sessions: SessionManager
    _counter: int = 0

    async def add(self, role: str = "user") -> tuple[User, str]:
        """A new active user of ``role`` and a session token of theirs."""
        self._counter += 1
        user = await self.repository.create_user(
            email=f"{role}{self._counter}@example.com",
            display_name=f"{role} {self._counter}",
            role=role,
            password_hash=None,
        )
        token, _ = await self.sessions.open_session(user.id)
        return user, token


async def start_all(suite: Any, *names: str, **overrides: Any) -> People:
    """``suite(*names or "all")`` with the users service's real authentication."""
    server, ctx, channel = await suite(*(names or ("all",)), **overrides)
    repository = UserRepository(ctx.pool)
    sessions = SessionManager(repository, ctx.settings, Passwords.from_settings(ctx.settings))
    return People(server, ctx, channel, repository, sessions)
