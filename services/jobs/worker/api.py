"""The contract between the worker runtime and job handlers.

A handler is an async function registered for a job type::

    @handler("video.probe", timeout_seconds=300)
    async def probe(job: JobContext) -> dict[str, Any]:
        await job.progress(10, "reading header")
        ...
        return {"duration_seconds": 2.0}   # becomes the job's result (a protobuf Struct)

Raise ``PermanentJobError`` for failures that retrying cannot fix (the job ends FAILED/DEAD
without further attempts) and ``RetryableJobError`` (or any other exception) for failures
that may pass (retried with backoff while attempts remain).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from common.aws import AwsClients
from common.settings import Settings


class PermanentJobError(Exception):
    """The job cannot succeed; do not retry it."""


class RetryableJobError(Exception):
    """The job failed for a reason that may pass; retry it with backoff."""


@dataclass
class WorkerResources:
    """Process-wide resources a handler may use; created once by the worker runtime."""

    settings: Settings
    aws: AwsClients
    # Channel to a service of the suite by name ("files", "jobs", "users").
    channel: Callable[[str], grpc.aio.Channel]
    # Call metadata carrying the worker's own bearer token, for calls to other services.
    call_metadata: tuple[tuple[str, str], ...]


class JobContext(Protocol):
    """What a handler sees of the job it runs."""

    @property
    def name(self) -> str:
        """Resource name, ``jobs/{job}``."""

    @property
    def type(self) -> str: ...

    @property
    def payload(self) -> Mapping[str, Any]: ...

    @property
    def attempt(self) -> int:
        """1 for the first run, 2 for the first retry, ..."""

    @property
    def owner(self) -> str:
        """``users/{user}`` who created the job."""

    @property
    def resources(self) -> WorkerResources: ...

    async def progress(self, percent: float, message: str = "") -> None:
        """Report progress (0-100); rate-limited by the runtime.

        Raises ``LeaseLost`` (an ``asyncio.CancelledError``) once the server no longer holds
        the job for this attempt: the handler should stop, its outcome is not reported.
        """


Handler = Callable[[JobContext], Awaitable[Mapping[str, Any] | None]]


@dataclass(frozen=True)
class HandlerSpec:
    type: str
    function: Handler
    timeout_seconds: float
    max_attempts: int | None  # None: use the job's own max_attempts
    # Retry backoff of this type: min(retry_max, retry_base * 2^(attempt-1)) with full jitter.
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0


HANDLERS: dict[str, HandlerSpec] = {}


def handler(
    job_type: str,
    *,
    timeout_seconds: float = 600.0,
    max_attempts: int | None = None,
    retry_base_seconds: float = 1.0,
    retry_max_seconds: float = 300.0,
) -> Callable[[Handler], Handler]:
    """Register ``function`` as the handler of ``job_type`` (one handler per type)."""

    def register(function: Handler) -> Handler:
        if job_type in HANDLERS and HANDLERS[job_type].function is not function:
            raise ValueError(f"a handler for {job_type!r} is already registered")
        HANDLERS[job_type] = HandlerSpec(
            job_type,
            function,
            timeout_seconds,
            max_attempts,
            retry_base_seconds,
            retry_max_seconds,
        )
        return function

    return register
