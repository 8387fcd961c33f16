"""Worker handler for ``users.purge``: removes a deleted user's data in the other services.

Payload: ``{"user": "users/{id}"}``. The handler never trusts the payload: before deleting
anything it asks the users service (with the worker's own token) whether that user exists and
is DELETED; any other answer ends the job for good with nothing deleted. Both deleting calls
are idempotent, so a retried job is safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
from mediagrid.files.v1 import file_service_pb2, file_service_pb2_grpc
from mediagrid.users.v1 import user_service_pb2, user_service_pb2_grpc

from common.grpc_errors import from_rpc_error
from services.jobs.client import JobsClient
from services.jobs.worker.api import JobContext, PermanentJobError, handler
from services.users.validation import ME, USER_NAME_RE

LOOKUP_TIMEOUT_SECONDS = 30.0


async def require_deleted_user(job: JobContext, user: str) -> None:
    """PermanentJobError unless ``user`` exists and is DELETED (asked of the users service)."""
    resources = job.resources
    stub = user_service_pb2_grpc.UserServiceStub(resources.channel("users"))
    try:
        response = await stub.GetUser(
            user_service_pb2.GetUserRequest(name=user),
            metadata=resources.call_metadata,
            timeout=LOOKUP_TIMEOUT_SECONDS,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            raise PermanentJobError(f"{user} does not exist; nothing purged") from exc
        raise from_rpc_error(exc) from exc  # unavailable, ...: retried with backoff
    if response.user.status != user_service_pb2.USER_STATUS_DELETED:
        status = user_service_pb2.UserStatus.Name(response.user.status)
        raise PermanentJobError(f"{user} is not deleted ({status}); nothing purged")


@handler("users.purge", timeout_seconds=3600)
async def purge_user_data(job: JobContext) -> Mapping[str, Any]:
    user = job.payload.get("user")
    # users/{id} exactly: "users/me" would name the worker itself.
    if not isinstance(user, str) or not USER_NAME_RE.fullmatch(user) or user == f"users/{ME}":
        raise PermanentJobError(f"payload.user must be 'users/{{id}}', got {user!r}")
    await require_deleted_user(job, user)
    resources = job.resources
    try:
        jobs = await JobsClient(
            resources.channel("jobs"), resources.call_metadata
        ).delete_user_jobs(user)
        await job.progress(50, "jobs removed")
        files = await file_service_pb2_grpc.FileServiceStub(
            resources.channel("files")
        ).DeleteUserFiles(
            file_service_pb2.DeleteUserFilesRequest(user=user), metadata=resources.call_metadata
        )
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from exc
    await job.progress(100, "files removed")
    return {"user": user, "files_deleted": files.deleted_count, "jobs": str(jobs).strip()}
