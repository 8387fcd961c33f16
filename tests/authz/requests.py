"""One small request per row of the authorization matrix (``matrix.toml``).

``REQUESTS["Service/Method"]`` (or ``"Service/Method#variant"``) makes the call for a cell:
``await REQUESTS[key](cell, metadata)`` returns normally when the RPC answered OK and raises
``grpc.aio.AioRpcError`` otherwise. Each request names the cell owner's resources (made on
first use by ``Cell``), so the caller kind alone decides the outcome.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from google.protobuf import field_mask_pb2, struct_pb2
from mediagrid.files.v1 import file_pb2, file_service_pb2, video_service_pb2
from mediagrid.jobs.v1 import job_pb2, job_service_pb2, worker_service_pb2
from mediagrid.users.v1 import user_service_pb2 as users_pb2

from services.files.keys import new_id
from services.jobs.models import JobSpec
from tests.authz.world import FAKE_MP4, OWNING_SERVICE, PASSWORD, Cell, Metadata

Request = Callable[[Cell, Metadata], Awaitable[Any]]
REQUESTS: dict[str, Request] = {}


def rpc(key: str) -> Callable[[Request], Request]:
    def register(fn: Request) -> Request:
        assert key not in REQUESTS, key
        REQUESTS[key] = fn
        return fn

    return register


# --- calling conventions of the streaming RPCs ---------------------------------------------


async def drain(call: Any) -> None:
    """Read a server stream to its end (its status is raised here)."""
    async for _ in call:
        pass


async def first(call: Any) -> None:
    """Read one message of a watch stream (proof of access), then stop watching."""
    async for _ in call:
        break
    call.cancel()


async def stream(call: Any, messages: Iterable[Any]) -> None:
    """Send ``messages`` on a client stream and read every answer.

    A write that loses the race with the server's status fails; the status read after it
    is what counts.
    """
    try:
        for message in messages:
            await call.write(message)
        await call.done_writing()
    except Exception:  # the server already ended the call; its status is read below
        pass
    while await call.read() is not grpc.aio.EOF:
        pass
    code = await call.code()
    if code != grpc.StatusCode.OK:  # a status without details when nothing was read
        raise grpc.aio.AioRpcError(
            code, await call.initial_metadata(), await call.trailing_metadata()
        )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload_messages(**header: Any) -> list[file_service_pb2.UploadRequest]:
    data = b"new bytes"
    header.setdefault("display_name", "n.bin")
    header.setdefault("content_type", "application/octet-stream")
    return [
        file_service_pb2.UploadRequest(header=file_pb2.UploadHeader(**header)),
        file_service_pb2.UploadRequest(data=data),
    ]


def url_header(**header: Any) -> file_pb2.UploadHeader:
    header.setdefault("display_name", "u.bin")
    return file_pb2.UploadHeader(size_bytes=1, sha256=sha256(b"x"), **header)


# --- UserService ----------------------------------------------------------------------------


@rpc("UserService/CreateUser")
async def create_user(c: Cell, md: Metadata) -> Any:
    user = users_pb2.User(email=f"created-{c.tag}@example.com", role=users_pb2.ROLE_USER)
    request = users_pb2.CreateUserRequest(user=user, password="a long and fine passphrase")
    return await c.world.users.CreateUser(request, metadata=md)


@rpc("UserService/GetUser")
async def get_user(c: Cell, md: Metadata) -> Any:
    return await c.world.users.GetUser(users_pb2.GetUserRequest(name=c.owner.name), metadata=md)


def _update(c: Cell, path: str, **fields: Any) -> users_pb2.UpdateUserRequest:
    return users_pb2.UpdateUserRequest(
        user=users_pb2.User(name=c.owner.name, **fields),
        update_mask=field_mask_pb2.FieldMask(paths=[path]),
    )


@rpc("UserService/UpdateUser")
async def update_user(c: Cell, md: Metadata) -> Any:
    request = _update(c, "display_name", display_name="changed")
    return await c.world.users.UpdateUser(request, metadata=md)


@rpc("UserService/UpdateUser#role")
async def update_user_role(c: Cell, md: Metadata) -> Any:
    request = _update(c, "role", role=users_pb2.ROLE_ADMIN)
    return await c.world.users.UpdateUser(request, metadata=md)


@rpc("UserService/DeleteUser")
async def delete_user(c: Cell, md: Metadata) -> Any:
    request = users_pb2.DeleteUserRequest(name=c.owner.name)
    return await c.world.users.DeleteUser(request, metadata=md)


@rpc("UserService/ListUsers")
async def list_users(c: Cell, md: Metadata) -> Any:
    return await c.world.users.ListUsers(users_pb2.ListUsersRequest(page_size=5), metadata=md)


@rpc("UserService/ChangePassword")
async def change_password(c: Cell, md: Metadata) -> Any:
    request = users_pb2.ChangePasswordRequest(
        name=c.owner.name, current_password=PASSWORD, new_password="another fine passphrase"
    )
    return await c.world.users.ChangePassword(request, metadata=md)


@rpc("UserService/Login")
async def login(c: Cell, md: Metadata) -> Any:
    request = users_pb2.LoginRequest(email=c.owner.email, password=PASSWORD)
    return await c.world.users.Login(request, metadata=md)


@rpc("UserService/Logout")
async def logout(c: Cell, md: Metadata) -> Any:
    return await c.world.users.Logout(users_pb2.LogoutRequest(), metadata=md)


@rpc("UserService/Authenticate")
async def authenticate(c: Cell, md: Metadata) -> Any:
    request = users_pb2.AuthenticateRequest(token=c.owner_token)
    return await c.world.users.Authenticate(request, metadata=md)


@rpc("UserService/ListSessions")
async def list_sessions(c: Cell, md: Metadata) -> Any:
    request = users_pb2.ListSessionsRequest(parent=c.owner.name)
    return await c.world.users.ListSessions(request, metadata=md)


@rpc("UserService/RevokeSession")
async def revoke_session(c: Cell, md: Metadata) -> Any:
    request = users_pb2.RevokeSessionRequest(name=c.owner_session)
    return await c.world.users.RevokeSession(request, metadata=md)


async def _grant(c: Cell, md: Metadata, permission: str, resource: str) -> Any:
    request = users_pb2.GrantPermissionRequest(
        parent=c.owner.name, permission=permission, resource=resource
    )
    return await c.world.users.GrantPermission(request, metadata=md)


@rpc("UserService/GrantPermission")
async def grant_permission(c: Cell, md: Metadata) -> Any:
    return await _grant(c, md, "files.read", f"files/{c.tag}")


@rpc("UserService/GrantPermission#admin_only")
async def grant_admin_only(c: Cell, md: Metadata) -> Any:
    return await _grant(c, md, "users.create", "*")


@rpc("UserService/GrantPermission#user_only")
async def grant_user_only(c: Cell, md: Metadata) -> Any:
    return await _grant(c, md, "sessions.read", "users/*")


@rpc("UserService/GrantPermission#job_type")
async def grant_job_type(c: Cell, md: Metadata) -> Any:
    return await _grant(c, md, "jobs.create", "job-types/users.purge")


@rpc("UserService/RevokePermission")
async def revoke_permission(c: Cell, md: Metadata) -> Any:
    request = users_pb2.RevokePermissionRequest(name=await c.grant())
    return await c.world.users.RevokePermission(request, metadata=md)


@rpc("UserService/ListPermissions")
async def list_permissions(c: Cell, md: Metadata) -> Any:
    await c.grant()
    request = users_pb2.ListPermissionsRequest(parent=c.owner.name)
    return await c.world.users.ListPermissions(request, metadata=md)


@rpc("UserService/CheckPermission")
async def check_permission(c: Cell, md: Metadata) -> Any:
    request = users_pb2.CheckPermissionRequest(
        principal=c.owner.name, permission="files.read", resource=f"files/{c.tag}"
    )
    return await c.world.users.CheckPermission(request, metadata=md)


@rpc("UserService/RecordActivity")
async def record_activity(c: Cell, md: Metadata) -> Any:
    request = users_pb2.RecordActivityRequest(action="files.read", resource=f"files/{c.tag}")
    return await c.world.users.RecordActivity(request, metadata=md)


@rpc("UserService/RecordActivity#actor")
async def record_activity_as_owner(c: Cell, md: Metadata) -> Any:
    request = users_pb2.RecordActivityRequest(
        action="files.read", resource=f"files/{c.tag}", actor=c.owner.name
    )
    return await c.world.users.RecordActivity(request, metadata=md)


@rpc("UserService/ListActivity")
async def list_activity(c: Cell, md: Metadata) -> Any:
    await c.activity()
    request = users_pb2.ListActivityRequest(parent=c.owner.name)
    return await c.world.users.ListActivity(request, metadata=md)


@rpc("UserService/CreateApiKey")
async def create_api_key(c: Cell, md: Metadata) -> Any:
    request = users_pb2.CreateApiKeyRequest(
        parent=c.world.owning_service.name, api_key=users_pb2.ApiKey(display_name=c.tag)
    )
    return await c.world.users.CreateApiKey(request, metadata=md)


@rpc("UserService/CreateApiKey#not_service")
async def create_api_key_for_a_person(c: Cell, md: Metadata) -> Any:
    request = users_pb2.CreateApiKeyRequest(parent=c.owner.name)
    return await c.world.users.CreateApiKey(request, metadata=md)


@rpc("UserService/ListApiKeys")
async def list_api_keys(c: Cell, md: Metadata) -> Any:
    request = users_pb2.ListApiKeysRequest(parent=c.world.owning_service.name)
    return await c.world.users.ListApiKeys(request, metadata=md)


@rpc("UserService/RevokeApiKey")
async def revoke_api_key(c: Cell, md: Metadata) -> Any:
    request = users_pb2.RevokeApiKeyRequest(name=await c.api_key())
    return await c.world.users.RevokeApiKey(request, metadata=md)


@rpc("UserService/GetUserStats")
async def get_user_stats(c: Cell, md: Metadata) -> Any:
    request = users_pb2.GetUserStatsRequest(name=c.owner.name)
    return await c.world.users.GetUserStats(request, metadata=md)


# --- JobService -----------------------------------------------------------------------------

NOOP = job_pb2.JobSpec(type="noop")


async def create_job(c: Cell, md: Metadata, spec: job_pb2.JobSpec, **fields: Any) -> Any:
    request = job_service_pb2.CreateJobRequest(job=spec, **fields)
    return await c.world.jobs.CreateJob(request, metadata=md)


@rpc("JobService/CreateJob")
async def create_noop(c: Cell, md: Metadata) -> Any:
    return await create_job(c, md, NOOP)


@rpc("JobService/CreateJob#owner")
async def create_job_for_owner(c: Cell, md: Metadata) -> Any:
    return await create_job(c, md, NOOP, owner=c.owner.name)


@rpc("JobService/CreateJob#batch")
async def create_job_in_batch(c: Cell, md: Metadata) -> Any:
    return await create_job(c, md, NOOP, batch=await c.batch())


@rpc("JobService/CreateJob#service_priority")
async def create_job_at_service_priority(c: Cell, md: Metadata) -> Any:
    return await create_job(c, md, job_pb2.JobSpec(type="noop", priority=500))


@rpc("JobService/CreateJob#unknown_type")
async def create_unknown_type(c: Cell, md: Metadata) -> Any:
    return await create_job(c, md, job_pb2.JobSpec(type="authz.no-such-type"))


async def create_job_of_type(
    c: Cell, caller: str, md: Metadata, job_type: str, payload: dict[str, Any]
) -> Any:
    """A job of ``job_type`` (a row of ``[job_type]``); the owning service acts for the owner."""
    values = await _payload_values(c, payload)
    body = struct_pb2.Struct()
    body.update({k: v.format(**values) if isinstance(v, str) else v for k, v in payload.items()})
    owner = c.owner.name if caller == OWNING_SERVICE else ""
    return await create_job(c, md, job_pb2.JobSpec(type=job_type, payload=body), owner=owner)


async def _payload_values(c: Cell, payload: dict[str, Any]) -> dict[str, str]:
    """What a payload template of matrix.toml may name: the owner and the owner's video."""
    values = {"owner": c.owner.name}
    if any("{file}" in str(v) or "{key}" in str(v) for v in payload.values()):
        video = await c.video()
        record = await c.world.video_repo.get_video(video.name.removeprefix("files/"))
        values.update(
            file=video.name,
            bucket=record.bucket,
            key=record.object_key,
            version_id=record.version_id or "",
        )
    return values


