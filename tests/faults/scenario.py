"""What every fault scenario counts and prints: operations, faults, statuses seen, outcomes.

``Tally`` records the status of every client call (``OK`` or the gRPC code name) per RPC
and how long each failed call took to answer, so a scenario can assert "no INTERNAL or
UNKNOWN" and "UNAVAILABLE within the bound" and print what it saw.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from common.grpc_errors import error_info

T = TypeVar("T")
NEVER = ("INTERNAL", "UNKNOWN")
# What the scenarios' clients retry: what may succeed later, and what must never be seen
# (counted, then retried, so that a scenario reports every occurrence at its end); any other
# status is a mistake in the scenario itself.
RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "RESOURCE_EXHAUSTED", *NEVER)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class Tally:
    def __init__(self) -> None:
        self.statuses: Counter[tuple[str, str]] = Counter()
        self.reasons: Counter[tuple[str, str, str]] = Counter()
        self.slowest_failure: dict[str, float] = {}
        self.samples: dict[tuple[str, str], str] = {}
        self.counts: Counter[str] = Counter()

    def ok(self, rpc: str) -> None:
        self.statuses[(rpc, "OK")] += 1

    def failed(self, rpc: str, exc: grpc.aio.AioRpcError, seconds: float) -> None:
        code = exc.code().name
        self.statuses[(rpc, code)] += 1
        info = error_info(exc)
        reason = info.reason if info is not None else "-"
        self.reasons[(rpc, code, reason)] += 1
        self.samples.setdefault((rpc, code), (exc.details() or "")[:300])
        self.slowest_failure[rpc] = max(self.slowest_failure.get(rpc, 0.0), seconds)

    def codes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for (_, code), n in self.statuses.items():
            total[code] += n
        return total

    def never_seen(self) -> dict[tuple[str, str], int]:
        return {key: n for key, n in self.statuses.items() if key[1] in NEVER}

    def report(self, title: str, **figures: Any) -> str:
        lines = [f"=== {title} ==="]
        lines += [f"  {name}: {value}" for name, value in figures.items()]
        lines += [f"  counted {name}: {n}" for name, n in sorted(self.counts.items())]
        lines.append("  statuses seen (rpc, code): count")
        lines += [f"    {rpc} {code}: {n}" for (rpc, code), n in sorted(self.statuses.items())]
        lines += [
            f"    reason {r} {c} {why}: {n}" for (r, c, why), n in sorted(self.reasons.items())
        ]
        lines += [
            f"    slowest failed {rpc}: {s:.2f}s" for rpc, s in sorted(self.slowest_failure.items())
        ]
        lines += [
            f"    sample {rpc} {code}: {text}" for (rpc, code), text in sorted(self.samples.items())
        ]
        text = "\n".join(lines)
        print(text)
        return text


async def call(tally: Tally, rpc: str, fn: Callable[[], Awaitable[T]]) -> T | None:
    """One call, recorded; None when it failed."""
    started = time.monotonic()
    try:
        result = await fn()
    except grpc.aio.AioRpcError as exc:
        tally.failed(rpc, exc, time.monotonic() - started)
        return None
    tally.ok(rpc)
    return result


async def retrying(
    tally: Tally, rpc: str, fn: Callable[[], Awaitable[T]], *, limit: float = 120.0
) -> T:
    """Call until it succeeds (a client's retry loop with jitter), recording every status;
    a status that retrying cannot fix is raised at once."""
    deadline = time.monotonic() + limit
    while True:
        started = time.monotonic()
        try:
            result = await fn()
        except grpc.aio.AioRpcError as exc:
            tally.failed(rpc, exc, time.monotonic() - started)
            if exc.code().name not in RETRYABLE:
                raise
        else:
            tally.ok(rpc)
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{rpc} kept failing for {limit}s")
        await asyncio.sleep(random.uniform(0.05, 0.5))


async def eventually(
    check: Callable[[], Awaitable[Any]], *, what: str, limit: float = 90.0, every: float = 0.5
) -> Any:
    deadline = time.monotonic() + limit
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(every)
