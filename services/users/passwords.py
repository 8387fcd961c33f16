"""Argon2id password hashing, run in a worker thread so the event loop stays free.

Hashing at OWASP's minimum cost takes tens of milliseconds of CPU; doing it on the loop would
stall every other call of the process for that long.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from common.settings import Settings


class Passwords:
    """Hash, verify and decide on rehashing with the configured Argon2id parameters."""

    def __init__(self, *, memory_kib: int, time_cost: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        # Verified against when the email is unknown, so both paths cost the same time.
        self._dummy_hash: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Passwords:
        return cls(
            memory_kib=settings.password_hash_memory_kib,
            time_cost=settings.password_hash_time_cost,
            parallelism=settings.password_hash_parallelism,
        )

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; a missing hash costs as much as a wrong password."""
        return await asyncio.to_thread(self._verify, password_hash, password)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        if password_hash is None and self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash("mediagrid-no-such-user")
        target = password_hash or self._dummy_hash
        assert target is not None
        try:
            return bool(self._hasher.verify(target, password)) and password_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other (e.g. weaker) parameters than today's."""
        return bool(self._hasher.check_needs_rehash(password_hash))
