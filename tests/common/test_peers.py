"""Calls between services go through the peer's dependency: bounded, breaker in the path.

Users and jobs run as two servers (as two processes would), the jobs server reaching the
users server through a fault proxy. With the users service blackholed, the jobs service
keeps answering callers whose principal it cached until the entry's TTL ends, and answers
UNAVAILABLE ``DEPENDENCY_UNAVAILABLE`` naming the peer for the others, at once once the
peer's breaker is open.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from mediagrid.jobs.v1 import job_service_pb2, job_service_pb2_grpc
from mediagrid.users.v1 import user_service_pb2, user_service_pb2_grpc

from common import deadlines
from common.dependencies import Dependencies
from common.errors import NotFound, Unavailable
from common.grpc_errors import abort, error_info, retry_info, to_status
from common.peer_calls import call_peer
from common.resilience import CircuitOpen
from tests.support.auth import bearer
from tests.support.people import People, start_all
from tests.support.proxy import TcpProxy
from tests.support.rpc import demo_service, method, serving, test_settings, unary

TTL = 5.0
AUTH_TIMEOUT = 1.0
MIN_CALLS = 3


@pytest_asyncio.fixture
async def split(suite: Any) -> AsyncIterator[tuple[People, TcpProxy, Any, grpc.aio.Channel]]:
    """(users server's people, proxy in front of it, jobs server's ctx, channel to jobs)."""
    people = await start_all(suite, "users")
    host, port = people.server.address.rsplit(":", 1)
    async with TcpProxy(host, int(port)) as proxy:
        _, jobs_ctx, jobs_channel = await suite(
            "jobs",
            users_address=f"127.0.0.1:{proxy.port}",
            auth_cache_ttl_seconds=TTL,
            auth_timeout_seconds=AUTH_TIMEOUT,
            breaker_min_calls=MIN_CALLS,
            breaker_open_seconds=2,
        )
        try:
            yield people, proxy, jobs_ctx, jobs_channel
        finally:
            proxy.resume()


async def list_jobs(channel: grpc.aio.Channel, token: str) -> grpc.aio.AioRpcError | None:
    """None when ListJobs answered, else the error it got."""
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    try:
        await stub.ListJobs(job_service_pb2.ListJobsRequest(), metadata=bearer(token), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc
    return None


def unavailable_naming_users(error: grpc.aio.AioRpcError | None) -> dict[str, str]:
    assert error is not None, "the call answered although the users service is down"
    info = error_info(error)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert info is not None and info.reason == "DEPENDENCY_UNAVAILABLE", info
    assert info.metadata["dependency"] == "users"
    assert retry_info(error) is not None
    return dict(info.metadata)


async def test_users_outage_cached_principals_work_until_their_ttl_others_are_unavailable(
    split: tuple[People, TcpProxy, Any, grpc.aio.Channel],
) -> None:
    people, proxy, jobs_ctx, channel = split
    _, cached = await people.add()
    uncached = [(await people.add())[1] for _ in range(MIN_CALLS + 1)]
    assert await list_jobs(channel, cached) is None  # authenticated remotely, now cached
    loop = asyncio.get_running_loop()
    cached_at = loop.time()

    proxy.pause()  # the users service stops answering (connections hang)
    assert await list_jobs(channel, cached) is None  # served from the cache
    # Uncached tokens: each waits out the auth bound, and the failures open the breaker.
    outcomes = await asyncio.gather(*(list_jobs(channel, t) for t in uncached[:MIN_CALLS]))
    for outcome in outcomes:
        unavailable_naming_users(outcome)
    assert jobs_ctx.dependencies.peer("users").breaker.state == "open"
    # Now refused without asking: the breaker says so in the metadata.
    assert unavailable_naming_users(await list_jobs(channel, uncached[-1]))["circuit"] == "open"
    if loop.time() - cached_at < TTL:  # still inside the entry's TTL: still served
        assert await list_jobs(channel, cached) is None
    print(f"cached principal served {loop.time() - cached_at:.2f}s into a {TTL}s TTL")

    await asyncio.sleep(max(0.0, cached_at + TTL - loop.time()) + 0.2)
    # The entry expired: the cached caller is now in the same place as everyone else.
    unavailable_naming_users(await list_jobs(channel, cached))

    proxy.resume()  # the breaker lets a trial through after its open time
    for _ in range(100):
        if await list_jobs(channel, cached) is None:
            break
        await asyncio.sleep(0.1)
    assert await list_jobs(channel, cached) is None  # recovered without a restart


async def test_a_peer_that_hangs_is_unavailable_within_the_bound_then_refused_at_once(
    split: tuple[People, TcpProxy, Any, grpc.aio.Channel],
) -> None:
    """call_peer against the real users server behind the proxy, with its own breaker."""
    people, proxy, _, _ = split
    dependencies = Dependencies(people.ctx.settings.model_copy(update={"breaker_min_calls": 2}))
    users = dependencies.peer("users")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
        stub = user_service_pb2_grpc.UserServiceStub(channel)
        request = user_service_pb2.AuthenticateRequest(token="mgs_" + "A" * 43)

        async def authenticate() -> Any:
            return await call_peer(
                users,
                lambda timeout: stub.Authenticate(request, timeout=timeout),
                what="Authenticate",
                cap=0.5,
            )

        # An answer about the request (UNAUTHENTICATED) proves the peer works: raised as is.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await authenticate()
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert users.breaker.state == "closed"

        proxy.pause()
        loop = asyncio.get_running_loop()
        timeouts = 0
        while users.breaker.state != "open":
            started = loop.time()
            with pytest.raises(Unavailable) as down:
                await authenticate()
            # Bounded by the cap (0.5 s), with a generous allowance for a busy machine.
            assert loop.time() - started < 0.5 + 2.0
            assert down.value.reason == "DEPENDENCY_UNAVAILABLE"
            assert down.value.metadata["dependency"] == "users"
            assert down.value.metadata["operation"] == "Authenticate"
            assert down.value.retry_after_seconds is not None
            timeouts += 1
            assert timeouts <= 2, "the breaker did not open"
        with pytest.raises(CircuitOpen) as open_:
            await authenticate()
        assert open_.value.reason == "DEPENDENCY_UNAVAILABLE"
        assert open_.value.metadata == {"dependency": "users", "circuit": "open"}

        # A call made for an RPC whose deadline is nearly gone is cut short by that deadline
        # and gives no verdict on the peer.
        fresh = Dependencies(people.ctx.settings).peer("users")
        with deadlines.incoming(0.3), pytest.raises(Unavailable):
            await call_peer(
                fresh,
                lambda timeout: stub.Authenticate(request, timeout=timeout),
                what="Authenticate",
            )
        assert fresh.breaker.counts() == (0, 0)


async def test_call_peer_maps_answers_saying_the_peer_is_down_and_passes_the_others() -> None:
    """A peer (a bare server) that answers NOT_FOUND works; UNAVAILABLE or INTERNAL from it
    means it is down: DEPENDENCY_UNAVAILABLE naming it, with its own reason kept."""

    answers: list[Exception] = []

    async def lookup(request: bytes, context: Any) -> bytes:
        await abort(context, to_status(answers.pop(0), "mediagrid.demo.v1"))
        return b""

    settings = test_settings(breaker_min_calls=10)
    peer = Dependencies(settings).peer("jobs")
    async with serving(demo_service({"Lookup": unary(lookup)})) as (_, channel):
        rpc = channel.unary_unary(method("Lookup"))

        async def ask() -> Any:
            return await call_peer(peer, lambda timeout: rpc(b"", timeout=timeout), what="Lookup")

        answers.append(NotFound("no such job", reason="JOB_NOT_FOUND"))
        with pytest.raises(grpc.aio.AioRpcError) as not_found:
            await ask()
        assert not_found.value.code() == grpc.StatusCode.NOT_FOUND
        answers.append(Unavailable("database down", reason="DATABASE_UNAVAILABLE"))
        with pytest.raises(Unavailable) as down:
            await ask()
        assert down.value.reason == "DEPENDENCY_UNAVAILABLE"
        assert down.value.metadata == {
            "dependency": "jobs",
            "operation": "Lookup",
            "code": "UNAVAILABLE",
            "peer_reason": "DATABASE_UNAVAILABLE",
        }
        assert down.value.retry_after_seconds is not None
    assert peer.breaker.counts() == (2, 1)  # NOT_FOUND proved the peer works
