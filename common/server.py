"""Builds and runs the asyncio gRPC server for a set of services.

Health (grpc.health.v1, per service and overall ""), reflection, message size limits,
the suite interceptor, a dependency-check loop that flips health to NOT_SERVING, and a
graceful stop: health NOT_SERVING first, then stop accepting and let in-flight calls
finish within the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common.app import ServiceInstance
from common.interceptors import Authenticator, SuiteInterceptor
from common.settings import Settings

log = logging.getLogger("mediagrid.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

HealthCheck = Callable[[], Awaitable[bool]]


class SuiteServer:
    """A started grpc.aio server with health, reflection and background loops."""

    def __init__(
        self,
        settings: Settings,
        services: Sequence[ServiceInstance],
        *,
        authenticator: Authenticator | None = None,
        health_checks: Sequence[HealthCheck] = (),
        extra_interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        self.settings = settings
        self.services = list(services)
        public = [m for s in self.services for m in s.public_methods]
        self.interceptor = SuiteInterceptor(authenticator=authenticator, public_methods=public)
        size = settings.grpc_max_message_bytes
        self.server = grpc.aio.server(
            interceptors=[*extra_interceptors, self.interceptor],
            options=[
                ("grpc.max_send_message_length", size),
                ("grpc.max_receive_message_length", size),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = health.aio.HealthServicer()
        self.health_checks = list(health_checks) + [c for s in self.services for c in s.health_checks]
        self.port: int = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        for service in self.services:
            service.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [n for s in self.services for n in s.service_names]
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )

    @property
    def service_names(self) -> list[str]:
        return [n for s in self.services for n in s.service_names]

    @property
    def address(self) -> str:
        return f"{self.settings.grpc_host}:{self.port}"

    async def start(self, port: int | None = None) -> int:
        wanted = self.settings.grpc_port if port is None else port
        self.port = self.server.add_insecure_port(f"{self.settings.grpc_host}:{wanted}")
        if self.port == 0:
            raise OSError(f"cannot listen on {self.settings.grpc_host}:{wanted}")
        await self.server.start()
        await self.refresh_health()
        self._tasks.append(asyncio.create_task(self._health_loop(), name="health-loop"))
        for service in self.services:
            for loop in service.background:
                self._tasks.append(asyncio.create_task(_guard(loop), name=f"{service.name}-background"))
        log.info("serving %s on %s", ", ".join(self.service_names), self.address)
        return self.port

    async def refresh_health(self) -> bool:
        """Run every dependency check; set each service and the overall status accordingly."""
        if self._stopping:
            return False
        results = await asyncio.gather(*(check() for check in self.health_checks), return_exceptions=True)
        healthy = all(result is True for result in results)
        status = SERVING if healthy else NOT_SERVING
        for name in ["", *self.service_names]:
            await self.health.set(name, status)
        return healthy

    async def _health_loop(self) -> None:
        previous: bool | None = None
        while True:
            healthy = await self.refresh_health()
            if healthy != previous:
                log.log(logging.INFO if healthy else logging.ERROR, "health: %s", "SERVING" if healthy else "NOT_SERVING")
                previous = healthy
            await asyncio.sleep(self.settings.health_check_interval_seconds)

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, stop accepting, let in-flight calls finish within ``grace``."""
        if self._stopping:
            return
        self._stopping = True
        await self.health.enter_graceful_shutdown()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        grace = self.settings.grpc_shutdown_grace_seconds if grace is None else grace
        await self.server.stop(grace)
        for service in self.services:
            if service.close is not None:
                await service.close()
        log.info("stopped")

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


async def _guard(loop: Callable[[], Awaitable[None]]) -> None:
    """Keep a background loop's crash in the log instead of killing the process silently."""
    try:
        await loop()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("background loop %s crashed", getattr(loop, "__qualname__", loop))


async def serve_until_signalled(server: SuiteServer) -> None:
    """Run until SIGTERM/SIGINT, then stop gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("signal received; shutting down (grace %.0fs)", server.settings.grpc_shutdown_grace_seconds)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.stop()
