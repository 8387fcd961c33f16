"""grpc.health.v1 statuses of a server's services, from the dependencies each one needs.

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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from common import deadlines
from common.app import ServiceInstance
from common.dependencies import Dependencies
from common.settings import Settings

# Health lines are part of the server's log, where operators look for them.
log = logging.getLogger("mediagrid.server")

OVERALL = ""

HealthCheck = Callable[[], Awaitable[bool]]
# Sets one health entry: (service name, or OVERALL; SERVING?).
Publish = Callable[[str, bool], Awaitable[None]]
# (kind, owner, index) of a check in a round: ("server", "", i), ("dependency", name, 0),
# ("service", service name, i).
CheckKey = tuple[str, str, int]


def probe_bound(check_timeout: float) -> float:
    """How long a health check's own call to a dependency may take: a little under the
    monitor's ``check_timeout``, so that the call ends by its own bound and the dependency's
    breaker gets a verdict (a check the monitor cancels gives none)."""
    return check_timeout - deadlines.margin(check_timeout)


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


class HealthMonitor:
    """Runs the rounds of checks of one server and publishes every entry's status."""

    def __init__(
        self,
        settings: Settings,
        services: Sequence[ServiceInstance],
        publish: Publish,
        *,
        health_checks: Sequence[HealthCheck] = (),
        dependency_checks: Mapping[str, HealthCheck] | None = None,
        dependencies: Dependencies | None = None,
        check_timeout: float | None = None,
    ) -> None:
        """``health_checks``: checks every service needs (a failure flips every name).
        ``dependency_checks``: a check per dependency name (``"postgresql"``); it counts for
        the services that list the name in ``requires``, as does the dependency's breaker
        in ``dependencies``.
        ``check_timeout``: a check slower than this counts as failed (default: the
        ``health_check_timeout_seconds`` setting)."""
        self.settings = settings
        self.services = list(services)
        self.publish = publish
        self.health_checks = list(health_checks)
        self.dependency_checks = dict(dependency_checks or {})
        self.dependencies = dependencies
        self.check_timeout = (
            settings.health_check_timeout_seconds if check_timeout is None else check_timeout
        )
        self.overall = HealthState()
        self.stopped = False
        self._service_states = [HealthState() for _ in self.services]
        self._running_checks: dict[CheckKey, asyncio.Future[bool]] = {}

    @property
    def service_health(self) -> dict[str, HealthState]:
        """Each service's health state, by service name."""
        return {s.name: st for s, st in zip(self.services, self._service_states, strict=True)}

    @property
    def core_dependencies(self) -> list[str]:
        """The dependencies every service requires (all of them when there is no service):
        the overall status follows these, not what only some services need."""
        if not self.services:
            return sorted(self.dependency_checks)
        shared = set(self.services[0].requires).intersection(*(s.requires for s in self.services))
        return sorted(shared)

    @property
    def not_serving_within(self) -> float:
        """Seconds within which a service turns NOT_SERVING once a dependency it needs fails.

        The first round that sees the failure starts within one round period (the interval,
        or the check timeout when rounds take longer); the threshold-th failed round in a row
        then ends at most one check timeout after it starts.
        """
        period = max(self.settings.health_check_interval_seconds, self.check_timeout)
        return self.settings.health_failures_before_not_serving * period + self.check_timeout

    def stop(self) -> None:
        """No later round publishes anything; checks still running are cancelled."""
        self.stopped = True
        for check in self._running_checks.values():
            check.cancel()

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

    async def refresh(self) -> bool:
        """One round: run every check at once, then set each service's and the overall status.

        Returns the overall status (True: SERVING).
        """
        if self.stopped:
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
        if self.stopped:  # the server began to stop while the checks ran: NOT_SERVING stays
            return False
        failed = {key: labels[key] for key, ok in zip(keys, results, strict=True) if not ok}
        threshold = self.settings.health_failures_before_not_serving
        for service, state in zip(self.services, self._service_states, strict=True):
            was = state.healthy
            failing, forced = self._verdict(failed, service.requires, service.name)
            healthy = state.update(failing, threshold=threshold, forced=forced)
            for name in service.service_names:
                await self.publish(name, healthy)
            self._log_change(service.name, was, state)
        was = self.overall.healthy
        failing, forced = self._verdict(failed, self.core_dependencies, None)
        self.overall.update(failing, threshold=threshold, forced=forced)
        await self.publish(OVERALL, bool(self.overall.healthy))
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

    async def run(self) -> None:
        """Run a round every ``health_check_interval_seconds`` until cancelled."""
        # Rounds start at a fixed cadence, however long the previous one took (at most the
        # check timeout): sleeping a full interval after a slow round would stretch the
        # time to NOT_SERVING by a check timeout per round.
        loop = asyncio.get_running_loop()
        next_round = loop.time() + self.settings.health_check_interval_seconds
        while True:
            await asyncio.sleep(max(0.0, next_round - loop.time()))
            started = loop.time()
            await self.refresh()
            next_round = started + self.settings.health_check_interval_seconds


def _consume(task: asyncio.Future[bool]) -> None:
    """Retrieve the outcome of a check nobody waits for any more (no "never retrieved")."""
    if not task.cancelled():
        task.exception()


def _name_of(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or fn)
