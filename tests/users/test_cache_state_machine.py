"""Model-based test of the auth cache: revocation is visible within the TTL, size stays bounded."""

from __future__ import annotations

import asyncio

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from common import errors
from common.auth import CachingAuthenticator
from common.context import Principal

TTL = 3.0
MAX_ENTRIES = 3
TOKENS = ["t0", "t1", "t2", "t3", "t4"]


class Inner:
    """The source of truth: which tokens are valid right now."""

    def __init__(self) -> None:
        self.valid = set(TOKENS)

    async def authenticate(self, token: str) -> Principal:
        if token not in self.valid:
            raise errors.Unauthenticated("revoked", reason="SESSION_REVOKED")
        return Principal(name=f"users/{token}", user_id=token, role="user")


class CacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.inner = Inner()
        self.cache = CachingAuthenticator(
            self.inner, TTL, max_entries=MAX_ENTRIES, clock=lambda: self.now
        )
        self.revoked_at: dict[str, float] = {}

    @rule(token=st.sampled_from(TOKENS))
    def authenticate(self, token: str) -> None:
        try:
            principal = asyncio.run(self.cache.authenticate(token))
        except errors.Unauthenticated:
            assert token not in self.inner.valid
            return
        assert principal.user_id == token
        if token in self.revoked_at:
            # A revoked token may only be served from a cache entry younger than the TTL.
            assert self.now - self.revoked_at[token] < TTL

    @rule(token=st.sampled_from(TOKENS))
    def revoke(self, token: str) -> None:
        if token in self.inner.valid:
            self.inner.valid.discard(token)
            self.revoked_at[token] = self.now

    @rule(token=st.sampled_from(TOKENS))
    def restore(self, token: str) -> None:
        self.inner.valid.add(token)
        self.revoked_at.pop(token, None)

    @rule(seconds=st.floats(min_value=0, max_value=5))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @invariant()
    def bounded(self) -> None:
        assert len(self.cache) <= MAX_ENTRIES


CacheMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_cache_state_machine = CacheMachine.TestCase