@rpc("JobService/GetJob")
async def get_job(c: Cell, md: Metadata) -> Any:
    return await c.world.jobs.GetJob(job_service_pb2.GetJobRequest(name=await c.job()), metadata=md)


@rpc("JobService/ListJobs")
async def list_jobs(c: Cell, md: Metadata) -> Any:
    return await c.world.jobs.ListJobs(job_service_pb2.ListJobsRequest(), metadata=md)


@rpc("JobService/ListJobs#owner")
async def list_owner_jobs(c: Cell, md: Metadata) -> Any:
    request = job_service_pb2.ListJobsRequest(owner=c.owner.name)
    return await c.world.jobs.ListJobs(request, metadata=md)


@rpc("JobService/CancelJob")
async def cancel_job(c: Cell, md: Metadata) -> Any:
    request = job_service_pb2.CancelJobRequest(name=await c.job())
    return await c.world.jobs.CancelJob(request, metadata=md)


@rpc("JobService/RetryJob")
async def retry_job(c: Cell, md: Metadata) -> Any:
    request = job_service_pb2.RetryJobRequest(name=await c.cancelled_job())
    return await c.world.jobs.RetryJob(request, metadata=md)


@rpc("JobService/WatchJob")
async def watch_job(c: Cell, md: Metadata) -> Any:
    request = job_service_pb2.WatchJobRequest(name=await c.job())
    return await first(c.world.jobs.WatchJob(request, metadata=md))


