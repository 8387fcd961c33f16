"""Shared pieces for benchmarks: bare grpc.aio baselines and load generators.

Baselines use generic handlers on raw bytes (no protobuf, no interceptors), so a service
benchmark can say how far it is from what grpc.aio alone does on this machine, measured in
the same run:

- ``echo_server()`` + ``unary_load()``: unary calls/s and p50/p99 latency at a concurrency;
- ``sink_server()`` + ``upload()``: client-streaming throughput of a byte-counting server.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc

ECHO_METHOD = "/bench.Echo/Echo"
SINK_METHOD = "/bench.Sink/Upload"
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


@dataclass(frozen=True)
class LoadResult:
    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds

    def line(self, label: str) -> str:
        return (
            f"{label:<34} {self.calls_per_second:>9.0f} calls/s   "
            f"p50 {self.p50_ms:6.2f} ms   p99 {self.p99_ms:6.2f} ms"
        )


@dataclass(frozen=True)
class ThroughputResult:
    bytes: int
    seconds: float

    @property
    def mb_per_second(self) -> float:
        return self.bytes / self.seconds / 1e6

    def line(self, label: str) -> str:
        return f"{label:<34} {self.mb_per_second:>9.1f} MB/s   ({self.bytes / 2**20:.0f} MiB in {self.seconds:.2f}s)"


def ratio_line(label: str, value: float, baseline: float) -> str:
    return f"{label:<34} {value / baseline:>9.2f}x of the bare grpc.aio baseline"


async def _echo(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _sink(requests: AsyncIterator[bytes], _context: grpc.aio.ServicerContext) -> bytes:
    total = 0
    async for chunk in requests:
        total += len(chunk)
    return total.to_bytes(8, "big")


def bare_handlers() -> grpc.GenericRpcHandler:
    """Echo (unary) and Sink (client streaming) on raw bytes: no (de)serializers at all."""
    echo = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    sink = grpc.method_handlers_generic_handler(
        "bench.Sink", {"Upload": grpc.stream_unary_rpc_method_handler(_sink)}
    )

    class Both(grpc.GenericRpcHandler):  # type: ignore[misc]
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
            return echo.service(details) or sink.service(details)

    return Both()


@contextlib.asynccontextmanager
async def bare_server(
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> AsyncIterator[str]:
    """A grpc.aio server on 127.0.0.1 (free port) with the Echo and Sink handlers."""
    server = grpc.aio.server(interceptors=list(interceptors), options=CHANNEL_OPTIONS)
    server.add_generic_rpc_handlers((bare_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


# Both baselines are served by the same bare server; the names say what each measures.
echo_server = bare_server
sink_server = bare_server


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


async def unary_load(
    call: Callable[[], Awaitable[object]], *, calls: int, concurrency: int
) -> LoadResult:
    """Run ``calls`` invocations of ``call`` from ``concurrency`` concurrent callers."""
    latencies: list[float] = []
    remaining = calls

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return LoadResult(
        calls=len(latencies),
        seconds=elapsed,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
    )


async def echo_load(
    address: str, *, calls: int, concurrency: int, payload: bytes = b"x" * 64
) -> LoadResult:
    """Unary load against the bare Echo method at ``address``."""
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        echo = channel.unary_unary(ECHO_METHOD)
        await echo(payload)  # connect before timing
        return await unary_load(lambda: echo(payload), calls=calls, concurrency=concurrency)


async def upload(address: str, *, total_bytes: int, chunk_size: int) -> ThroughputResult:
    """Stream ``total_bytes`` in ``chunk_size`` messages to the Sink method; check the count."""
    chunk = b"\0" * chunk_size

    async def chunks() -> AsyncIterator[bytes]:
        sent = 0
        while sent < total_bytes:
            piece = chunk[: min(chunk_size, total_bytes - sent)]
            sent += len(piece)
            yield piece

    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        sink = channel.stream_unary(SINK_METHOD)
        await sink(chunks_of(b"warm-up"))
        started = time.perf_counter()
        received = int.from_bytes(await sink(chunks()), "big")
        elapsed = time.perf_counter() - started
    if received != total_bytes:
        raise AssertionError(f"sink counted {received} bytes, sent {total_bytes}")
    return ThroughputResult(bytes=total_bytes, seconds=elapsed)


async def chunks_of(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def bare_echo_baseline(*, calls: int, concurrency: int) -> LoadResult:
    async with echo_server() as address:
        return await echo_load(address, calls=calls, concurrency=concurrency)


async def bare_upload_baseline(*, total_bytes: int, chunk_size: int) -> ThroughputResult:
    async with sink_server() as address:
        return await upload(address, total_bytes=total_bytes, chunk_size=chunk_size)
