"""grpc.health.v1 per service and overall, flipping with a real database behind a proxy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common import db
from common.dependencies import DATABASE
from common.server import SuiteServer
from tests.support.proxy import TcpProxy
from tests.support.rpc import demo_service, serving, test_settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
USERS = "mediagrid.users.v1.UserService"
JOBS = "mediagrid.jobs.v1.JobService"


def two_services() -> list:  # type: ignore[type-arg]
    return [
        demo_service({}, name="users", service=USERS),
        demo_service({}, name="jobs", service=JOBS),
    ]


async def statuses(channel: grpc.aio.Channel) -> dict[str, int]:
    stub = health_pb2_grpc.HealthStub(channel)
    result = {}
    for name in ("", USERS, JOBS):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        result[name] = reply.status
    return result


async def wait_for(channel: grpc.aio.Channel, status: int, seconds: float = 15) -> dict[str, int]:
    """Poll until every name reports ``status`` (no timing assertion: only a generous cap)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        current = await statuses(channel)
        if set(current.values()) == {status} or loop.time() > deadline:
            return current
        await asyncio.sleep(0.05)


async def test_health_per_service_and_overall() -> None:
    async with serving(*two_services()) as (_, channel):
        assert await statuses(channel) == {"": SERVING, USERS: SERVING, JOBS: SERVING}
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="mediagrid.nope.v1.Nope")
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_failing_check_flips_every_status_and_watch_sees_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    healthy = True

    async def flaky() -> bool:
        return healthy

    async def raising() -> bool:
        if not healthy:
            raise ConnectionError("dependency exploded")
        return True

    async def hanging() -> bool:
        if not healthy:
            await asyncio.Event().wait()  # never answers: the check timeout must catch it
        return True

    caplog.set_level(logging.INFO, logger="mediagrid.server")
    for check in (flaky, raising, hanging):
        healthy = True
        async with serving(*two_services(), health_checks=[check], check_timeout=0.3) as (
            _,
            channel,
        ):
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=USERS)
            )
            assert (await watch.read()).status == SERVING
            healthy = False
            assert await wait_for(channel, NOT_SERVING) == dict.fromkeys(
                ("", USERS, JOBS), NOT_SERVING
            )
            assert (await asyncio.wait_for(watch.read(), 15)).status == NOT_SERVING
            healthy = True
            assert await wait_for(channel, SERVING) == dict.fromkeys(("", USERS, JOBS), SERVING)
            assert (await asyncio.wait_for(watch.read(), 15)).status == SERVING
            watch.cancel()
        assert f"NOT_SERVING (failing: {check.__qualname__})" in caplog.text


@pytest_asyncio.fixture
async def proxied_pool(pg_admin_dsn: str) -> AsyncIterator[tuple[TcpProxy, asyncpg.Pool]]:
    async with TcpProxy.for_dsn(pg_admin_dsn) as proxy:
        settings = test_settings(db_connect_attempts=1, db_pool_min_size=1, db_pool_max_size=2)
        pool = await db.create_pool(settings, proxy.dsn("postgres"))
        try:
            yield proxy, pool
        finally:
            proxy.resume()
            pool.terminate()


async def test_check_health_true_and_false(proxied_pool: tuple[TcpProxy, asyncpg.Pool]) -> None:
    proxy, pool = proxied_pool
    assert await db.check_health(pool) is True
    proxy.pause()
    assert await db.check_health(pool, timeout=0.3) is False  # a hang, not an error
    proxy.resume()
    await proxy.close_connections()
    await proxy.refuse()
    assert await db.check_health(pool, timeout=2) is False  # gone and refusing
    await proxy.accept()
    assert await _eventually(lambda: db.check_health(pool, timeout=2))


async def _eventually(check: object, tries: int = 50) -> bool:
    for _ in range(tries):
        if await check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.1)
    return False


