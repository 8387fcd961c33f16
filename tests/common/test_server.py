"""SuiteServer: reflection, message limits, supervised background loops, stop()."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from common.addresses import host_port
from common.server import SuiteServer
from tests.support.rpc import demo_service, method, serving, test_settings, unary

USERS = "mediagrid.users.v1.UserService"


async def echo(request: bytes, context: Any) -> bytes:
    return request


async def test_reflection_lists_every_service() -> None:
    services = [
        demo_service({"Echo": unary(echo)}),
        demo_service({}, name="users", service=USERS),
    ]
    async with serving(*services) as (server, channel):
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter(
                [
                    reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(
                        file_containing_symbol="grpc.health.v1.Health"
                    ),
                ]
            )
        )
        replies = [reply async for reply in call]
    names = {s.name for s in replies[0].list_services_response.service}
    assert names == {
        "mediagrid.demo.v1.DemoService",
        USERS,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
    assert server.service_names == ["mediagrid.demo.v1.DemoService", USERS]
    # Descriptors are served too (what buf curl / grpcurl need to build requests).
    assert replies[1].file_descriptor_response.file_descriptor_proto


async def test_message_size_limit_from_settings() -> None:
    settings = test_settings(grpc_max_message_bytes=64 * 1024)
    async with serving(demo_service({"Echo": unary(echo)}), settings=settings) as (server, _):
        options = [
            ("grpc.max_receive_message_length", 1 << 24),
            ("grpc.max_send_message_length", 1 << 24),
        ]
        async with grpc.aio.insecure_channel(server.address, options=options) as big:
            assert await big.unary_unary(method("Echo"))(b"x" * 60_000) == b"x" * 60_000
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await big.unary_unary(method("Echo"))(b"x" * 70_000)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_crashing_background_loop_is_logged_restarted_and_harmless(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    third_run = asyncio.Event()

    async def sweep() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"sweep failed on run {runs}")
        third_run.set()
        await asyncio.Event().wait()  # then runs until cancelled

    service = demo_service({"Echo": unary(echo)}, background=[sweep])
    caplog.set_level(logging.INFO, logger="mediagrid.server")
    async with serving(service, restart_delay=0.01, restart_delay_max=0.05) as (server, channel):
        await asyncio.wait_for(third_run.wait(), 15)
        assert await channel.unary_unary(method("Echo"))(b"still up") == b"still up"
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        tasks = list(server._tasks)
    crashes = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert len(crashes) == 2 and all(r.exc_info is not None for r in crashes)
    assert "sweep failed on run 1" in caplog.text and "sweep failed on run 2" in caplog.text
    # stop() cancelled the health loop and the sweep, and waited for them.
    assert len(tasks) == 2 and all(task.done() and task.cancelled() for task in tasks)


async def test_loop_that_returns_is_not_restarted(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    caplog.set_level(logging.INFO, logger="mediagrid.server")
    async with serving(demo_service({}, background=[once]), restart_delay=0.01):
        await asyncio.sleep(0.2)
    assert runs == 1
    assert "finished" in caplog.text


async def test_stop_is_idempotent_and_survives_bad_parts(caplog: pytest.LogCaptureFixture) -> None:
    closed = 0
    release = asyncio.Event()

    async def stubborn() -> None:
        # Swallows the first cancellation (a bug in a loop): stop() must not hang on it.
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()

    async def close() -> None:
        nonlocal closed
        closed += 1
        raise RuntimeError("close failed")

    server = SuiteServer(test_settings(), [demo_service({}, background=[stubborn], close=close)])
    await server.start(0)
    caplog.set_level(logging.INFO, logger="mediagrid.server")
    await asyncio.wait_for(asyncio.gather(server.stop(0), server.stop(0), server.stop(0)), 30)
    assert closed == 1
    assert "ignored cancellation" in caplog.text and "closing service demo failed" in caplog.text
    await server.stop(0)  # a later call returns at once
    release.set()
    await asyncio.wait_for(asyncio.gather(*server._tasks, return_exceptions=True), 10)


async def test_port_in_use_is_a_clear_error() -> None:
    async with serving(demo_service({})) as (first, _):
        second = SuiteServer(test_settings(), [demo_service({})])
        with pytest.raises(OSError, match=rf"cannot listen on 127.0.0.1:{first.port}"):
            await second.start(first.port)
        await second.stop(0)  # stopping a server that never started is harmless


async def test_ipv6_host() -> None:
    assert host_port("::1", 50051) == "[::1]:50051"
    assert host_port("127.0.0.1", 1) == "127.0.0.1:1"
    settings = test_settings(grpc_host="::1")
    try:
        async with serving(demo_service({"Echo": unary(echo)}), settings=settings) as (server, ch):
            assert server.address == f"[::1]:{server.port}"
            assert await ch.unary_unary(method("Echo"))(b"v6") == b"v6"
    except OSError as exc:  # a machine without IPv6 loopback cannot bind ::1
        assert "cannot listen on [::1]:0" in str(exc)
