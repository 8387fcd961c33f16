"""A SuiteServer around generic (proto-less) handlers, for testing the shared gRPC core.

Handlers take and return ``bytes`` (no serializers), so no .proto is needed:

    async with serving(demo_service({"Echo": unary(echo)})) as (server, channel):
        reply = await channel.unary_unary(method("Echo"))(b"hi")
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc

from common.app import ServiceInstance
from common.interceptors import Authenticator
from common.server import HealthCheck, SuiteServer
from common.settings import Settings

DEMO_SERVICE = "mediagrid.demo.v1.DemoService"


def method(name: str, service: str = DEMO_SERVICE) -> str:
    return f"/{service}/{name}"


def unary(fn: Callable[..., Any]) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(fn)


def unary_stream(fn: Callable[..., Any]) -> grpc.RpcMethodHandler:
    return grpc.unary_stream_rpc_method_handler(fn)


def stream_unary(fn: Callable[..., Any]) -> grpc.RpcMethodHandler:
    return grpc.stream_unary_rpc_method_handler(fn)


def stream_stream(fn: Callable[..., Any]) -> grpc.RpcMethodHandler:
    return grpc.stream_stream_rpc_method_handler(fn)


def demo_service(
    handlers: Mapping[str, grpc.RpcMethodHandler],
    *,
    name: str = "demo",
    service: str = DEMO_SERVICE,
    public_methods: Iterable[str] = (),
    quiet_methods: Iterable[str] = (),
    requires: Iterable[str] = (),
    background: Iterable[Callable[[], Awaitable[None]]] = (),
    health_checks: Iterable[HealthCheck] = (),
    close: Callable[[], Awaitable[None]] | None = None,
) -> ServiceInstance:
    generic = grpc.method_handlers_generic_handler(service, dict(handlers))
    return ServiceInstance(
        name=name,
        service_names=[service],
        register=lambda server: server.add_generic_rpc_handlers((generic,)),
        public_methods=list(public_methods),
        quiet_methods=list(quiet_methods),
        requires=list(requires),
        background=list(background),
        health_checks=list(health_checks),
        close=close,
    )


def test_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "grpc_port": 0,
        "grpc_shutdown_grace_seconds": 2,
        "health_check_interval_seconds": 0.1,
        "log_format": "text",
    }
    values.update(overrides)
    return Settings(**values)


test_settings.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


@contextlib.asynccontextmanager
async def serving(
    *services: ServiceInstance,
    settings: Settings | None = None,
    authenticator: Authenticator | None = None,
    health_checks: Sequence[HealthCheck] = (),
    grace: float = 0,
    **server_kwargs: Any,
) -> AsyncIterator[tuple[SuiteServer, grpc.aio.Channel]]:
    """Start a SuiteServer on port 0 with a real channel to it; stop both on exit."""
    server = SuiteServer(
        settings or test_settings(),
        list(services),
        authenticator=authenticator,
        health_checks=health_checks,
        **server_kwargs,
    )
    await server.start(0)
    channel = grpc.aio.insecure_channel(server.address)
    try:
        yield server, channel
    finally:
        await channel.close()
        await server.stop(grace)