async def test_database_outage_flips_health_and_back(
    proxied_pool: tuple[TcpProxy, asyncpg.Pool],
) -> None:
    proxy, pool = proxied_pool

    async def database() -> bool:
        return await db.check_health(pool, timeout=0.5)

    services = [
        demo_service({}, name="users", service=USERS, requires=[DATABASE]),
        demo_service({}, name="jobs", service=JOBS, requires=[DATABASE]),
    ]
    # As the runtime wires it: the database check counts for the services that need it.
    async with serving(*services, dependency_checks={DATABASE: database}, check_timeout=2) as (
        _,
        channel,
    ):
        assert await statuses(channel) == dict.fromkeys(("", USERS, JOBS), SERVING)
        # 1. The database hangs (packets stop): NOT_SERVING, then SERVING when it resumes.
        proxy.pause()
        assert set((await wait_for(channel, NOT_SERVING)).values()) == {NOT_SERVING}
        proxy.resume()
        assert set((await wait_for(channel, SERVING)).values()) == {SERVING}
        # 2. The database goes away (connections cut, port closed), then comes back.
        await proxy.refuse()
        await proxy.close_connections()
        assert set((await wait_for(channel, NOT_SERVING)).values()) == {NOT_SERVING}
        await proxy.accept()
        assert set((await wait_for(channel, SERVING)).values()) == {SERVING}


async def test_not_serving_until_the_first_checks_pass() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow_first_check() -> bool:
        entered.set()
        await release.wait()
        return True

    server = SuiteServer(test_settings(), two_services(), health_checks=[slow_first_check])
    starting = asyncio.create_task(server.start(0))
    try:
        await asyncio.wait_for(entered.wait(), 10)  # listening, first check still running
        async with grpc.aio.insecure_channel(server.address) as channel:
            statuses_now = await _statuses_when_up(channel)
            assert statuses_now == dict.fromkeys(("", USERS, JOBS), NOT_SERVING)
            release.set()
            await asyncio.wait_for(starting, 10)
            assert await statuses(channel) == dict.fromkeys(("", USERS, JOBS), SERVING)
    finally:
        release.set()
        await starting
        await server.stop(0)


async def _statuses_when_up(channel: grpc.aio.Channel) -> dict[str, int]:
    for _ in range(200):  # the port is bound a moment before the server answers
        try:
            return await statuses(channel)
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.02)
    return await statuses(channel)


@pytest.mark.parametrize("threshold", [1, 3])
async def test_a_serving_server_tolerates_failed_rounds_up_to_the_threshold(
    threshold: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Rounds are driven by hand (the loop's interval is long): SERVING survives
    threshold - 1 failed rounds in a row, a passing round resets the count, and the
    threshold-th failure in a row turns every name NOT_SERVING."""
    passing = True

    async def check() -> bool:
        return passing

    settings = test_settings(
        health_check_interval_seconds=300, health_failures_before_not_serving=threshold
    )
    caplog.set_level(logging.WARNING, logger="mediagrid.server")
    async with serving(*two_services(), settings=settings, health_checks=[check]) as (
        server,
        channel,
    ):
        passing = False
        for _ in range(threshold - 1):
            assert await server.refresh_health() is True
            assert await statuses(channel) == dict.fromkeys(("", USERS, JOBS), SERVING)
        passing = True
        assert await server.refresh_health() is True  # the count starts over
        passing = False
        for _ in range(threshold - 1):
            assert await server.refresh_health() is True
        assert await server.refresh_health() is False
        assert await statuses(channel) == dict.fromkeys(("", USERS, JOBS), NOT_SERVING)
        # One passing round brings it back, and then it tolerates failed rounds again.
        passing = True
        assert await server.refresh_health() is True
        passing = False
        if threshold > 1:
            assert await server.refresh_health() is True
    expected = 2 * (threshold - 1) + (1 if threshold > 1 else 0)
    assert caplog.text.count("before NOT_SERVING") == expected
