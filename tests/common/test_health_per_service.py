"""Health per service: each service's names follow only the dependencies it requires.

- the real suite with S3 behind a fault proxy in front of moto: an S3 outage takes the files
  and video services out, while users, jobs and the overall status stay SERVING;
- a hanging dependency check flips its services within ``not_serving_within``;
- an open breaker of a required dependency turns its services NOT_SERVING at the next
  round (whatever the tolerated rounds), and SERVING again once it lets calls through;
- the overall status follows the dependencies every service needs (the core).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common import db
from common.dependencies import DATABASE, Dependencies
from common.server import SuiteServer
from common.settings import Settings
from tests.support.proxy import TcpProxy
from tests.support.rpc import demo_service, serving, test_settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
USERS = "mediagrid.users.v1.UserService"
JOB = "mediagrid.jobs.v1.JobService"
WORKER = "mediagrid.jobs.v1.WorkerService"
FILES = "mediagrid.files.v1.FileService"
VIDEO = "mediagrid.files.v1.VideoService"
DEMO = "mediagrid.demo.v1.DemoService"


async def statuses(channel: grpc.aio.Channel, names: tuple[str, ...]) -> dict[str, int]:
    stub = health_pb2_grpc.HealthStub(channel)
    result = {}
    for name in names:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        result[name] = reply.status
    return result


async def wait_until(
    channel: grpc.aio.Channel, expected: dict[str, int], seconds: float = 30
) -> dict[str, int]:
    """Poll until the statuses are ``expected`` (no timing assertion: a generous cap)."""
    deadline = time.monotonic() + seconds
    while True:
        current = await statuses(channel, tuple(expected))
        if current == expected or time.monotonic() > deadline:
            return current
        await asyncio.sleep(0.05)


# --- the real suite, S3 behind a proxy -------------------------------------------------------


@pytest_asyncio.fixture
async def s3_proxy(settings: Settings) -> AsyncIterator[TcpProxy]:
    endpoint = urlsplit(settings.s3_endpoint_url or "")
    async with TcpProxy(endpoint.hostname or "127.0.0.1", endpoint.port or 80) as proxy:
        try:
            yield proxy
        finally:
            proxy.resume()


async def test_an_s3_outage_takes_out_files_and_video_only(suite: Any, s3_proxy: TcpProxy) -> None:
    _, _, channel = await suite(
        "all",
        s3_endpoint_url=f"http://127.0.0.1:{s3_proxy.port}",
        health_check_interval_seconds=0.2,
        health_check_timeout_seconds=1.0,
        # A blackholed S3 read gives up quickly instead of at the check timeout.
        s3_connect_timeout_seconds=0.5,
        s3_read_timeout_seconds=0.5,
        s3_max_attempts=1,
    )
    everything = ("", USERS, JOB, WORKER, FILES, VIDEO)
    assert await statuses(channel, everything) == dict.fromkeys(everything, SERVING)

    s3_proxy.pause()  # S3 stops answering
    s3_down = {"": SERVING, USERS: SERVING, JOB: SERVING, WORKER: SERVING}
    s3_down |= {FILES: NOT_SERVING, VIDEO: NOT_SERVING}
    assert await wait_until(channel, s3_down) == s3_down
    # Not a moment's state: users and jobs stay SERVING through further rounds.
    await asyncio.sleep(1.0)
    assert await statuses(channel, everything) == s3_down

    s3_proxy.resume()
    assert await wait_until(channel, dict.fromkeys(everything, SERVING)) == dict.fromkeys(
        everything, SERVING
    )


# --- a hanging dependency check ---------------------------------------------------------------


async def test_a_hanging_check_flips_its_services_within_the_documented_bound() -> None:
    hanging = asyncio.Event()
    release = asyncio.Event()
    started = 0

    async def database() -> bool:
        nonlocal started
        started += 1
        while hanging.is_set() and not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # a check stuck where cancellation does not reach
        return True

    settings = test_settings(
        health_check_interval_seconds=0.2, health_failures_before_not_serving=2
    )
    services = [
        demo_service({}, name="users", service=USERS, requires=[DATABASE]),
        demo_service({}, name="demo", service=DEMO),  # needs no database
    ]
    async with serving(
        *services,
        settings=settings,
        dependency_checks={DATABASE: database},
        check_timeout=0.5,
    ) as (server, channel):
        # The documented figure: interval x failures + check timeout.
        assert server.not_serving_within == 2 * 0.5 + 0.5
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=USERS)
        )
        assert (await watch.read()).status == SERVING
        loop = asyncio.get_running_loop()
        hung_at = loop.time()
        hanging.set()
        assert (await asyncio.wait_for(watch.read(), 30)).status == NOT_SERVING
        took = loop.time() - hung_at
        print(f"NOT_SERVING {took:.2f}s after the check hung (bound {server.not_serving_within}s)")
        assert took <= server.not_serving_within + 2.0  # generous allowance for a busy machine
        assert await statuses(channel, ("", USERS, DEMO)) == {
            "": SERVING,  # the demo service still serves
            USERS: NOT_SERVING,
            DEMO: SERVING,
        }
        starts_while_stuck = started
        await asyncio.sleep(1.0)
        assert started == starts_while_stuck  # the stuck check is not started again and again
        release.set()
        assert (await asyncio.wait_for(watch.read(), 30)).status == SERVING
        watch.cancel()


# --- breakers --------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def proxied_database(
    pg_admin_dsn: str,
) -> AsyncIterator[tuple[TcpProxy, asyncpg.Pool, asyncpg.Pool]]:
    """(proxy, pool through the proxy, pool straight to the database)."""
    async with TcpProxy.for_dsn(pg_admin_dsn) as proxy:
        settings = test_settings(db_connect_attempts=1, db_pool_min_size=1, db_pool_max_size=2)
        through = await db.create_pool(settings, proxy.dsn("postgres"))
        direct = await db.create_pool(settings, pg_admin_dsn)
        try:
            yield proxy, through, direct
        finally:
            await proxy.accept()
            through.terminate()
            await direct.close()


async def test_an_open_breaker_turns_its_services_not_serving_at_once_and_back(
    proxied_database: tuple[TcpProxy, asyncpg.Pool, asyncpg.Pool],
) -> None:
    proxy, through, direct = proxied_database
    settings = test_settings(
        # Rounds by hand; failed checks alone would need 20 rounds in a row.
        health_check_interval_seconds=300,
        health_failures_before_not_serving=20,
        breaker_min_calls=3,
        breaker_open_seconds=0.5,
    )
    dependencies = Dependencies(settings)
    database = dependencies.database

    async def query() -> Any:
        return await database.call(lambda: through.fetchval("SELECT 1"), what="select")

    services = [
        demo_service({}, name="users", service=USERS, requires=[DATABASE]),
        demo_service({}, name="demo", service=DEMO),
    ]
    async with serving(
        *services,
        settings=settings,
        # The check itself reaches the database directly and keeps passing: what flips
        # health here is the breaker alone.
        dependency_checks={DATABASE: lambda: db.check_health(direct)},
        dependencies=dependencies,
    ) as (server, channel):
        assert await query() == 1
        await proxy.refuse()
        await proxy.close_connections()
        failures = 0
        while database.breaker.state != "open":
            try:
                await query()
            except Exception:
                failures += 1
            assert failures <= 10, "the breaker did not open"
        assert await server.refresh_health() is True  # the demo service still serves
        assert await statuses(channel, ("", USERS, DEMO)) == {
            "": SERVING,
            USERS: NOT_SERVING,
            DEMO: SERVING,
        }
        assert "postgresql circuit open" in server.service_health["users"].failing

        await proxy.accept()
        await asyncio.sleep(settings.breaker_open_seconds)  # open -> half-open: calls may go
        assert database.available
        await server.refresh_health()
        assert await statuses(channel, ("", USERS, DEMO)) == dict.fromkeys(
            ("", USERS, DEMO), SERVING
        )
        for _ in range(50):  # the trial call closes the breaker once the pool reconnects
            try:
                await query()
                break
            except Exception:
                await asyncio.sleep(0.1)
        assert database.breaker.state == "closed"


# --- the overall rule ------------------------------------------------------------------------


async def test_the_overall_status_follows_the_dependencies_every_service_needs() -> None:
    """ "" follows PostgreSQL (needed by both services), not what only one service needs."""
    up = {"users": True, "demo": True, DATABASE: True}

    def check(name: str) -> Any:
        async def healthy() -> bool:
            return up[name]

        return healthy

    settings = test_settings(
        health_check_interval_seconds=300, health_failures_before_not_serving=1
    )
    services = [
        demo_service(
            {}, name="users", service=USERS, requires=[DATABASE], health_checks=[check("users")]
        ),
        demo_service(
            {}, name="demo", service=DEMO, requires=[DATABASE], health_checks=[check("demo")]
        ),
    ]
    server = SuiteServer(settings, services, dependency_checks={DATABASE: check(DATABASE)})
    await server.start(0)
    try:
        assert server.core_dependencies == [DATABASE]
        async with grpc.aio.insecure_channel(server.address) as channel:
            names = ("", USERS, DEMO)
            up["users"] = False
            assert await server.refresh_health() is True
            assert await statuses(channel, names) == {
                "": SERVING,
                USERS: NOT_SERVING,
                DEMO: SERVING,
            }
            up["demo"] = False  # every service is out, each for a reason of its own
            assert await server.refresh_health() is True
            assert await statuses(channel, names) == {
                "": SERVING,
                USERS: NOT_SERVING,
                DEMO: NOT_SERVING,
            }
            up.update(users=True, demo=True)
            up[DATABASE] = False  # what they all need
            assert await server.refresh_health() is False
            assert await statuses(channel, names) == dict.fromkeys(names, NOT_SERVING)
            assert server.overall.failing == [f"{DATABASE} check"]
            up[DATABASE] = True
            assert await server.refresh_health() is True
            assert await statuses(channel, names) == dict.fromkeys(names, SERVING)
    finally:
        await server.stop(0)
