"""The worker runtime: claims jobs over gRPC, runs registered handlers, reports outcomes.

- Claims as many jobs as it has free capacity (``concurrency`` running + ``prefetch``
  waiting) with up to ``worker_claims_in_flight`` ``ClaimJobs`` calls at once (each asks
  for part of what is free), which long-poll when the queue is empty.
- Runs each attempt (one claim of a job: one lease) in its own task, at most
  ``concurrency`` handlers at once, each under the handler's timeout, capped at the longest
  run its job type declares (``job_types``).
- Acknowledges outcomes in batches (``CompleteJobs``/``FailJobs``), up to
  ``worker_acks_in_flight`` calls at once: while they are in flight the next batch
  accumulates, so batches grow with load by themselves.
- Heartbeats every lease it holds (waiting, running, or with its outcome not yet
  acknowledged) in one call every third of the lease. Only the server decides that a lease
  is lost: a heartbeat or progress report that says so, or a claim that hands the same job
  out again under a new lease (the old one expired while this worker was stalled). A lost
  attempt's handler is cancelled and its outcome is never reported; a failing heartbeat
  cancels nothing.
- A job claimed again while its stale attempt still runs here gets a new attempt whose
  handler starts only once the stale one has ended: the two never run side by side.
- Every call has a deadline (``worker_call_timeout_seconds``; a claim its long-poll wait
  plus that), so a server that stops answering fails calls, which are retried, instead of
  hanging the worker.
- Retryable failures are retried by the server after the delay this runtime picks:
  exponential backoff with full jitter, per job type (``@handler(retry_base_seconds=...)``).
- ``run(stop)``: when ``stop`` is set it stops claiming, gives back jobs it has not started,
  lets running handlers finish within the grace period, then cancels and releases the rest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from mediagrid.jobs.v1 import job_pb2, worker_service_pb2, worker_service_pb2_grpc
from opentelemetry import trace

from common.grpc_errors import error_info
from common.resilience import backoff_delay
from common.settings import Settings
from services.jobs import job_types
from services.jobs.tracing import job_span, tracing_on
from services.jobs.worker.api import (
    HANDLERS,
    HandlerSpec,
    PermanentJobError,
    WorkerResources,
)

log = logging.getLogger("mediagrid.worker")

# gRPC codes worth retrying a call for (the server or network is away for a moment).
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)
MAX_PER_CALL = 1000
# Backoff (common.resilience.backoff_delay) of a claim or an acknowledgement that failed for a
# reason that passes: short at first so a blip costs little, capped so the worker does not
# sit idle long after a long outage ends.
RETRY_BASE = 0.05
RETRY_CAP = 5.0


class UnknownJobType(ValueError):
    """The worker was asked to run a job type that has no registered handler."""


class LeaseLost(asyncio.CancelledError):
    """The server no longer holds this job for us (cancelled, finished or taken over).

    Raised into the handler by ``job.progress()``. It is a cancellation, so a handler's
    ``except Exception`` does not swallow it: the handler stops as it would when the
    runtime cancels it on a lost lease.
    """


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


LeaseKey = tuple[str, str]  # (job name, lease id)


def lease_key(lease: job_pb2.LeaseRef) -> LeaseKey:
    return (lease.job, lease.lease_id)


@dataclass(eq=False)
class _Attempt:
    """One claim of a job: its lease, its task, and how far it got."""

    claimed: job_pb2.ClaimedJob
    lease: job_pb2.LeaseRef
    task: asyncio.Task[None] | None = None
    started: bool = False  # its handler began (it holds a slot)
    ended: bool = False  # its task is over
    lost: bool = False  # the server no longer holds the lease for us: never report it
    reporting: bool = False  # its outcome waits for (or is in) an acknowledgement call
    sending: bool = False  # an acknowledgement call carrying its outcome is in flight
    last_progress: float = 0.0

    @property
    def job(self) -> str:
        return str(self.lease.job)

    @property
    def key(self) -> LeaseKey:
        return lease_key(self.lease)


@dataclass
class WorkerStats:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0


class _Context:
    """What a handler sees of its job (implements ``JobContext``)."""

    __slots__ = ("_attempt", "_payload", "_runtime")

    def __init__(self, runtime: WorkerRuntime, attempt: _Attempt) -> None:
        self._runtime = runtime
        self._attempt = attempt
        payload = attempt.claimed.job.payload
        self._payload: dict[str, Any] = json_format.MessageToDict(payload) if payload.fields else {}

    @property
    def name(self) -> str:
        return str(self._attempt.claimed.job.name)

    @property
    def type(self) -> str:
        return str(self._attempt.claimed.job.type)

    @property
    def payload(self) -> Mapping[str, Any]:
        return self._payload

    @property
    def attempt(self) -> int:
        return int(self._attempt.claimed.job.attempts)

    @property
    def owner(self) -> str:
        return str(self._attempt.claimed.job.owner)

    @property
    def resources(self) -> WorkerResources:
        return self._runtime.resources

    async def progress(self, percent: float, message: str = "") -> None:
        await self._runtime._progress(self._attempt, percent, message)


# An attempt and its outcome: the handler's result (a Struct or None) for a success, the
# job_pb2.Failure for a failure.
Outcome = tuple[_Attempt, Any]


class _Acker:
    """Collects outcomes and sends them in batches, ``worker_acks_in_flight`` calls at most.

    While those calls are in flight the next batch accumulates, so batches grow with load.
    An outcome whose lease is found lost before or while it is sent is dropped, so a batch
    never carries a stale attempt's outcome it knows about (nor two outcomes of one job).
    """

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.completions: list[Outcome] = []
        self.failures: list[Outcome] = []
        self.pending = asyncio.Event()
        self.closing = False
        self._give_up_at = float("inf")  # when closing: the last moment to retry a call
        self._calls = asyncio.Semaphore(runtime.settings.worker_acks_in_flight)
        self._sending: set[asyncio.Task[None]] = set()

    def complete(self, attempt: _Attempt, result: struct_pb2.Struct | None) -> None:
        # The Completion is written into the request when it is sent (_complete_call).
        self._add(self.completions, attempt, result)

    def fail(self, attempt: _Attempt, failure: job_pb2.Failure) -> None:
        self._add(self.failures, attempt, failure)

    def _add(self, queue: list[Outcome], attempt: _Attempt, message: Any) -> None:
        attempt.reporting = True
        queue.append((attempt, message))
        self.pending.set()

    async def run(self) -> None:
        """Send batches until ``close()``; then send what is left, wait for it, and return."""
        settings = self.runtime.settings
        size = settings.worker_ack_batch_size
        while True:
            await self.pending.wait()
            if (
                not self.closing
                and len(self.completions) + len(self.failures) < size
                and settings.worker_ack_interval_seconds
            ):
                await asyncio.sleep(settings.worker_ack_interval_seconds)
            await self._calls.acquire()
            self.completions = self._drop_lost(self.completions)
            self.failures = self._drop_lost(self.failures)
            completions, self.completions = self.completions[:size], self.completions[size:]
            room = size - len(completions)
            failures, self.failures = self.failures[:room], self.failures[room:]
            if not self.completions and not self.failures:
                self.pending.clear()
            if completions or failures:
                task = asyncio.create_task(self._send_batch(completions, failures))
                self._sending.add(task)
                task.add_done_callback(self._sent)
            else:
                self._calls.release()
            if self.closing and not self.pending.is_set():
                await asyncio.gather(*self._sending)
                return

    def _drop_lost(self, queue: list[Outcome]) -> list[Outcome]:
        if not any(attempt.lost for attempt, _ in queue):
            return queue
        for attempt, _ in queue:
            if attempt.lost:
                self.runtime._settled(attempt)
        return [item for item in queue if not item[0].lost]

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._calls.release()
        if not task.cancelled() and (error := task.exception()) is not None:
            # _send handles every RPC error; anything else is a bug, and these outcomes are
            # left to their leases (the reaper returns the jobs to the queue).
            log.error("acknowledging outcomes failed", exc_info=error)

    def close(self) -> None:
        """Send what is left; retry failing calls for at most the shutdown grace period."""
        self.closing = True
        self._give_up_at = time.monotonic() + self.runtime.settings.worker_shutdown_grace_seconds
        self.pending.set()

    async def _send_batch(self, completions: list[Outcome], failures: list[Outcome]) -> None:
        try:
            if completions:
                await self._send(completions, self._complete_call)
            if failures:
                await self._send(failures, self._fail_call)
        finally:
            for attempt, _ in (*completions, *failures):
                self.runtime._settled(attempt)

    async def _complete_call(self, batch: list[Outcome]) -> None:
        request = worker_service_pb2.CompleteJobsRequest()
        add = request.completions.add
        for attempt, result in batch:
            completion = add()
            completion.lease.job = attempt.lease.job
            completion.lease.lease_id = attempt.lease.lease_id
            if result is not None:
                completion.result.CopyFrom(result)
        await self.runtime.stub.CompleteJobs(
            request, metadata=self.runtime.metadata, timeout=self.runtime.call_timeout
        )
        self.runtime.stats.succeeded += len(batch)

    async def _fail_call(self, batch: list[Outcome]) -> None:
        await self.runtime.stub.FailJobs(
            worker_service_pb2.FailJobsRequest(failures=[failure for _, failure in batch]),
            metadata=self.runtime.metadata,
            timeout=self.runtime.call_timeout,
        )
        self.runtime.stats.failed += len(batch)

    async def _send(self, items: list[Outcome], call: Any) -> None:
        """Send ``items``; drop the ones whose lease was lost; retry transient errors."""
        failures = 0
        while True:
            # A heartbeat or a new claim of the job may have found a lease lost meanwhile.
            items = [item for item in items if not item[0].lost]
            if not items:
                return
            try:
                await self._call(items, call)
                return
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                    info = error_info(exc)
                    meta = info.metadata if info else {}
                    gone = set((meta.get("lost_jobs") or meta.get("jobs") or "").split(","))
                    gone.discard("")
                    lost = [attempt for attempt, _ in items if attempt.job in gone]
                    if not lost:  # cannot tell which: send one by one
                        await self._one_by_one(items, call)
                        return
                    for attempt in lost:
                        self.runtime._mark_lost(attempt, "its outcome was refused")
                    log.warning("%d outcome(s) not recorded: lease lost", len(lost))
                elif code in TRANSIENT and time.monotonic() < self._give_up_at:
                    log.warning("acknowledging %d job(s) failed (%s); retrying", len(items), code)
                    failures += 1
                    await asyncio.sleep(backoff_delay(failures, RETRY_BASE, RETRY_CAP))
                else:
                    log.error(
                        "%d outcome(s) not recorded (%s %s); their leases will expire and the "
                        "jobs run again",
                        len(items),
                        code,
                        exc.details(),
                    )
                    return

    @staticmethod
    async def _call(items: list[Outcome], call: Any) -> None:
        for attempt, _ in items:
            attempt.sending = True
        try:
            await call(items)
        finally:
            for attempt, _ in items:
                attempt.sending = False

    async def _one_by_one(self, items: list[Outcome], call: Any) -> None:
        for item in items:
            attempt = item[0]
            if attempt.lost:
                continue
            try:
                await self._call([item], call)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                    self.runtime._mark_lost(attempt, "its outcome was refused")
                log.warning("outcome not recorded: %s %s", exc.code(), exc.details())


def capped_by_declaration(spec: HandlerSpec, declared: job_types.JobType | None) -> HandlerSpec:
    """``spec`` with its timeout capped at the longest run its job type declares."""
    if declared is None or spec.timeout_seconds <= declared.max_run_seconds:
        return spec
    return dataclasses.replace(spec, timeout_seconds=declared.max_run_seconds)


class WorkerRuntime:
    def __init__(
        self,
        stub: worker_service_pb2_grpc.WorkerServiceStub,
        *,
        types: Sequence[str],
        resources: WorkerResources,
        settings: Settings,
        concurrency: int | None = None,
        prefetch: int | None = None,
        worker_id: str | None = None,
        handlers: Mapping[str, HandlerSpec] | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        declared = job_types.registry(settings)
        self.handlers = {
            name: capped_by_declaration(spec, declared.get(name))
            for name, spec in (HANDLERS if handlers is None else handlers).items()
        }
        unknown = sorted(set(types) - set(self.handlers))
        if not types or unknown:
            raise UnknownJobType(
                f"no handler registered for job type(s): {', '.join(unknown) or '(none given)'}; "
                f"known: {', '.join(sorted(self.handlers)) or 'none'}"
            )
        self.stub = stub
        self.types = sorted(set(types))
        self.resources = resources
        self.settings = settings
        self.concurrency = concurrency or settings.worker_concurrency
        self.capacity = self.concurrency + (
            settings.worker_prefetch if prefetch is None else prefetch
        )
        self.worker_id = worker_id or default_worker_id()
        self.metadata = tuple(resources.call_metadata if metadata is None else metadata)
        self.call_timeout = settings.worker_call_timeout_seconds
        self.heartbeat_interval = settings.job_lease_seconds / 3
        self.stats = WorkerStats()
        self._slots = asyncio.Semaphore(self.concurrency)
        # Every attempt until it is settled (its task ended and its outcome, if any, was
        # acknowledged or dropped), by lease; and the attempts of each job, oldest first.
        self._attempts: dict[LeaseKey, _Attempt] = {}
        self._by_job: dict[str, list[_Attempt]] = {}
        self._holding = 0  # attempts whose task has not ended: what counts against capacity
        self._room = asyncio.Event()
        self._asked = 0  # jobs requested by ClaimJobs calls in flight
        self._idle = False  # the last ClaimJobs call found no work
        self._stopping = False
        self._acker = _Acker(self)
        self._fatal: BaseException | None = None
        self._traced = tracing_on()

    # --- lifecycle ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then stop gracefully; re-raises a fatal claim error."""
        claims = [
            asyncio.create_task(self._claim_loop(stop), name=f"worker-claim-{i}")
            for i in range(self.settings.worker_claims_in_flight)
        ]
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="worker-heartbeat")
        acker = asyncio.create_task(self._acker.run(), name="worker-ack")
        for loop in (*claims, heartbeat, acker):
            loop.add_done_callback(lambda task: self._loop_ended(task, stop))
        log.info(
            "worker %s serving %s (concurrency %d)",
            self.worker_id,
            ",".join(self.types),
            self.concurrency,
        )
        try:
            await stop.wait()
        finally:
            self._stopping = True
            for claim in claims:
                claim.cancel()
            await asyncio.gather(*claims, return_exceptions=True)
            await self._drain()
            self._acker.close()
            await asyncio.gather(acker, return_exceptions=True)
            heartbeat.cancel()  # only now: the leases of unacknowledged outcomes needed it
            await asyncio.gather(heartbeat, return_exceptions=True)
        if self._fatal is not None:
            raise self._fatal

    def _loop_ended(self, task: asyncio.Task[None], stop: asyncio.Event) -> None:
        """A crashed loop stops the worker (run() re-raises the error): a worker that no
        longer claims, heartbeats or acknowledges must not look alive."""
        if task.cancelled() or (error := task.exception()) is None:
            return
        log.error("worker loop %s crashed; stopping", task.get_name(), exc_info=error)
        if self._fatal is None:
            self._fatal = error
        stop.set()

    async def _drain(self) -> None:
        """Release jobs not started, let started ones finish within the grace, release the rest."""
        live = [a for a in self._attempts.values() if not a.ended]
        waiting = [a for a in live if not a.started]
        for attempt in waiting:
            if attempt.task is not None:
                attempt.task.cancel()
        await self._release(waiting)
        # Started attempts include stale ones still winding down after their cancellation.
        running = {a.task: a for a in live if a.started and a.task is not None}
        if running:
            _done, pending = await asyncio.wait(
                running, timeout=self.settings.worker_shutdown_grace_seconds
            )
            if pending:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                await self._release([running[task] for task in pending])
        await asyncio.gather(*(a.task for a in waiting if a.task), return_exceptions=True)

    async def _release(self, attempts: Sequence[_Attempt]) -> None:
        # A lost lease is not ours to give back; a reported one is settled by its outcome.
        leases = [a.lease for a in attempts if not a.lost and not a.reporting]
        for start in range(0, len(leases), MAX_PER_CALL):
            part = leases[start : start + MAX_PER_CALL]
            try:
                response = await self.stub.ReleaseJobs(
                    worker_service_pb2.ReleaseJobsRequest(leases=part),
                    metadata=self.metadata,
                    timeout=self.call_timeout,
                )
                self.stats.released += response.released_count
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "could not release %d job(s) (their leases will expire): %s %s",
                    len(part),
                    exc.code(),
                    exc.details(),
                )

    # --- claiming -----------------------------------------------------------------------

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        """One of ``worker_claims_in_flight`` loops: each asks for part of the free capacity."""
        failures = 0
        wait = self.settings.worker_claim_wait_seconds
        while not self._stopping:
            held = self._holding + self._asked
            free = self.capacity - held
            # Claim in large batches: with work in flight, wait until a quarter of the
            # capacity is free rather than claiming a handful of jobs per call. While the
            # queue is empty one long poll is enough: a second would only double the calls.
            if (
                free <= 0
                or (held and free < max(1, self.capacity // 4))
                or (self._asked and self._idle)
            ):
                self._room.clear()
                await self._room.wait()
                continue
            asked = min(free, MAX_PER_CALL)
            request = worker_service_pb2.ClaimJobsRequest(
                worker_id=self.worker_id, types=self.types, max_jobs=asked
            )
            request.wait.FromNanoseconds(int(wait * 1e9))
            self._asked += asked
            try:
                response = await self.stub.ClaimJobs(
                    request, metadata=self.metadata, timeout=wait + self.call_timeout
                )
                # Before the room is set: the handlers' tasks then run before another claim
                # loop sends the next ClaimJobs (the one that keeps a claim out while idle).
                for claimed in response.jobs:
                    self._start(claimed)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in TRANSIENT:
                    log.warning("claim failed (%s); retrying", exc.code())
                    failures += 1
                    await asyncio.sleep(backoff_delay(failures, RETRY_BASE, RETRY_CAP))
                    continue
                self._fatal = exc
                log.error("claim rejected, stopping: %s %s", exc.code(), exc.details())
                stop.set()
                return
            finally:
                self._asked -= asked
                self._room.set()  # what this call did not get is free again
            failures = 0
            self._idle = not response.jobs
            self.stats.claimed += len(response.jobs)

    def _start(self, claimed: job_pb2.ClaimedJob) -> None:
        lease = job_pb2.LeaseRef(job=claimed.job.name, lease_id=claimed.lease_id)
        attempt = _Attempt(claimed=claimed, lease=lease)
        # The server hands a job out again only once our earlier lease of it has expired:
        # that attempt is stale (this worker was stalled or cut off). Stop it, and start
        # the new handler only once it has ended.
        earlier = self._by_job.setdefault(attempt.job, [])
        for stale in earlier:
            self._mark_lost(stale, "the job was claimed again under a new lease")
        before = [a.task for a in earlier if a.task is not None and not a.ended]
        earlier.append(attempt)
        self._attempts[attempt.key] = attempt
        self._holding += 1
        attempt.task = asyncio.create_task(self._run_job(attempt, before))

    # --- running ------------------------------------------------------------------------

    async def _run_job(self, attempt: _Attempt, before: list[asyncio.Task[None]]) -> None:
        try:
            if before:
                await asyncio.wait(before)  # never side by side with a stale attempt
            async with self._slots:
                if self._stopping or attempt.lost:
                    return  # released by _drain, or nothing to run any more
                attempt.started = True
                await self._execute(attempt)
        except asyncio.CancelledError:
            pass  # lost lease or shutdown: _drain / the heartbeat decides what happens
        finally:
            attempt.ended = True
            self._holding -= 1
            self._room.set()
            if not attempt.reporting:
                self._settled(attempt)

    async def _execute(self, attempt: _Attempt) -> None:
        """Run the handler in a span of the trace that created the job (tracing.py)."""
        if not self._traced:
            await self._run_handler(attempt)
            return
        job = attempt.claimed.job
        with job_span(
            attempt.claimed.trace_context,
            name=str(job.name),
            job_type=str(job.type),
            attempt=int(job.attempts),
        ):
            await self._run_handler(attempt)

    async def _run_handler(self, attempt: _Attempt) -> None:
        spec = self.handlers[attempt.claimed.job.type]
        try:
            async with asyncio.timeout(spec.timeout_seconds):
                result = await spec.function(_Context(self, attempt))
        except LeaseLost:
            return
        except PermanentJobError as exc:
            self._report_failure(attempt, exc, retryable=False)
            return
        except TimeoutError:
            error = TimeoutError(f"handler timed out after {spec.timeout_seconds:.0f}s")
            self._report_failure(attempt, error, retryable=True, spec=spec)
            return
        except Exception as exc:  # RetryableJobError and anything unexpected: retry
            self._report_failure(attempt, exc, retryable=True, spec=spec)
            return
        if attempt.lost:  # the handler finished although its lease was lost meanwhile
            return
        try:
            struct = None
            if result:
                struct = struct_pb2.Struct()
                struct.update(dict(result))
        except (ValueError, TypeError, AttributeError) as exc:
            bad = PermanentJobError(f"the handler's result is not a JSON object: {exc}")
            self._report_failure(attempt, bad, retryable=False)
            return
        self._acker.complete(attempt, struct)

    def _report_failure(
        self,
        attempt: _Attempt,
        exc: BaseException,
        *,
        retryable: bool,
        spec: HandlerSpec | None = None,
    ) -> None:
        if attempt.lost:  # a stale attempt's failure (often the lease loss itself) is not news
            return
        job = attempt.claimed.job
        error = f"{type(exc).__name__}: {exc}"
        if (
            retryable
            and spec is not None
            and spec.max_attempts
            and job.attempts >= spec.max_attempts
        ):
            retryable = False
            error = f"attempts exhausted (handler allows {spec.max_attempts}); last error {error}"
        failure = job_pb2.Failure(lease=attempt.lease, error=error[:8000], retryable=retryable)
        span = trace.get_current_span()  # the attempt's span (job_span), when traced
        span.record_exception(exc)
        span.set_status(trace.Status(trace.StatusCode.ERROR, error[:200]))
        if retryable and spec is not None:
            delay = backoff_delay(
                max(job.attempts, 1), spec.retry_base_seconds, spec.retry_max_seconds
            )
            failure.retry_delay.FromNanoseconds(max(int(delay * 1e9), 1_000_000))
        log.info(
            "job %s attempt %d failed (%s): %s",
            job.name,
            job.attempts,
            "retry" if retryable else "final",
            error,
        )
        self._acker.fail(attempt, failure)

    async def _progress(self, attempt: _Attempt, percent: float, message: str) -> None:
        if attempt.lost:  # a stale attempt reports nothing; its handler should stop
            raise LeaseLost(attempt.job)
        now = time.monotonic()
        if (
            percent < 100
            and now - attempt.last_progress < self.settings.worker_progress_interval_seconds
        ):
            return
        attempt.last_progress = now
        request = worker_service_pb2.ReportProgressRequest(
            lease=attempt.lease, percent=max(0.0, min(100.0, percent)), message=message[:1000]
        )
        try:
            await self.stub.ReportProgress(
                request, metadata=self.metadata, timeout=self.call_timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                self._mark_lost(attempt, "a progress report was refused", cancel=False)
                raise LeaseLost(attempt.job) from None
            log.warning("progress report of %s failed: %s", attempt.job, exc.code())

    # --- leases -------------------------------------------------------------------------

    def _mark_lost(self, attempt: _Attempt, why: str, *, cancel: bool = True) -> None:
        """The server no longer holds ``attempt``'s lease for us: stop it, never report it."""
        if attempt.lost:
            return
        attempt.lost = True
        self.stats.lost += 1
        log.warning(
            "lease of %s (attempt %d) lost: %s", attempt.job, attempt.claimed.job.attempts, why
        )
        if cancel and attempt.task is not None and not attempt.ended:
            attempt.task.cancel()

    def _settled(self, attempt: _Attempt) -> None:
        """Forget ``attempt``: its task ended and no outcome of it is waiting to be sent."""
        if self._attempts.pop(attempt.key, None) is None:
            return
        siblings = self._by_job.get(attempt.job)
        if siblings is not None:
            siblings.remove(attempt)
            if not siblings:
                del self._by_job[attempt.job]

    # --- heartbeats ---------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            started = time.monotonic()
            await self.heartbeat_once()
            await asyncio.sleep(max(0.0, self.heartbeat_interval - (time.monotonic() - started)))

    async def heartbeat_once(self) -> None:
        """Extend every lease not known lost; cancel the attempts the server says it lost.

        A failed call cancels nothing: only the server knows whether a lease is gone.
        """
        attempts = [a for a in self._attempts.values() if not a.lost]
        parts = [attempts[i : i + MAX_PER_CALL] for i in range(0, len(attempts), MAX_PER_CALL)]
        # At once: one hung call must not delay the others (nor, bounded, the next round).
        await asyncio.gather(*(self._heartbeat(part) for part in parts))

    async def _heartbeat(self, attempts: list[_Attempt]) -> None:
        request = worker_service_pb2.HeartbeatRequest(
            worker_id=self.worker_id, leases=[a.lease for a in attempts]
        )
        try:
            response = await self.stub.Heartbeat(
                request,
                metadata=self.metadata,
                timeout=min(self.call_timeout, self.heartbeat_interval),
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("heartbeat of %d lease(s) failed: %s", len(attempts), exc.code())
            return
        self._lost(response.lost)

    def _lost(self, lost: Iterable[job_pb2.LeaseRef]) -> None:
        for lease in lost:
            # By lease, not by job: the job may hold a newer lease here by now.
            attempt = self._attempts.get(lease_key(lease))
            # An outcome in flight may have ended the lease itself: its own answer decides.
            if attempt is not None and not attempt.sending:
                self._mark_lost(attempt, "the server reports it lost")

    @property
    def in_flight(self) -> int:
        """Attempts held against the capacity: waiting for a slot or running."""
        return self._holding