@rpc("JobService/CreateBatch")
async def create_batch(c: Cell, md: Metadata) -> Any:
    request = job_service_pb2.CreateBatchRequest(jobs=[NOOP])
    return await c.world.jobs.CreateBatch(request, metadata=md)


@rpc("JobService/CreateBatch#internal_type")
async def create_batch_of_internal_type(c: Cell, md: Metadata) -> Any:
    payload = struct_pb2.Struct()
    payload.update({"user": c.owner.name})
    spec = job_pb2.JobSpec(type="users.purge", payload=payload)
    request = job_service_pb2.CreateBatchRequest(jobs=[NOOP, spec])
    return await c.world.jobs.CreateBatch(request, metadata=md)


@rpc("JobService/GetBatch")
async def get_batch(c: Cell, md: Metadata) -> Any:
    request = job_service_pb2.GetBatchRequest(name=await c.batch())
    return await c.world.jobs.GetBatch(request, metadata=md)


@rpc("JobService/CancelBatch")
async def cancel_batch(c: Cell, md: Metadata) -> Any:
    request = job_service_pb2.CancelBatchRequest(name=await c.batch())
    return await c.world.jobs.CancelBatch(request, metadata=md)


@rpc("JobService/WatchBatch")
async def watch_batch(c: Cell, md: Metadata) -> Any:
    request = job_service_pb2.WatchBatchRequest(name=await c.batch())
    return await first(c.world.jobs.WatchBatch(request, metadata=md))


