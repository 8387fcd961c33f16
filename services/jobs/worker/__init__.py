"""Worker runtime: claims jobs over gRPC and runs registered async handlers."""

from services.jobs.worker.api import (
    HANDLERS,
    HandlerSpec,
    JobContext,
    PermanentJobError,
    RetryableJobError,
    WorkerResources,
    handler,
)

__all__ = [
    "HANDLERS",
    "HandlerSpec",
    "JobContext",
    "PermanentJobError",
    "RetryableJobError",
    "WorkerResources",
    "handler",
]
