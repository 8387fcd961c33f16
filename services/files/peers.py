"""The files service's calls to the jobs and users services, and its own service identity.

Every call goes through the peer's dependency (``common.peer_calls``): bounded by the
caller's deadline and the peer call timeout, refused at once while the peer's breaker is
open, and UNAVAILABLE ``DEPENDENCY_UNAVAILABLE`` naming the peer when it is down.

- ``GrpcJobAccess`` (port ``JobAccess``): the jobs service is asked (``GetJob``) with the
  caller's own token, so its rule (owner or admin) decides whether the caller may attach an
  upload to the job.
- ``GrpcUserDirectory`` (port ``UserDirectory``): the users service is asked (``GetUser``)
  with the files service's own identity whether a share's grantee exists and is not deleted.
- ``files_identity`` is that identity: the service account ``FILES_SERVICE_ACCOUNT_EMAIL``,
  which holds the literal grants that make it the owner of the ``video.*`` job types (so it
  may create those jobs for the uploading user). Its token is issued in-process when the
  users service runs in this process, else it is the ``service_token`` setting.
"""

from __future__ import annotations

import grpc
from mediagrid.jobs.v1 import job_service_pb2, job_service_pb2_grpc
from mediagrid.users.v1 import user_service_pb2, user_service_pb2_grpc

from common.app import AppContext
from common.auth import job_type_grant
from common.context import Principal
from common.errors import FailedPrecondition, InvalidArgument, NotFound
from common.grpc_errors import from_rpc_error
from common.interceptors import outgoing_metadata
from common.peer_calls import call_peer
from common.resilience import Dependency
from services.files.ports import (
    JOBS_SERVICE,
    grantee_not_found,
    job_not_accessible,
)
from services.users.bootstrap import ServiceToken, issue_service_token

# The peers, as named in ``ctx.addresses`` and ``ctx.dependencies.peer(...)``.
JOBS = "jobs"
USERS = "users"
FILES_SERVICE_ACCOUNT_EMAIL = "files-service@example.com"
# GetUser's alias of the caller: never a grantee.
ME = "me"
# The internal job types the files service creates for its users (services/files/video).
FILES_JOB_TYPES = ("video.probe", "video.thumbnail")


def users_in_process(ctx: AppContext) -> bool:
    """Whether the users service is served by this process (it answers at our own address)."""
    users = ctx.addresses.get(USERS)
    return users is not None and users == ctx.addresses.get("files")


def files_identity(ctx: AppContext) -> ServiceToken:
    """The token source of the files service's own service account (see the module doc)."""

    async def obtain() -> str:
        if users_in_process(ctx):
            grants = [job_type_grant(job_type) for job_type in FILES_JOB_TYPES]
            return await issue_service_token(ctx, FILES_SERVICE_ACCOUNT_EMAIL, grants)
        if ctx.settings.service_token is not None:
            return ctx.settings.service_token.get_secret_value()
        raise FailedPrecondition(
            "the files service has no service identity: the users service does not run in this "
            "process and MEDIAGRID_SERVICE_TOKEN is not set",
            reason="SERVICE_IDENTITY_MISSING",
        )

    return ServiceToken(obtain)


class GrpcJobAccess:
    """``JobAccess`` through ``JobService/GetJob`` with the caller's token."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    async def require_job(self, principal: Principal, job_id: str) -> None:
        name = f"jobs/{job_id}"
        channel = self.ctx.peer_channel(JOBS, JOBS_SERVICE)
        if not principal.token:
            raise job_not_accessible(name)
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        request = job_service_pb2.GetJobRequest(name=name)
        metadata = (
            *outgoing_metadata(forward_token=False),
            ("authorization", f"Bearer {principal.token}"),
        )
        jobs = self.ctx.dependencies.peer(JOBS)
        try:
            await call_peer(
                jobs,
                lambda timeout: stub.GetJob(request, metadata=metadata, timeout=timeout),
                what="GetJob",
            )
        except grpc.aio.AioRpcError as exc:
            raise _job_error(exc, name, jobs) from exc


def _job_error(exc: grpc.aio.AioRpcError, name: str, jobs: Dependency) -> Exception:
    """The jobs service's answer (not an outage: ``call_peer`` turned those into
    UNAVAILABLE) as what the uploader is told."""
    code = exc.code()
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return job_not_accessible(name)
    if code == grpc.StatusCode.NOT_FOUND:  # only administrators learn that a job is unknown
        return NotFound(
            f"{name} does not exist", reason="JOB_NOT_FOUND", metadata={"resource": name}
        )
    if code == grpc.StatusCode.UNIMPLEMENTED:  # something else answers at the jobs address
        return jobs.unavailable(
            f"the jobs service could not be asked about {name} ({code.name})",
            service=JOBS_SERVICE,
            code=code.name,
        )
    return from_rpc_error(exc)


class GrpcUserDirectory:
    """``UserDirectory`` through ``UserService/GetUser`` with the files service's identity.

    In a deployment without a users service there is no user registry to ask (callers are
    authenticated by something else): every well-formed user name is accepted.
    """

    def __init__(self, ctx: AppContext, identity: ServiceToken) -> None:
        self.ctx = ctx
        self.identity = identity

    async def require_user(self, user_id: str) -> None:
        name = f"users/{user_id}"
        if user_id == ME:  # the users service would answer with the files service's account
            raise grantee_not_found(name)
        if USERS not in self.ctx.addresses:
            return
        stub = user_service_pb2_grpc.UserServiceStub(self.ctx.channel(USERS))
        request = user_service_pb2.GetUserRequest(name=name)
        users = self.ctx.dependencies.peer(USERS)
        try:
            response = await self.identity.call(
                lambda metadata: call_peer(
                    users,
                    lambda timeout: stub.GetUser(request, metadata=metadata, timeout=timeout),
                    what="GetUser",
                )
            )
        except (NotFound, InvalidArgument) as exc:  # InvalidArgument: not a users id at all
            raise grantee_not_found(name) from exc
        if response.user.status == user_service_pb2.USER_STATUS_DELETED:
            raise grantee_not_found(name)