@rpc("JobService/GetQueueStats")
async def get_queue_stats(c: Cell, md: Metadata) -> Any:
    request = job_service_pb2.GetQueueStatsRequest()
    return await c.world.jobs.GetQueueStats(request, metadata=md)


@rpc("JobService/PurgeJobs")
async def purge_jobs(c: Cell, md: Metadata) -> Any:
    return await c.world.jobs.PurgeJobs(job_service_pb2.PurgeJobsRequest(), metadata=md)


@rpc("JobService/GetJobCounts")
async def get_job_counts(c: Cell, md: Metadata) -> Any:
    request = job_service_pb2.GetJobCountsRequest(owner=c.owner.name)
    return await c.world.jobs.GetJobCounts(request, metadata=md)


@rpc("JobService/DeleteUserJobs")
async def delete_user_jobs(c: Cell, md: Metadata) -> Any:
    await c.job()
    request = job_service_pb2.DeleteUserJobsRequest(owner=c.owner.name)
    return await c.world.jobs.DeleteUserJobs(request, metadata=md)


# --- WorkerService --------------------------------------------------------------------------

W = worker_service_pb2


@rpc("WorkerService/ClaimJobs")
async def claim_jobs(c: Cell, md: Metadata) -> Any:
    # Something to claim, of a type no other cell uses.
    spec = JobSpec(type=c.lease_type(), max_attempts=3)
    await c.world.job_repo.create_job(c.owner.name, spec, None)
    request = W.ClaimJobsRequest(worker_id="authz", types=[c.lease_type()], max_jobs=1)
    return await c.world.workers.ClaimJobs(request, metadata=md)


