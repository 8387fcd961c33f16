"""The incoming RPC's deadline, and how long an outgoing call made on its behalf may take.

The server interceptor records the caller's deadline when a call starts; every outgoing call
(PostgreSQL, S3, a peer service) asks ``bound(cap)`` for its own limit. Answering a little
before the caller's deadline lets the server send a status that says which dependency was
slow (UNAVAILABLE with a reason) instead of the caller seeing a bare DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

from common.errors import Unavailable

# time.monotonic() at which the current RPC's caller gives up; None outside an RPC or when
# the caller set no deadline.
_deadline: ContextVar[float | None] = ContextVar("mediagrid_rpc_deadline", default=None)

# Kept back from the caller's remaining time so that our answer reaches it before its
# deadline: a share of what is left, within these bounds.
MARGIN_SHARE = 0.1
MARGIN_MIN_SECONDS = 0.02
MARGIN_MAX_SECONDS = 0.5


def set_incoming(time_remaining: float | None) -> None:
    """Record the deadline of the RPC being served (``context.time_remaining()``)."""
    _deadline.set(None if time_remaining is None else time.monotonic() + time_remaining)


@contextlib.contextmanager
def incoming(time_remaining: float | None) -> Iterator[None]:
    """Serve the block as if inside an RPC with ``time_remaining`` seconds left."""
    token = _deadline.set(None if time_remaining is None else time.monotonic() + time_remaining)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left before the current RPC's caller gives up, or None (no deadline)."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def margin(left: float) -> float:
    return min(MARGIN_MAX_SECONDS, max(MARGIN_MIN_SECONDS, left * MARGIN_SHARE))


def bound(cap: float, *, dependency: str = "a dependency") -> float:
    """Seconds an outgoing call may take: ``cap``, or less when the caller's deadline is near.

    Raises ``Unavailable`` (reason ``DEADLINE_TOO_SHORT``) when the caller's deadline leaves
    no time for the call at all.
    """
    left = remaining()
    if left is None:
        return cap
    usable = left - margin(left)
    if usable <= 0:
        raise Unavailable(
            f"the call's deadline leaves no time to reach {dependency}",
            reason="DEADLINE_TOO_SHORT",
            metadata={"dependency": dependency},
        )
    return min(cap, usable)
