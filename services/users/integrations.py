"""Adapters from the users service's ports to the jobs and files services over gRPC.

- ``GrpcUsageSource`` answers ``GetUserStats``: the caller's token is forwarded, so the jobs
  and files services apply their own access rules to what they report.
- ``JobPurger`` schedules removal of a deleted user's data as a ``users.purge`` job, created
  with the users service's own service account (``SYSTEM_ACCOUNT_EMAIL``, which holds the
  literal grant ``jobs.create:job-types/users.purge`` that makes it the owner of that type;
  the sweep retries it without a caller). The job's handler (``services/users/handlers.py``)
  runs in a worker, checks that the user is deleted, and calls ``JobService/DeleteUserJobs``
  and ``FileService/DeleteUserFiles``.

Every call goes through the peer's dependency (``common.peer_calls``): bounded, refused at
once while the peer's breaker is open, UNAVAILABLE ``DEPENDENCY_UNAVAILABLE`` naming the
peer when it is down.
"""

from __future__ import annotations

import grpc
from mediagrid.files.v1 import file_service_pb2, file_service_pb2_grpc

from common.app import AppContext
from common.auth import job_type_grant
from common.errors import Unauthenticated
from common.grpc_errors import from_rpc_error
from common.interceptors import outgoing_metadata
from common.peer_calls import call_peer
from services.jobs.client import JobsClient
from services.users.bootstrap import ServiceToken, issue_service_token
from services.users.job_types import PURGE_JOB
from services.users.usage import FILES_SERVICE, JOBS_SERVICE, FileUsage

# The service account the users service acts as when nobody is calling (sweeps, purges).
SYSTEM_ACCOUNT_EMAIL = "users-service@example.com"
# The peers, as named in ``ctx.addresses`` and ``ctx.dependencies.peer(...)``.
JOBS = "jobs"
FILES = "files"


def _caller_metadata() -> tuple[tuple[str, str], ...]:
    """The caller's token and the request id, for a call made on the caller's behalf."""
    metadata = outgoing_metadata()
    if not any(key == "authorization" for key, _ in metadata):
        raise Unauthenticated("no caller token to forward", reason="MISSING_TOKEN")
    return metadata


class GrpcUsageSource:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    async def job_counts(self, user: str) -> dict[str, int]:
        channel = self.ctx.peer_channel(JOBS, JOBS_SERVICE)
        metadata = _caller_metadata()
        try:
            counts = await call_peer(
                self.ctx.dependencies.peer(JOBS),
                lambda timeout: JobsClient(channel, metadata, timeout=timeout).get_job_counts(user),
                what="GetJobCounts",
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc
        return counts

    async def file_usage(self, user: str) -> FileUsage:
        stub = file_service_pb2_grpc.FileServiceStub(self.ctx.peer_channel(FILES, FILES_SERVICE))
        request = file_service_pb2.GetUserUsageRequest(user=user)
        metadata = _caller_metadata()
        try:
            response = await call_peer(
                self.ctx.dependencies.peer(FILES),
                lambda timeout: stub.GetUserUsage(request, metadata=metadata, timeout=timeout),
                what="GetUserUsage",
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc
        return FileUsage(file_count=response.file_count, total_bytes=response.total_bytes)


def system_token(ctx: AppContext) -> ServiceToken:
    """The users service's own identity: the account that owns the ``users.purge`` job type."""

    async def obtain() -> str:
        return await issue_service_token(ctx, SYSTEM_ACCOUNT_EMAIL, [job_type_grant(PURGE_JOB)])

    return ServiceToken(obtain)


class JobPurger:
    """Enqueues ``users.purge`` for a deleted user (idempotent per user)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.identity = system_token(ctx)

    async def purge(self, user: str) -> None:
        channel = self.ctx.peer_channel(JOBS, JOBS_SERVICE)
        jobs = self.ctx.dependencies.peer(JOBS)
        await self.identity.call(
            lambda metadata: call_peer(
                jobs,
                # Idempotent (request_id): a call cut short by the bound may be made again.
                lambda timeout: JobsClient(channel, timeout=timeout).create_job(
                    PURGE_JOB,
                    {"user": user},
                    request_id=f"{PURGE_JOB}:{user}",
                    max_attempts=10,
                    metadata=metadata,
                ),
                what="CreateJob",
            )
        )