@rpc("WorkerService/Heartbeat")
async def heartbeat(c: Cell, md: Metadata) -> Any:
    request = W.HeartbeatRequest(worker_id="authz-worker", leases=[await c.lease()])
    return await c.world.workers.Heartbeat(request, metadata=md)


@rpc("WorkerService/ReportProgress")
async def report_progress(c: Cell, md: Metadata) -> Any:
    request = W.ReportProgressRequest(lease=await c.lease(), percent=10, message="halfway")
    return await c.world.workers.ReportProgress(request, metadata=md)


@rpc("WorkerService/CompleteJob")
async def complete_job(c: Cell, md: Metadata) -> Any:
    request = W.CompleteJobRequest(lease=await c.lease())
    return await c.world.workers.CompleteJob(request, metadata=md)


@rpc("WorkerService/FailJob")
async def fail_job(c: Cell, md: Metadata) -> Any:
    request = W.FailJobRequest(lease=await c.lease(), error="failed on purpose")
    return await c.world.workers.FailJob(request, metadata=md)


@rpc("WorkerService/CompleteJobs")
async def complete_jobs(c: Cell, md: Metadata) -> Any:
    request = W.CompleteJobsRequest(completions=[job_pb2.Completion(lease=await c.lease())])
    return await c.world.workers.CompleteJobs(request, metadata=md)


@rpc("WorkerService/FailJobs")
async def fail_jobs(c: Cell, md: Metadata) -> Any:
    failure = job_pb2.Failure(lease=await c.lease(), error="failed on purpose")
    return await c.world.workers.FailJobs(W.FailJobsRequest(failures=[failure]), metadata=md)


@rpc("WorkerService/ReleaseJobs")
async def release_jobs(c: Cell, md: Metadata) -> Any:
    request = W.ReleaseJobsRequest(leases=[await c.lease()])
    return await c.world.workers.ReleaseJobs(request, metadata=md)


# --- FileService ----------------------------------------------------------------------------

F = file_service_pb2


@rpc("FileService/GetFile")
async def get_file(c: Cell, md: Metadata) -> Any:
    file = await c.file()
    return await c.world.files.GetFile(F.GetFileRequest(name=file.name), metadata=md)


@rpc("FileService/ListFiles")
async def list_files(c: Cell, md: Metadata) -> Any:
    await c.file()
    return await c.world.files.ListFiles(F.ListFilesRequest(parent=c.owner.name), metadata=md)


@rpc("FileService/UpdateFile")
async def update_file(c: Cell, md: Metadata) -> Any:
    file = await c.file()
    request = F.UpdateFileRequest(
        file=file_pb2.File(name=file.name, labels={"by": "authz"}),
        update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
    )
    return await c.world.files.UpdateFile(request, metadata=md)


@rpc("FileService/DeleteFile")
async def delete_file(c: Cell, md: Metadata) -> Any:
    file = await c.file()
    return await c.world.files.DeleteFile(F.DeleteFileRequest(name=file.name), metadata=md)


@rpc("FileService/DeleteFile#purge")
async def purge_file(c: Cell, md: Metadata) -> Any:
    file = await c.file()
    request = F.DeleteFileRequest(name=file.name, purge=True)
    return await c.world.files.DeleteFile(request, metadata=md)


@rpc("FileService/Upload")
async def upload_new(c: Cell, md: Metadata) -> Any:
    return await stream(c.world.files.Upload(metadata=md), upload_messages())


@rpc("FileService/Upload#parent")
async def upload_version(c: Cell, md: Metadata) -> Any:
    file = await c.file()
    return await stream(c.world.files.Upload(metadata=md), upload_messages(parent=file.name))


@rpc("FileService/Upload#job")
async def upload_for_job(c: Cell, md: Metadata) -> Any:
    job = await c.job()
    return await stream(c.world.files.Upload(metadata=md), upload_messages(job=job))


