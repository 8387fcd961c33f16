"""Builds and runs the asyncio gRPC server for a set of services.

Health (grpc.health.v1, per service and overall ""), reflection (v1 and v1alpha), optional
TLS and mutual TLS (``common.tls``), message size limits,
the suite interceptor, a dependency-check loop that sets each service's health from the
dependencies it needs, and a graceful stop: health NOT_SERVING first, then stop accepting
and let in-flight calls finish within the grace period.

Health rules: ``common/health.py`` (``HealthMonitor``) and docs/operations.md ("Health").

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
from collections.abc import Awaitable, Callable, Mapping, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from common.addresses import host_port
from common.app import ServiceInstance
from common.dependencies import Dependencies
from common.health import OVERALL, HealthCheck, HealthMonitor, HealthState
from common.interceptors import QUIET_METHODS, Authenticator, SuiteInterceptor
from common.reflection_v1 import enable_server_reflection
from common.resilience import backoff_delay
from common.settings import Settings
from common.tls import CertificateAuthenticator, server_credentials

log = logging.getLogger("mediagrid.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


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
        dependency_checks: Mapping[str, HealthCheck] | None = None,
        dependencies: Dependencies | None = None,
        extra_interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        check_timeout: float | None = None,
        restart_delay: float = 1.0,
        restart_delay_max: float = 60.0,
    ) -> None:
        """``health_checks``: checks every service needs (a failure flips every name).
        ``dependency_checks``: a check per dependency name (``"postgresql"``); it counts for
        the services that list the name in ``requires``, as does the dependency's breaker
        in ``dependencies``.
        ``check_timeout``: a dependency check slower than this counts as failed (default:
        the ``health_check_timeout_seconds`` setting).
        ``restart_delay``/``restart_delay_max``: backoff before restarting a crashed loop."""
        self.settings = settings
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
        self.dependency_checks: dict[str, HealthCheck] = {}
        self.dependencies = dependencies
        self.check_timeout = check_timeout
        self.port: int = 0
        self._bound = False
        self._started = False
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped: asyncio.Future[None] | None = None
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.add_services(
            services,
            authenticator=authenticator,
            health_checks=health_checks,
            dependency_checks=dependency_checks,
        )

    def add_services(
        self,
        services: Sequence[ServiceInstance],
        *,
        authenticator: Authenticator | None = None,
        health_checks: Sequence[HealthCheck] = (),
        dependency_checks: Mapping[str, HealthCheck] | None = None,
        dependencies: Dependencies | None = None,
        certificates: CertificateAuthenticator | None = None,
    ) -> None:
        """Serve ``services`` too (before ``start()``); ``authenticator`` checks every call;
        ``certificates`` maps a client certificate to a principal when a call has no token;
        the checks and ``dependencies`` join those given to the constructor."""
        if self._started:
            raise RuntimeError("services are added before the server starts")
        self.services += services
        for service in services:
            service.register(self.server)
        self.interceptor.public_methods = frozenset(
            m for s in self.services for m in s.public_methods
        )
        self.interceptor.quiet_methods = QUIET_METHODS | frozenset(
            m for s in self.services for m in s.quiet_methods
        )
        if authenticator is not None:
            self.interceptor.authenticator = authenticator
        if certificates is not None:
            self.interceptor.certificates = certificates
        self.health_checks += health_checks
        self.dependency_checks.update(dependency_checks or {})
        if dependencies is not None:
            self.dependencies = dependencies
        # Not started yet: the monitor is rebuilt around everything served so far.
        self.monitor = HealthMonitor(
            self.settings,
            self.services,
            self._publish,
            health_checks=self.health_checks,
            dependency_checks=self.dependency_checks,
            dependencies=self.dependencies,
            check_timeout=self.check_timeout,
        )

    @property
    def service_names(self) -> list[str]:
        return [n for s in self.services for n in s.service_names]

    @property
    def service_health(self) -> dict[str, HealthState]:
        return self.monitor.service_health

    @property
    def overall(self) -> HealthState:
        return self.monitor.overall

    @property
    def core_dependencies(self) -> list[str]:
        return self.monitor.core_dependencies

    @property
    def healthy(self) -> bool | None:
        """The overall status after the last round (None before the first)."""
        return self.monitor.overall.healthy

    @property
    def not_serving_within(self) -> float:
        """See ``HealthMonitor.not_serving_within``."""
        return self.monitor.not_serving_within

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
        credentials = server_credentials(self.settings)
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(where)
            else:
                self.port = self.server.add_secure_port(where, credentials)
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
        for name in [OVERALL, *self.service_names]:
            await self.health.set(name, NOT_SERVING)
        enable_server_reflection([*self.service_names, health.SERVICE_NAME], self.server)
        self._started = True
        await self.server.start()
        await self.refresh_health()
        self._tasks.append(
            asyncio.create_task(
                self._supervise(self.monitor.run, "health-loop"), name="health-loop"
            )
        )
        for service in self.services:
            for loop in service.background:
                name = f"{service.name}:{_name_of(loop)}"
                self._tasks.append(asyncio.create_task(self._supervise(loop, name), name=name))
        log.info("serving %s on %s", ", ".join(self.service_names), self.address)
        return self.port

    # --- health ---------------------------------------------------------------------------

    async def refresh_health(self) -> bool:
        """One round of checks now (``HealthMonitor.refresh``); returns the overall status."""
        return await self.monitor.refresh()

    async def _publish(self, name: str, serving: bool) -> None:
        await self.health.set(name, SERVING if serving else NOT_SERVING)

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
        self.monitor.stop()  # a round still running publishes nothing any more
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
