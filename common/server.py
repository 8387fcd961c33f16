"""Builds and runs the asyncio gRPC server for a set of services.

Health (grpc.health.v1, per service and overall ""), reflection, message size limits,
the suite interceptor, a dependency-check loop that sets each service's health from the
dependencies it needs, and a graceful stop: health NOT_SERVING first, then stop accepting
and let in-flight calls finish within the grace period.

Health rules (docs/operations.md, "Health"):

- A service's names are SERVING while the server-wide checks, the checks of every
  dependency it ``requires`` and its own checks pass. A serving service tolerates
  ``health_failures_before_not_serving - 1`` failed rounds in a row (one slow answer does
  not take it out of rotation); one whose required dependency's circuit breaker is open is
  NOT_SERVING at the next round, without waiting for more rounds.
- The overall status ("") follows the core: the server-wide checks and the dependencies
  that every service of the process requires (PostgreSQL in the suite), with the same
  tolerance and breaker rule. A dependency only some services need (S3) does not move it:
  load balancers and container health checks ask for "", and draining or restarting a task
  would not bring S3 back, while its metadata RPCs and the other services still answer.
- Rounds start every ``health_check_interval_seconds``; every check of a round runs at once
  and counts as failed when it has not answered within ``check_timeout``, so a service turns
  NOT_SERVING within ``not_serving_within`` seconds of its dependency failing.

Background loops (sweeps) run supervised: a crash is logged with its traceback and the loop
is restarted after a backoff, so one bad iteration neither kills the process nor silently
stops the sweep.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common.app import ServiceInstance
from common.dependencies import Dependencies
from common.interceptors import Authenticator, SuiteInterceptor
from common.resilience import backoff_delay
from common.settings import Settings

log = logging.getLogger("mediagrid.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
OVERALL = ""

HealthCheck = Callable[[], Awaitable[bool]]
# (kind, owner, index) of a check in a round: ("server", "", i), ("dependency", name, 0),
# ("service", service name, i).
CheckKey = tuple[str, str, int]


class HealthState:
    """The health of one entry (a service, or the overall status) across rounds."""

    def __init__(self) -> None:
        self.healthy: bool | None = None  # None until the first round
        self.failed_rounds = 0  # consecutive rounds with a failing check
        self.failing: list[str] = []  # what failed in the last round

    def update(self, failing: list[str], *, threshold: int, forced: bool = False) -> bool:
        """Record a round; return whether the entry is now healthy.

        A healthy entry tolerates ``threshold - 1`` failed rounds in a row; one that has not
        been healthy yet (start-up, or already NOT_SERVING) does not, and ``forced`` (a
        required dependency's breaker is open) turns it NOT_SERVING at once.
        """
        self.failing = failing
        self.failed_rounds = 0 if not failing else self.failed_rounds + 1
        self.healthy = not forced and (
            not failing or (self.healthy is True and self.failed_rounds < threshold)
        )
        return self.healthy

    @property
    def tolerating(self) -> bool:
        """Healthy although the last round failed."""
        return bool(self.healthy and self.failing)


class SuiteServer:
    """A started grpc.aio server with health, reflection and background loops."""

    def __init__(
        self,
        settings: Settings,
        services: Sequence[ServiceInstance],
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
        self.check_timeout = (
            settings.health_check_timeout_seconds if check_timeout is None else check_timeout
        )
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
        self.health_checks = list(health_checks)
        self.dependency_checks = dict(dependency_checks or {})
        self.dependencies = dependencies
        self._service_states = [HealthState() for _ in self.services]
        self.overall = HealthState()
        self._running_checks: dict[CheckKey, asyncio.Future[bool]] = {}
        self.port: int = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stopped: asyncio.Future[None] | None = None
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
    def service_health(self) -> dict[str, HealthState]:
        """Each service's health state, by service name."""
        return {s.name: st for s, st in zip(self.services, self._service_states, strict=True)}

    @property
    def core_dependencies(self) -> list[str]:
        """The dependencies every service of the process requires (all of them when it
        serves none): the overall status follows these, not what only some services need."""
        if not self.services:
            return sorted(self.dependency_checks)
        shared = set(self.services[0].requires).intersection(*(s.requires for s in self.services))
        return sorted(shared)

    @property
    def healthy(self) -> bool | None:
        """The overall status after the last round (None before the first)."""
        return self.overall.healthy

    @property
    def not_serving_within(self) -> float:
        """Seconds within which a service turns NOT_SERVING once a dependency it needs fails.

        The first round that sees the failure starts within one round period (the interval,
        or the check timeout when rounds take longer); the threshold-th failed round in a row
        then ends at most one check timeout after it starts.
        """
        period = max(self.settings.health_check_interval_seconds, self.check_timeout)
        return self.settings.health_failures_before_not_serving * period + self.check_timeout

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
        for name in [OVERALL, *self.service_names]:
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

    # --- health ---------------------------------------------------------------------------

    async def _run_check(self, key: CheckKey, check: HealthCheck) -> bool:
        """True when ``check`` answers True within ``check_timeout``.

        The check runs as its own task and is not waited for past the timeout (a check stuck
        in code that ignores cancellation must not hold the round up); while it is still
        running, later rounds count it as failed instead of starting another copy.
        """
        name = _name_of(check)
        running = self._running_checks.get(key)
        if running is not None and not running.done():
            log.warning("health check %s still has not answered: failed", name)
            return False
        try:
            task = asyncio.ensure_future(check())
        except Exception as exc:  # a check that fails before it even starts
            log.warning("health check %s failed: %r", name, exc)
            return False
        task.add_done_callback(_consume)
        self._running_checks[key] = task
        done, _ = await asyncio.wait({task}, timeout=self.check_timeout)
        if not done:
            task.cancel()
            log.warning("health check %s did not answer within %.1fs", name, self.check_timeout)
            return False
        if task.cancelled():
            return False
        error = task.exception()
        if error is not None:  # a failing check means "not healthy"; say why in the log
            log.warning("health check %s failed: %r", name, error)
            return False
        return task.result() is True

    def _open_breakers(self, required: Sequence[str]) -> list[str]:
        """The required dependencies whose circuit breaker is open right now."""
        if self.dependencies is None:
            return []
        known = {dep.name: dep for dep in self.dependencies}
        return [name for name in required if name in known and not known[name].available]

    async def refresh_health(self) -> bool:
        """One round: run every check at once, then set each service's and the overall status.

        Returns the overall status (True: SERVING).
        """
        if self._stopping:
            return False
        checks: dict[CheckKey, HealthCheck] = {}
        labels: dict[CheckKey, str] = {}
        for index, check in enumerate(self.health_checks):
            checks["server", "", index] = check
            labels["server", "", index] = _name_of(check)
        for dependency, check in self.dependency_checks.items():
            checks["dependency", dependency, 0] = check
            labels["dependency", dependency, 0] = f"{dependency} check"
        for service in self.services:
            for index, check in enumerate(service.health_checks):
                checks["service", service.name, index] = check
                labels["service", service.name, index] = _name_of(check)
        keys = list(checks)
        results = await asyncio.gather(*(self._run_check(key, checks[key]) for key in keys))
        if self._stopping:  # stop() began while the checks ran: NOT_SERVING stays
            return False
        failed = {key: labels[key] for key, ok in zip(keys, results, strict=True) if not ok}
        threshold = self.settings.health_failures_before_not_serving
        for service, state in zip(self.services, self._service_states, strict=True):
            was = state.healthy
            failing, forced = self._verdict(failed, service.requires, service.name)
            healthy = state.update(failing, threshold=threshold, forced=forced)
            for name in service.service_names:
                await self.health.set(name, SERVING if healthy else NOT_SERVING)
            self._log_change(service.name, was, state)
        was = self.overall.healthy
        failing, forced = self._verdict(failed, self.core_dependencies, None)
        self.overall.update(failing, threshold=threshold, forced=forced)
        await self.health.set(OVERALL, SERVING if self.overall.healthy else NOT_SERVING)
        self._log_tolerated(threshold)
        self._log_change("overall", was, self.overall)
        return bool(self.overall.healthy)

    def _verdict(
        self, failed: Mapping[CheckKey, str], requires: Sequence[str], service: str | None
    ) -> tuple[list[str], bool]:
        """(what failed this round, whether a breaker forces NOT_SERVING) for an entry that
        needs ``requires`` and has the checks of ``service``."""
        failing = [
            label
            for (kind, owner, _), label in failed.items()
            if kind == "server"
            or (kind == "dependency" and owner in requires)
            or (kind == "service" and owner == service)
        ]
        open_breakers = self._open_breakers(requires)
        return failing + [f"{name} circuit open" for name in open_breakers], bool(open_breakers)

    def _log_tolerated(self, threshold: int) -> None:
        tolerating = [s for s in [self.overall, *self._service_states] if s.tolerating]
        if not tolerating:
            return
        failing = sorted({f for s in tolerating for f in s.failing})
        log.warning(
            "health: check failed (%s), round %d of %d before NOT_SERVING",
            ", ".join(failing),
            max(s.failed_rounds for s in tolerating),
            threshold,
        )

    def _log_change(self, entry: str, was: bool | None, state: HealthState) -> None:
        if state.healthy == was:
            return
        if state.healthy:
            log.info("health: %s SERVING", entry)
        else:
            log.error("health: %s NOT_SERVING (failing: %s)", entry, ", ".join(state.failing))

    async def _health_loop(self) -> None:
        # Rounds start at a fixed cadence, however long the previous one took (at most the
        # check timeout): sleeping a full interval after a slow round would stretch the
        # time to NOT_SERVING by a check timeout per round.
        loop = asyncio.get_running_loop()
        next_round = loop.time() + self.settings.health_check_interval_seconds
        while True:
            await asyncio.sleep(max(0.0, next_round - loop.time()))
            started = loop.time()
            await self.refresh_health()
            next_round = started + self.settings.health_check_interval_seconds

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
        for check in self._running_checks.values():
            check.cancel()
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


def host_port(host: str, port: int) -> str:
    """``host:port``, bracketing an IPv6 literal (``[::1]:50051``)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def _consume(task: asyncio.Future[bool]) -> None:
    """Retrieve the outcome of a check nobody waits for any more (no "never retrieved")."""
    if not task.cancelled():
        task.exception()


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
