"""The path of every call from one service of the suite to another (a peer).

``await call_peer(ctx.dependencies.peer("jobs"), lambda timeout: stub.GetJob(request,
timeout=timeout, metadata=metadata), what="GetJob")``:

- the call goes through the peer's circuit breaker: while it is open the call fails at once
  with UNAVAILABLE ``DEPENDENCY_UNAVAILABLE`` (metadata ``dependency`` = the peer,
  ``circuit`` = open) and a RetryInfo;
- its time limit is ``deadlines.bound(...)`` (the peer's call timeout, or ``cap``, within
  what is left of the incoming RPC's deadline) and is handed to the RPC as its gRPC
  deadline, so the peer bounds its own work by it too;
- an answer saying the peer is in trouble (``common.dependencies.PEER_DOWN_CODES``:
  UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN) counts against the breaker and becomes
  UNAVAILABLE ``DEPENDENCY_UNAVAILABLE`` naming the peer, with a RetryInfo; any other answer
  (NOT_FOUND, PERMISSION_DENIED, ...) proves the peer works and is raised unchanged as the
  ``grpc.aio.AioRpcError`` it is, for the caller to map.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from common import deadlines
from common.dependencies import PEER_DOWN_CODES
from common.errors import Unavailable
from common.grpc_errors import error_info
from common.resilience import Dependency

T = TypeVar("T")


async def call_peer(
    peer: Dependency,
    rpc: Callable[[float], Awaitable[T]],
    *,
    what: str,
    cap: float | None = None,
) -> T:
    """``rpc(timeout)`` through ``peer``'s breaker within the bound (see the module doc)."""
    limit = peer.timeout if cap is None else cap

    async def attempt() -> T:
        try:
            timeout = deadlines.bound(limit, dependency=peer.name)
        except Unavailable as exc:
            raise TimeoutError(str(exc)) from exc  # no time left: the caller's deadline, no verdict
        try:
            return await rpc(timeout)
        except Unavailable as exc:
            if exc.reason == "DEADLINE_TOO_SHORT":  # a client that bounds itself found no time
                raise TimeoutError(str(exc)) from exc
            raise
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                # The deadline we gave the call ran out: the same verdict as the bound
                # running out in Dependency.call (a failure unless the caller's deadline
                # cut it short).
                raise TimeoutError(f"{peer.name}: {what} exceeded its deadline") from exc
            raise

    try:
        return await peer.call(attempt, what=what, cap=cap)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in PEER_DOWN_CODES:
            raise peer_down(peer, exc, what) from exc
        raise


def peer_down(peer: Dependency, exc: grpc.aio.AioRpcError, what: str) -> Unavailable:
    """UNAVAILABLE ``DEPENDENCY_UNAVAILABLE`` naming ``peer``, for an answer saying it is down."""
    code = exc.code()
    metadata = {"operation": what, "code": code.name}
    info = error_info(exc)
    if info is not None and info.reason:
        metadata["peer_reason"] = info.reason
    return peer.unavailable(
        f"the {peer.name} service is unavailable ({what}: {code.name}); retry later",
        **metadata,
    )
