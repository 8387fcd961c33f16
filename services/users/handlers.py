"""Worker handler for ``users.purge``: removes a deleted user's data in the other services.

Payload: ``{"user": "users/{id}"}``. Both calls are idempotent, so a retried job is safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
from mediagrid.files.v1 import files_pb2, files_pb2_grpc

from common.grpc_errors import from_rpc_error
from services.jobs.client import JobsClient
from services.jobs.worker.api import JobContext, PermanentJobError, handler


@handler("users.purge", timeout_seconds=3600)
async def purge_user_data(job: JobContext) -> Mapping[str, Any]:
    user = job.payload.get("user")
    if not isinstance(user, str) or not user.startswith("users/"):
        raise PermanentJobError(f"payload.user must be 'users/{{id}}', got {user!r}")
    resources = job.resources
    try:
        jobs = await JobsClient(
            resources.channel("jobs"), resources.call_metadata
        ).delete_user_jobs(user)
        await job.progress(50, "jobs removed")
        files = await files_pb2_grpc.FileServiceStub(resources.channel("files")).DeleteUserFiles(
            files_pb2.DeleteUserFilesRequest(user=user), metadata=resources.call_metadata
        )
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from exc
    await job.progress(100, "files removed")
    return {"user": user, "files_deleted": files.deleted_count, "jobs": str(jobs).strip()}
