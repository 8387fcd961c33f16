"""The worker runtime: claims jobs over gRPC, runs registered handlers, reports outcomes.

- Claims as many jobs as it has free capacity (``concurrency`` running + ``prefetch``
  waiting) with up to ``worker_claims_in_flight`` ``ClaimJobs`` calls at once (each asks
  for part of what is free), which long-poll when the queue is empty.
- Runs each job in its own task, at most ``concurrency`` handlers at once, each under the
  handler's timeout, capped at the longest run its job type declares (``job_types``).
- Acknowledges outcomes in batches (``CompleteJobs``/``FailJobs``), up to
  ``worker_acks_in_flight`` calls at once: while they are in flight the next batch
  accumulates, so batches grow with load by themselves.
- Heartbeats all held leases in one call every third of the lease; a lease the server
  reports lost cancels its handler (the job was cancelled or taken over).
- Retryable failures are retried by the server after the delay this runtime picks:
  exponential backoff with full jitter, per job type (``@handler(retry_base_seconds=...)``).
- ``run(stop)``: when ``stop`` is set it stops claiming, gives back jobs it has not started,
  lets running handlers finish within the grace period, then cancels and releases the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from mediagrid.jobs.v1 import job_pb2, worker_service_pb2, worker_service_pb2_grpc

from common.grpc_errors import error_info
from common.resilience import backoff_delay
from common.settings import Settings
from services.jobs import job_types
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


class UnknownJobType(ValueError):
    """The worker was asked to run a job type that has no registered handler."""


class LeaseLost(Exception):
    """The server no longer holds this job for us (cancelled, finished or taken over)."""


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Entry:
    claimed: job_pb2.ClaimedJob
    lease: job_pb2.LeaseRef
    task: asyncio.Task[None] | None = None
    started: bool = False
    lost: bool = False
    last_progress: float = 0.0


@dataclass
class WorkerStats:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0


class _Context:
    """What a handler sees of its job (implements ``JobContext``)."""

    __slots__ = ("_entry", "_payload", "_runtime")

    def __init__(self, runtime: WorkerRuntime, entry: _Entry) -> None:
        self._runtime = runtime
        self._entry = entry
        payload = entry.claimed.job.payload
        self._payload: dict[str, Any] = json_format.MessageToDict(payload) if payload.fields else {}

    @property
    def name(self) -> str:
        return str(self._entry.claimed.job.name)

    @property
    def type(self) -> str:
        return str(self._entry.claimed.job.type)

    @property
    def payload(self) -> Mapping[str, Any]:
        return self._payload

    @property
    def attempt(self) -> int:
        return int(self._entry.claimed.job.attempts)

    @property
    def owner(self) -> str:
        return str(self._entry.claimed.job.owner)

    @property
    def resources(self) -> WorkerResources:
        return self._runtime.resources

    async def progress(self, percent: float, message: str = "") -> None:
        await self._runtime._progress(self._entry, percent, message)


class _Acker:
    """Collects outcomes and sends them in batches, ``worker_acks_in_flight`` calls at most.

    While those calls are in flight the next batch accumulates, so batches grow with load.
    """

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.completions: list[job_pb2.Completion] = []
        self.failures: list[job_pb2.Failure] = []
        self.pending = asyncio.Event()
        self.closing = False
        self._calls = asyncio.Semaphore(runtime.settings.worker_acks_in_flight)
        self._sending: set[asyncio.Task[None]] = set()

    def complete(self, lease: job_pb2.LeaseRef, result: struct_pb2.Struct | None) -> None:
        completion = job_pb2.Completion(lease=lease)
        if result is not None:
            completion.result.CopyFrom(result)
        self.completions.append(completion)
        self.pending.set()

    def fail(self, failure: job_pb2.Failure) -> None:
        self.failures.append(failure)
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

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._calls.release()
        if not task.cancelled() and (error := task.exception()) is not None:
            # _send handles every RPC error; anything else is a bug, and these outcomes are
            # left to their leases (the reaper returns the jobs to the queue).
            log.error("acknowledging outcomes failed", exc_info=error)

    def close(self) -> None:
        self.closing = True
        self.pending.set()

    async def _send_batch(
        self, completions: list[job_pb2.Completion], failures: list[job_pb2.Failure]
    ) -> None:
        if completions:
            await self._send_completions(completions)
        if failures:
            await self._send_failures(failures)

    async def _send_completions(self, items: list[job_pb2.Completion]) -> None:
        async def call(batch: list[job_pb2.Completion]) -> None:
            await self.runtime.stub.CompleteJobs(
                worker_service_pb2.CompleteJobsRequest(completions=batch),
                metadata=self.runtime.metadata,
            )
            self.runtime.stats.succeeded += len(batch)

        await self._send(items, call, lambda c: c.lease.job)

    async def _send_failures(self, items: list[job_pb2.Failure]) -> None:
        async def call(batch: list[job_pb2.Failure]) -> None:
            await self.runtime.stub.FailJobs(
                worker_service_pb2.FailJobsRequest(failures=batch), metadata=self.runtime.metadata
            )
            self.runtime.stats.failed += len(batch)

        await self._send(items, call, lambda f: f.lease.job)

    async def _send(self, items: list[Any], call: Any, job_of: Any) -> None:
        """Send ``items``; drop the ones whose lease was lost; retry transient errors."""
        delay = 0.05
        while items:
            try:
                await call(items)
                return
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                    info = error_info(exc)
                    meta = info.metadata if info else {}
                    gone = set((meta.get("lost_jobs") or meta.get("jobs") or "").split(","))
                    gone.discard("")
                    if not gone:  # cannot tell which: send one by one
                        await self._one_by_one(items, call)
                        return
                    kept = [item for item in items if job_of(item) not in gone]
                    self.runtime.stats.lost += len(items) - len(kept)
                    log.warning("%d outcome(s) not recorded: lease lost", len(items) - len(kept))
                    items = kept
                elif code in TRANSIENT:
                    log.warning("acknowledging %d job(s) failed (%s); retrying", len(items), code)
                    await asyncio.sleep(delay * random.random())
                    delay = min(delay * 2, 5.0)
                else:
                    log.error("acknowledging %d job(s) rejected: %s", len(items), exc.details())
                    return

    async def _one_by_one(self, items: list[Any], call: Any) -> None:
        for item in items:
            try:
                await call([item])
            except grpc.aio.AioRpcError as exc:
                self.runtime.stats.lost += 1
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
        self.stats = WorkerStats()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._entries: dict[str, _Entry] = {}
        self._room = asyncio.Event()
        self._asked = 0  # jobs requested by ClaimJobs calls in flight
        self._idle = False  # the last ClaimJobs call found no work
        self._stopping = False
        self._acker = _Acker(self)
        self._fatal: BaseException | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then stop gracefully; re-raises a fatal claim error."""
        claims = [
            asyncio.create_task(self._claim_loop(stop), name=f"worker-claim-{i}")
            for i in range(self.settings.worker_claims_in_flight)
        ]
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="worker-heartbeat")
        acker = asyncio.create_task(self._acker.run(), name="worker-ack")
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
            await acker
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        if self._fatal is not None:
            raise self._fatal

    async def _drain(self) -> None:
        """Release jobs not started, let started ones finish within the grace, release the rest."""
        waiting = [e for e in self._entries.values() if not e.started]
        for entry in waiting:
            if entry.task is not None:
                entry.task.cancel()
        await self._release(waiting)
        running = [e.task for e in self._entries.values() if e.task is not None and e.started]
        if running:
            _done, pending = await asyncio.wait(
                running, timeout=self.settings.worker_shutdown_grace_seconds
            )
            if pending:
                leftovers = [e for e in self._entries.values() if e.task in pending]
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                await self._release(leftovers)
        await asyncio.gather(*(e.task for e in waiting if e.task), return_exceptions=True)

    async def _release(self, entries: Sequence[_Entry]) -> None:
        leases = [e.lease for e in entries if not e.lost]
        for start in range(0, len(leases), MAX_PER_CALL):
            part = leases[start : start + MAX_PER_CALL]
            try:
                response = await self.stub.ReleaseJobs(
                    worker_service_pb2.ReleaseJobsRequest(leases=part), metadata=self.metadata
                )
                self.stats.released += response.released_count
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "could not release %d job(s) (their leases will expire): %s",
                    len(part),
                    exc.details(),
                )

    # --- claiming -----------------------------------------------------------------------

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        """One of ``worker_claims_in_flight`` loops: each asks for part of the free capacity."""
        delay = 0.05
        while not self._stopping:
            held = len(self._entries) + self._asked
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
            request.wait.FromNanoseconds(int(self.settings.worker_claim_wait_seconds * 1e9))
            self._asked += asked
            try:
                response = await self.stub.ClaimJobs(request, metadata=self.metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in TRANSIENT:
                    log.warning("claim failed (%s); retrying", exc.code())
                    await asyncio.sleep(delay * random.random())
                    delay = min(delay * 2, 5.0)
                    continue
                self._fatal = exc
                log.error("claim rejected, stopping: %s %s", exc.code(), exc.details())
                stop.set()
                return
            finally:
                self._asked -= asked
                self._room.set()  # what this call did not get is free again
            delay = 0.05
            self._idle = not response.jobs
            self.stats.claimed += len(response.jobs)
            for claimed in response.jobs:
                self._start(claimed)

    def _start(self, claimed: job_pb2.ClaimedJob) -> None:
        lease = job_pb2.LeaseRef(job=claimed.job.name, lease_id=claimed.lease_id)
        entry = _Entry(claimed=claimed, lease=lease)
        self._entries[claimed.job.name] = entry
        entry.task = asyncio.create_task(self._run_job(entry))

    # --- running ------------------------------------------------------------------------

    async def _run_job(self, entry: _Entry) -> None:
        try:
            async with self._slots:
                if self._stopping:
                    return  # released by _drain
                entry.started = True
                await self._execute(entry)
        except asyncio.CancelledError:
            pass  # lost lease or shutdown: _drain / the heartbeat decides what happens
        finally:
            self._entries.pop(entry.claimed.job.name, None)
            self._room.set()

    async def _execute(self, entry: _Entry) -> None:
        spec = self.handlers[entry.claimed.job.type]
        try:
            async with asyncio.timeout(spec.timeout_seconds):
                result = await spec.function(_Context(self, entry))
        except LeaseLost:
            return
        except PermanentJobError as exc:
            self._acker.fail(self._failure(entry, exc, retryable=False))
            return
        except TimeoutError:
            error = TimeoutError(f"handler timed out after {spec.timeout_seconds:.0f}s")
            self._acker.fail(self._failure(entry, error, retryable=True, spec=spec))
            return
        except Exception as exc:  # RetryableJobError and anything unexpected: retry
            self._acker.fail(self._failure(entry, exc, retryable=True, spec=spec))
            return
        try:
            struct = None
            if result:
                struct = struct_pb2.Struct()
                struct.update(dict(result))
        except (ValueError, TypeError, AttributeError) as exc:
            bad = PermanentJobError(f"the handler's result is not a JSON object: {exc}")
            self._acker.fail(self._failure(entry, bad, retryable=False))
            return
        self._acker.complete(entry.lease, struct)

    def _failure(
        self, entry: _Entry, exc: BaseException, *, retryable: bool, spec: HandlerSpec | None = None
    ) -> job_pb2.Failure:
        attempt = entry.claimed.job.attempts
        error = f"{type(exc).__name__}: {exc}"
        if retryable and spec is not None and spec.max_attempts and attempt >= spec.max_attempts:
            retryable = False
            error = f"attempts exhausted (handler allows {spec.max_attempts}); last error {error}"
        failure = job_pb2.Failure(lease=entry.lease, error=error[:8000], retryable=retryable)
        if retryable and spec is not None:
            delay = backoff_delay(max(attempt, 1), spec.retry_base_seconds, spec.retry_max_seconds)
            failure.retry_delay.FromNanoseconds(max(int(delay * 1e9), 1_000_000))
        log.info(
            "job %s attempt %d failed (%s): %s",
            entry.claimed.job.name,
            attempt,
            "retry" if retryable else "final",
            error,
        )
        return failure

    async def _progress(self, entry: _Entry, percent: float, message: str) -> None:
        now = time.monotonic()
        if (
            percent < 100
            and now - entry.last_progress < self.settings.worker_progress_interval_seconds
        ):
            return
        entry.last_progress = now
        request = worker_service_pb2.ReportProgressRequest(
            lease=entry.lease, percent=max(0.0, min(100.0, percent)), message=message[:1000]
        )
        try:
            await self.stub.ReportProgress(request, metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                entry.lost = True
                raise LeaseLost(entry.claimed.job.name) from None
            log.warning("progress report of %s failed: %s", entry.claimed.job.name, exc.code())

    # --- heartbeats ---------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.job_lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            await self.heartbeat_once()

    async def heartbeat_once(self) -> None:
        entries = list(self._entries.values())
        for start in range(0, len(entries), MAX_PER_CALL):
            part = entries[start : start + MAX_PER_CALL]
            request = worker_service_pb2.HeartbeatRequest(
                worker_id=self.worker_id, leases=[e.lease for e in part]
            )
            try:
                response = await self.stub.Heartbeat(request, metadata=self.metadata)
            except grpc.aio.AioRpcError as exc:
                log.warning("heartbeat failed: %s", exc.code())
                continue
            self._lost(response.lost)

    def _lost(self, lost: Iterable[job_pb2.LeaseRef]) -> None:
        for lease in lost:
            entry = self._entries.get(lease.job)
            if entry is not None and entry.lease.lease_id == lease.lease_id:
                entry.lost = True
                self.stats.lost += 1
                log.warning("lease of %s lost; stopping its handler", lease.job)
                if entry.task is not None:
                    entry.task.cancel()

    @property
    def in_flight(self) -> int:
        return len(self._entries)
