"""RPC metrics after the OpenTelemetry RPC conventions: the server's duration and calls in
flight, and the duration of the calls the suite's own channels make (``rpc.client.duration``,
through ``client_interceptors()`` on every channel of ``common.channels``).

Attributes: ``rpc.system`` (grpc), ``rpc.service``, ``rpc.method``,
``mediagrid.rpc.streaming`` and, on the duration, ``rpc.grpc.status_code``. The instruments belong to the active telemetry configuration and
are made once per configuration; with metrics off they are the API's no-ops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry import metrics

from common import telemetry

_SCOPE = "mediagrid.rpc"


class RpcMetrics:
    def __init__(self, meter: metrics.Meter) -> None:
        self.duration = meter.create_histogram(
            "rpc.server.duration",
            unit="ms",
            description="Duration of RPCs served, per service, method and status code.",
        )
        self.active = meter.create_up_down_counter(
            "rpc.server.active_requests",
            unit="{request}",
            description="RPCs being served right now, per service and method.",
        )

        self.client_duration = meter.create_histogram(
            "rpc.client.duration",
            unit="ms",
            description="Duration of RPCs this process made, per service, method and status.",
        )

    @staticmethod
    def attributes(method: str, *, streaming: bool = False) -> dict[str, str]:
        """``/pkg.Service/Method`` as the convention's attributes, and whether it streams
        (a stream's duration is its lifetime: latency alarms look at unary calls only)."""
        _, _, rest = method.partition("/")
        service, _, name = rest.partition("/")
        return {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": name,
            "mediagrid.rpc.streaming": "true" if streaming else "false",
        }


_by_configuration: dict[int, tuple[object, RpcMetrics]] = {}


def rpc_metrics() -> RpcMetrics:
    """The instruments of the active configuration (made on first use)."""
    owner = telemetry.active()
    key = id(owner)
    cached = _by_configuration.get(key)
    if cached is not None and cached[0] is owner:
        return cached[1]
    made = RpcMetrics(telemetry.get_meter(_SCOPE))
    _by_configuration.clear()  # one configuration is active at a time
    _by_configuration[key] = (owner, made)
    return made


class _ClientTiming:
    """Records ``rpc.client.duration`` when a call ends, whatever its kind."""

    async def _timed(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        started = time.perf_counter()
        call = await continuation(details, request)
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        attributes = RpcMetrics.attributes(str(method))

        def done(finished: Any) -> None:
            async def record() -> None:
                try:
                    code = await finished.code()
                except Exception:  # a call cancelled before it started has no status
                    code = grpc.StatusCode.CANCELLED
                rpc_metrics().client_duration.record(
                    (time.perf_counter() - started) * 1000,
                    {**attributes, "rpc.grpc.status_code": code.value[0]},
                )

            task = asyncio.ensure_future(record())
            _pending.add(task)
            task.add_done_callback(_pending.discard)

        call.add_done_callback(done)
        return call


_pending: set[asyncio.Future[None]] = set()


class _UnaryUnary(_ClientTiming, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self._timed(continuation, details, request)


class _UnaryStream(_ClientTiming, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self._timed(continuation, details, request)


class _StreamUnary(_ClientTiming, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await self._timed(continuation, details, requests)


class _StreamStream(_ClientTiming, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await self._timed(continuation, details, requests)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that time every call of a channel (one of each kind, as grpc.aio asks)."""
    return [_UnaryUnary(), _UnaryStream(), _StreamUnary(), _StreamStream()]