@rpc("FileService/Upload#resume")
async def upload_resume(c: Cell, md: Metadata) -> Any:
    data = b"resumed bytes"
    upload = await c.broken_upload(data)
    messages = [
        file_service_pb2.UploadRequest(header=file_pb2.UploadHeader(upload=upload, offset=0)),
        file_service_pb2.UploadRequest(data=data),
    ]
    return await stream(c.world.files.Upload(metadata=md), messages)


@rpc("FileService/GetUploadStatus")
async def get_upload_status(c: Cell, md: Metadata) -> Any:
    request = F.GetUploadStatusRequest(name=await c.upload_session())
    return await c.world.files.GetUploadStatus(request, metadata=md)


@rpc("FileService/CancelUpload")
async def cancel_upload(c: Cell, md: Metadata) -> Any:
    request = F.CancelUploadRequest(name=await c.upload_session())
    return await c.world.files.CancelUpload(request, metadata=md)


@rpc("FileService/Download")
async def download(c: Cell, md: Metadata) -> Any:
    file = await c.file()
    return await drain(c.world.files.Download(F.DownloadRequest(name=file.name), metadata=md))


@rpc("FileService/CreateDownloadUrl")
async def create_download_url(c: Cell, md: Metadata) -> Any:
    file = await c.file()
    request = F.CreateDownloadUrlRequest(name=file.name)
    return await c.world.files.CreateDownloadUrl(request, metadata=md)


@rpc("FileService/CreateUploadUrl")
async def create_upload_url(c: Cell, md: Metadata) -> Any:
    request = F.CreateUploadUrlRequest(header=url_header())
    return await c.world.files.CreateUploadUrl(request, metadata=md)


@rpc("FileService/CreateUploadUrl#parent")
async def create_upload_url_version(c: Cell, md: Metadata) -> Any:
    file = await c.file()
    request = F.CreateUploadUrlRequest(header=url_header(parent=file.name))
    return await c.world.files.CreateUploadUrl(request, metadata=md)


@rpc("FileService/CreateUploadUrl#job")
async def create_upload_url_for_job(c: Cell, md: Metadata) -> Any:
    request = F.CreateUploadUrlRequest(header=url_header(job=await c.job()))
    return await c.world.files.CreateUploadUrl(request, metadata=md)


@rpc("FileService/CompleteUrlUpload")
async def complete_url_upload(c: Cell, md: Metadata) -> Any:
    request = F.CompleteUrlUploadRequest(upload=await c.upload_session(with_bytes=True))
    return await c.world.files.CompleteUrlUpload(request, metadata=md)


@rpc("FileService/ListFileVersions")
async def list_file_versions(c: Cell, md: Metadata) -> Any:
    file = await c.file()
    request = F.ListFileVersionsRequest(name=file.name)
    return await c.world.files.ListFileVersions(request, metadata=md)


@rpc("FileService/RestoreFileVersion")
async def restore_file_version(c: Cell, md: Metadata) -> Any:
    file = await c.file()
    request = F.RestoreFileVersionRequest(name=file.name, version_id=file.version_id)
    return await c.world.files.RestoreFileVersion(request, metadata=md)


@rpc("FileService/ShareFile")
async def share_file(c: Cell, md: Metadata) -> Any:
    file = await c.file()
    request = F.ShareFileRequest(name=file.name, user=c.other.name, role=F.SHARE_ROLE_READER)
    return await c.world.files.ShareFile(request, metadata=md)


@rpc("FileService/ShareFile#unknown_user")
async def share_file_with_nobody(c: Cell, md: Metadata) -> Any:
    file = await c.file()
    request = F.ShareFileRequest(
        name=file.name, user=f"users/nobody{c.tag}", role=F.SHARE_ROLE_READER
    )
    return await c.world.files.ShareFile(request, metadata=md)


@rpc("FileService/UnshareFile")
async def unshare_file(c: Cell, md: Metadata) -> Any:
    file = await c.file()
    request = F.UnshareFileRequest(name=file.name, user=c.share_reader.name)
    return await c.world.files.UnshareFile(request, metadata=md)


@rpc("FileService/ListFileShares")
async def list_file_shares(c: Cell, md: Metadata) -> Any:
    file = await c.file()
    return await c.world.files.ListFileShares(F.ListFileSharesRequest(name=file.name), metadata=md)


