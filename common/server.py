"""Builds and runs the asyncio gRPC server for a set of services.

Health (grpc.health.v1, per service and overall ""), reflection, message size limits,
the suite interceptor, a dependency-check loop that flips health to NOT_SERVING, and a
graceful stop: health NOT_SERVING first, then stop accepting and let in-flight calls
finish within the grace period.

Background loops (sweeps) run supervised: a crash is logged with its traceback and the loop
is restarted after a backoff, so one bad iteration neither kills the process nor silently
stops the sweep.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common.addresses import host_port
from common.app import ServiceInstance
from common.interceptors import Authenticator, SuiteInterceptor
from common.resilience import backoff_delay
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
        check_timeout: float = 5.0,
        restart_delay: float = 1.0,
        restart_delay_max: float = 60.0,
    ) -> None:
        """``check_timeout``: a dependency check slower than this counts as failed.
        ``restart_delay``/``restart_delay_max``: backoff before restarting a crashed loop."""
        self.settings = settings
        self.check_timeout = check_timeout
        self.restart_delay = restart_delay
        self.restart_delay_max = restart_delay_max
        self.services = list(services)
        public = [m for s in self.services for m in s.public_methods]
        self.interceptor = SuiteInterceptor(
            authenticator=authenticator,
            public_methods=public,
            error_drain_seconds=settings.grpc_error_drain_seconds,
        )
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
        self.health_checks = list(health_checks) + [
            c for s in self.services for c in s.health_checks
        ]
        self.port: int = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stopped: asyncio.Future[None] | None = None
        self.healthy: bool | None = None
        self.failed_rounds = 0  # consecutive rounds with a failing check
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
        """``host:port`` to connect to (``[v6]:port`` for an IPv6 host)."""
        return host_port(self.settings.grpc_host, self.port)

    async def start(self, port: int | None = None) -> int:
        wanted = self.settings.grpc_port if port is None else port
        where = host_port(self.settings.grpc_host, wanted)
        try:
            self.port = self.server.add_insecure_port(where)
        except RuntimeError as exc:  # grpc >= 1.59 raises instead of returning 0
            raise OSError(f"cannot listen on {where}: is another process using it?") from exc
        if self.port == 0:
            raise OSError(f"cannot listen on {where}: is another process using it?")
        # Nothing is SERVING before the first checks have passed (the health servicer
        # starts with "" SERVING, and a probe may arrive as soon as the port is open).
        for name in ["", *self.service_names]:
            await self.health.set(name, NOT_SERVING)
        await self.server.start()
        await self.refresh_health()
        self._tasks.append(
            asyncio.create_task(
                self._supervise(self._health_loop, "health-loop"), name="health-loop"
            )
        )
        for service in self.services:
            for loop in service.background:
                name = f"{service.name}:{_name_of(loop)}"
                self._tasks.append(asyncio.create_task(self._supervise(loop, name), name=name))
        log.info("serving %s on %s", ", ".join(self.service_names), self.address)
        return self.port

    async def _run_check(self, check: HealthCheck) -> bool:
        try:
            return await asyncio.wait_for(check(), self.check_timeout) is True
        except Exception as exc:  # a failing check means "not healthy"; say why in the log
            log.warning("health check %s failed: %r", _name_of(check), exc)
            return False

    async def refresh_health(self) -> bool:
        """Run every dependency check; set each service and the overall status accordingly."""
        if self._stopping:
            return False
        results = await asyncio.gather(*(self._run_check(check) for check in self.health_checks))
        if self._stopping:  # stop() began while the checks ran: NOT_SERVING stays
            return False
        passed = all(results)
        failing = [_name_of(c) for c, ok in zip(self.health_checks, results, strict=True) if not ok]
        self.failed_rounds = 0 if passed else self.failed_rounds + 1
        threshold = self.settings.health_failures_before_not_serving
        # A serving server tolerates a few failed rounds in a row; a server that has not
        # been healthy yet (start-up, or already NOT_SERVING) does not.
        healthy = passed or (self.healthy is True and self.failed_rounds < threshold)
        if not passed and healthy:
            log.warning(
                "health: check failed (%s), round %d of %d before NOT_SERVING",
                ", ".join(failing),
                self.failed_rounds,
                threshold,
            )
        status = SERVING if healthy else NOT_SERVING
        for name in ["", *self.service_names]:
            await self.health.set(name, status)
        if healthy != self.healthy:
            if healthy:
                log.info("health: SERVING")
            else:
                log.error("health: NOT_SERVING (failing: %s)", ", ".join(failing))
            self.healthy = healthy
        return healthy

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_check_interval_seconds)
            await self.refresh_health()

    async def _supervise(self, loop: Callable[[], Awaitable[None]], name: str) -> None:
        """Run ``loop``; when it crashes, log the traceback and restart it after a backoff.

        The backoff grows with consecutive crashes and starts over once a run has lasted
        longer than ``restart_delay_max``.
        """
        crashes = 0
        while True:
            started = time.monotonic()
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                if time.monotonic() - started > self.restart_delay_max:
                    crashes = 0
                crashes += 1
                delay = backoff_delay(crashes, self.restart_delay, self.restart_delay_max)
                log.exception(
                    "background loop %s crashed (%d in a row); restarting in %.1fs",
                    name,
                    crashes,
                    delay,
                )
                await asyncio.sleep(delay)
            else:
                log.info("background loop %s finished", name)
                return

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, stop accepting, let in-flight calls finish within ``grace``.

        Safe to call more than once (a signal and a ``finally``): later calls wait for the
        first one to finish.
        """
        if self._stopped is not None:
            await asyncio.shield(self._stopped)
            return
        self._stopped = asyncio.get_running_loop().create_future()
        try:
            await self._stop(self.settings.grpc_shutdown_grace_seconds if grace is None else grace)
        finally:
            self._stopped.set_result(None)

    async def _stop(self, grace: float) -> None:
        self._stopping = True
        await self.health.enter_graceful_shutdown()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=max(grace, 1.0))
            for task in stuck:
                log.error("background task %s ignored cancellation", task.get_name())
            for task in self._tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error(
                        "background task %s failed", task.get_name(), exc_info=task.exception()
                    )
        await self.server.stop(grace)
        for service in self.services:
            if service.close is not None:
                try:
                    await service.close()
                except Exception:
                    log.exception("closing service %s failed", service.name)
        log.info("stopped")

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


def _name_of(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or fn)


async def serve_until_signalled(server: SuiteServer) -> None:
    """Run until SIGTERM/SIGINT, then stop gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info(
            "signal received; shutting down (grace %.0fs)",
            server.settings.grpc_shutdown_grace_seconds,
        )
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.stop()
