"""Graceful shutdown: in-flight streams finish, new calls are refused, health says NOT_SERVING."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.server import SuiteServer, serve_until_signalled
from tests.support.rpc import demo_service, method, test_settings, unary, unary_stream

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


async def echo(request: bytes, context: Any) -> bytes:
    return request


def streaming_service(gate: asyncio.Event) -> Any:
    async def count(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for i in range(10):
            if i == 2:
                await gate.wait()  # mid-stream until the test has begun the shutdown
            yield str(i).encode()
            await asyncio.sleep(0.02)

    async def forever(request: bytes, context: Any) -> AsyncIterator[bytes]:
        while True:
            yield b"tick"
            await asyncio.sleep(0.02)

    return demo_service(
        {"Count": unary_stream(count), "Forever": unary_stream(forever), "Echo": unary(echo)}
    )


async def _refused(address: str) -> grpc.StatusCode | None:
    async with grpc.aio.insecure_channel(address) as fresh:
        try:
            await fresh.unary_unary(method("Echo"))(b"x", timeout=5)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return None


async def test_in_flight_stream_finishes_during_grace() -> None:
    gate = asyncio.Event()
    server = SuiteServer(test_settings(), [streaming_service(gate)])
    await server.start(0)
    channel = grpc.aio.insecure_channel(server.address)
    try:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == SERVING
        stream = channel.unary_stream(method("Count"))(b"")
        assert [await stream.read(), await stream.read()] == [b"0", b"1"]

        stopping = asyncio.create_task(server.stop(grace=30))
        # Health turns NOT_SERVING first (load balancers drain) ...
        assert (await asyncio.wait_for(watch.read(), 10)).status == NOT_SERVING
        watch.cancel()  # a Watch is an in-flight call too; it would hold the grace open
        # ... then new calls are refused while the stream is still in flight.
        for _ in range(100):
            if await _refused(server.address) is not None:
                break
            await asyncio.sleep(0.05)
        assert await _refused(server.address) == grpc.StatusCode.UNAVAILABLE
        assert not stopping.done()
        gate.set()
        rest = []
        while (item := await stream.read()) is not grpc.aio.EOF:
            rest.append(item)
        assert rest == [str(i).encode() for i in range(2, 10)]
        assert await stream.code() == grpc.StatusCode.OK
        await asyncio.wait_for(stopping, 30)
    finally:
        gate.set()
        await channel.close()
        await server.stop(0)


async def test_grace_period_is_a_limit() -> None:
    server = SuiteServer(test_settings(), [streaming_service(asyncio.Event())])
    await server.start(0)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stream = channel.unary_stream(method("Forever"))(b"")
        assert await stream.read() == b"tick"
        await asyncio.wait_for(server.stop(grace=0.3), 30)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            while await stream.read() is not grpc.aio.EOF:
                pass
    # Cut off by the server at the end of the grace period.
    assert caught.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)


async def test_sigterm_stops_the_server_gracefully() -> None:
    server = SuiteServer(
        test_settings(grpc_shutdown_grace_seconds=5), [streaming_service(asyncio.Event())]
    )
    await server.start(0)
    async with grpc.aio.insecure_channel(server.address) as channel:
        assert await channel.unary_unary(method("Echo"))(b"up") == b"up"
    previous = signal.getsignal(signal.SIGTERM)
    serving = asyncio.create_task(serve_until_signalled(server))
    for _ in range(200):  # the handler must be installed before the signal is sent
        if signal.getsignal(signal.SIGTERM) is not previous:
            break
        await asyncio.sleep(0.01)
    assert signal.getsignal(signal.SIGTERM) is not previous
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(serving, 30)
    assert await _refused(server.address) == grpc.StatusCode.UNAVAILABLE
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers removed again