@rpc("FileService/GetUserUsage")
async def get_user_usage(c: Cell, md: Metadata) -> Any:
    request = F.GetUserUsageRequest(user=c.owner.name)
    return await c.world.files.GetUserUsage(request, metadata=md)


@rpc("FileService/DeleteUserFiles")
async def delete_user_files(c: Cell, md: Metadata) -> Any:
    await c.file()
    request = F.DeleteUserFilesRequest(user=c.owner.name)
    return await c.world.files.DeleteUserFiles(request, metadata=md)


# --- VideoService ---------------------------------------------------------------------------

V = video_service_pb2


@rpc("VideoService/GetVideo")
async def get_video(c: Cell, md: Metadata) -> Any:
    video = await c.video()
    return await c.world.videos.GetVideo(V.GetVideoRequest(name=video.name), metadata=md)


@rpc("VideoService/ListVideos")
async def list_videos(c: Cell, md: Metadata) -> Any:
    await c.video()
    return await c.world.videos.ListVideos(V.ListVideosRequest(owner=c.owner.name), metadata=md)


@rpc("VideoService/UploadVideo")
async def upload_video(c: Cell, md: Metadata) -> Any:
    messages = [
        V.UploadVideoRequest(
            header=file_pb2.UploadHeader(display_name="v.mp4", content_type="video/mp4")
        ),
        V.UploadVideoRequest(data=FAKE_MP4),
    ]
    return await stream(c.world.videos.UploadVideo(metadata=md), messages)


@rpc("VideoService/CreateStreamUrl")
async def create_stream_url(c: Cell, md: Metadata) -> Any:
    video = await c.video()
    request = V.CreateStreamUrlRequest(name=video.name)
    return await c.world.videos.CreateStreamUrl(request, metadata=md)


@rpc("VideoService/RegenerateThumbnails")
async def regenerate_thumbnails(c: Cell, md: Metadata) -> Any:
    video = await c.video()
    request = V.RegenerateThumbnailsRequest(name=video.name)
    return await c.world.videos.RegenerateThumbnails(request, metadata=md)


@rpc("VideoService/RecordVideoMetadata")
async def record_video_metadata(c: Cell, md: Metadata) -> Any:
    video = await c.video()
    probe_job, _ = await c.video_jobs()
    request = V.RecordVideoMetadataRequest(name=video.name, job=probe_job, error="not a video")
    return await c.world.videos.RecordVideoMetadata(request, metadata=md)


@rpc("VideoService/RecordThumbnails")
async def record_thumbnails(c: Cell, md: Metadata) -> Any:
    video = await c.video()
    _, thumbnail_job = await c.video_jobs()
    request = V.RecordThumbnailsRequest(name=video.name, job=thumbnail_job, error="no frames")
    return await c.world.videos.RecordThumbnails(request, metadata=md)


# --- names that exist nowhere: PERMISSION_DENIED comes before NOT_FOUND -------------------


@rpc("UserService/GetUser#missing")
async def get_missing_user(c: Cell, md: Metadata) -> Any:
    request = users_pb2.GetUserRequest(name=f"users/nobody{c.tag}")
    return await c.world.users.GetUser(request, metadata=md)


@rpc("JobService/GetJob#missing")
async def get_missing_job(c: Cell, md: Metadata) -> Any:
    request = job_service_pb2.GetJobRequest(name=f"jobs/{uuid.uuid4()}")
    return await c.world.jobs.GetJob(request, metadata=md)


@rpc("JobService/GetBatch#missing")
async def get_missing_batch(c: Cell, md: Metadata) -> Any:
    request = job_service_pb2.GetBatchRequest(name=f"batches/{uuid.uuid4()}")
    return await c.world.jobs.GetBatch(request, metadata=md)


@rpc("FileService/GetFile#missing")
async def get_missing_file(c: Cell, md: Metadata) -> Any:
    request = F.GetFileRequest(name=f"files/{new_id()}")
    return await c.world.files.GetFile(request, metadata=md)


@rpc("VideoService/GetVideo#missing")
async def get_missing_video(c: Cell, md: Metadata) -> Any:
    request = V.GetVideoRequest(name=f"videos/{new_id()}")
    return await c.world.videos.GetVideo(request, metadata=md)
