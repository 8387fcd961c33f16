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
import errno
import logging
import signal
import socket
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


class PortInUse(OSError):
    """The gRPC port is taken by another process."""

    def __init__(self, where: str) -> None:
        super().__init__(f"cannot listen on {where}: is another process using it?")
        self.where = where


class SuiteServer:
    """A grpc.aio server with health, reflection and background loops.

    ``bind()`` takes the port, ``add_services()`` adds what it serves, ``start()`` opens it
    (binding first if needed). A process binds before the slow part of its start-up
    (embedded stores, migrations, services), so a busy port fails at once, having started
    nothing; connections that arrive meanwhile wait in the listen backlog.
    """

    def __init__(
        self,
        settings: Settings,
        services: Sequence[ServiceInstance] = (),
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
        self.services: list[ServiceInstance] = []
        self.interceptor = SuiteInterceptor(error_drain_seconds=settings.grpc_error_drain_seconds)
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
        self.health_checks: list[HealthCheck] = []
        self.port: int = 0
        self._bound = False
        self._started = False
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stopped: asyncio.Future[None] | None = None
        self.healthy: bool | None = None
        self.failed_rounds = 0  # consecutive rounds with a failing check
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.add_services(services, authenticator=authenticator, health_checks=health_checks)

    def add_services(
        self,
        services: Sequence[ServiceInstance],
        *,
        authenticator: Authenticator | None = None,
        health_checks: Sequence[HealthCheck] = (),
    ) -> None:
        """Serve ``services`` too (before ``start()``); ``authenticator`` checks every call."""
        if self._started:
            raise RuntimeError("services are added before the server starts")
        self.services += services
        for service in services:
            service.register(self.server)
        self.interceptor.public_methods = frozenset(
            m for s in self.services for m in s.public_methods
        )
        if authenticator is not None:
            self.interceptor.authenticator = authenticator
        self.health_checks += [*health_checks, *(c for s in services for c in s.health_checks)]

    @property
    def service_names(self) -> list[str]:
        return [n for s in self.services for n in s.service_names]

    @property
    def address(self) -> str:
        """``host:port`` to connect to (``[v6]:port`` for an IPv6 host)."""
        return host_port(self.settings.grpc_host, self.port)

    def bind(self, port: int | None = None) -> int:
        """Take the port (``port``, else the grpc_port setting; 0 picks a free one) without
        answering yet; raise ``PortInUse`` when another process holds it. Once bound, later
        calls return the bound port."""
        if self._bound:
            return self.port
        wanted = self.settings.grpc_port if port is None else port
        where = host_port(self.settings.grpc_host, wanted)
        if wanted:
            _refuse_if_taken(self.settings.grpc_host, wanted, where)
        try:
            self.port = self.server.add_insecure_port(where)
        except RuntimeError as exc:  # grpc >= 1.59 raises instead of returning 0
            raise PortInUse(where) from exc
        if self.port == 0:
            raise PortInUse(where)
        self._bound = True
        return self.port

    async def start(self, port: int | None = None) -> int:
        self.bind(port)
        # Nothing is SERVING before the first checks have passed (the health servicer
        # starts with "" SERVING, and a probe may arrive as soon as the port is open).
        for name in ["", *self.service_names]:
            await self.health.set(name, NOT_SERVING)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self._started = True
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
        if self._bound and not self._started:
            # Start-up failed after bind(): a gRPC server that never started keeps its socket
            # until the process exits; started (and NOT_SERVING), its stop lets the port go.
            await self.server.start()
        await self.server.stop(grace)
        for service in self.services:
            if service.close is not None:
                try:
                    await service.close()
                except Exception:
                    log.exception("closing service %s failed", service.name)
        if self._started:
            log.info("stopped")

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


def _refuse_if_taken(host: str, port: int, where: str) -> None:
    """Raise ``PortInUse`` when another socket listens on ``host:port``.

    Tried with a socket of our own first because gRPC's failing bind also writes a line of
    its C core's log to stderr, and a busy port should be one line of error, not two.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return  # gRPC reports a host it cannot resolve
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC binds: a port whose old connections linger in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUse(where) from None
                # Anything else (an address this host does not have...) is gRPC's to report.


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
