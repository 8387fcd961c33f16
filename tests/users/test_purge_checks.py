"""``users.purge`` deletes only a deleted user's data; the users service owns the job type.

Real users, jobs and files services in one process. The handler runs with a real
``JobContext`` (and, end to end, in the embedded worker) with a worker's service token.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from mediagrid.files.v1 import file_service_pb2, file_service_pb2_grpc
from mediagrid.jobs.v1 import job_pb2
from mediagrid.users.v1 import user_service_pb2 as pb
from mediagrid.users.v1 import user_service_pb2_grpc as pb_grpc

from common.auth import job_type_grant
from common.errors import Unauthenticated
from services.jobs.client import JobsClient
from services.jobs.worker.api import PermanentJobError, WorkerResources
from services.jobs.worker.embedded import embedded_worker
from services.users.bootstrap import ServiceToken, issue_service_token
from services.users.handlers import purge_user_data
from services.users.integrations import SYSTEM_ACCOUNT_EMAIL
from tests.files.conftest import Files
from tests.support.auth import bearer
from tests.support.people import People, start_all
from tests.video.conftest import TestJob

ROOT = Path(__file__).resolve().parents[2]
FINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_DEAD}


async def purge_job(people: People, user: str) -> TestJob:
    """A ``users.purge`` job as a worker would run it (a service account's token)."""
    token = await issue_service_token(people.ctx, "worker@example.com")
    resources = WorkerResources(
        settings=people.ctx.settings,
        aws=people.ctx.aws,
        channel=lambda _name: people.channel,
        call_metadata=bearer(token),
    )
    return TestJob("jobs/purge", "users.purge", {"user": user}, "users/someone", resources)


async def data_of(people: People, user: str, admin: str) -> tuple[int, int]:
    """(files, jobs) the services still hold for ``user``."""
    usage = await file_service_pb2_grpc.FileServiceStub(people.channel).GetUserUsage(
        file_service_pb2.GetUserUsageRequest(user=user), metadata=bearer(admin)
    )
    counts = await JobsClient(people.channel, bearer(admin)).get_job_counts(user)
    return usage.file_count, sum(counts.values())


async def with_data(people: People) -> tuple[str, str]:
    """A new user holding one file and one job: (name, token)."""
    user, token = await people.add()
    files = Files(
        file_service_pb2_grpc.FileServiceStub(people.channel), people.ctx, None, people.channel
    )
    await files.upload(b"precious", who=token)
    await JobsClient(people.channel, bearer(token)).create_job("noop")
    return f"users/{user.id}", token


async def test_a_purge_of_an_active_or_unknown_user_deletes_nothing(suite: Any) -> None:
    people = await start_all(suite)
    _, admin = await people.add("admin")
    alice, _ = await with_data(people)
    for user, message in (
        (alice, "is not deleted"),
        ("users/nobody", "does not exist"),
        ("users/me", "must be 'users/"),
        ("users/../x", "must be 'users/"),
    ):
        with pytest.raises(PermanentJobError, match=message):
            await purge_user_data(await purge_job(people, user))
    assert await data_of(people, alice, admin) == (1, 1)


async def test_a_purge_of_a_deleted_user_removes_files_and_jobs(suite: Any) -> None:
    people = await start_all(suite)
    _, admin = await people.add("admin")
    alice, _ = await with_data(people)
    await people.repository.delete_user(alice.removeprefix("users/"))
    job = await purge_job(people, alice)
    result = await purge_user_data(job)
    assert result is not None and result["files_deleted"] == 1
    assert await data_of(people, alice, admin) == (0, 0)


async def wait_final(client: JobsClient, name: str) -> job_pb2.Job:
    async for job in client.watch_job(name):
        if job.state in FINAL:
            return job
    return await client.get_job(name)


async def test_bobs_purge_job_naming_alice_wipes_nothing(suite: Any) -> None:
    people = await start_all(suite)
    server = people.server
    _, admin = await people.add("admin")
    alice, _ = await with_data(people)
    _, bob = await people.add()
    bobs = JobsClient(people.channel, bearer(bob))
    async with embedded_worker(people.ctx.settings, server, people.ctx):
        try:
            job = await bobs.create_job("users.purge", {"user": alice})
        except grpc.aio.AioRpcError as exc:  # the job type registry refuses it outright
            assert exc.code() in (
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.INVALID_ARGUMENT,
            )
        else:
            final = await asyncio.wait_for(wait_final(bobs, job.name), 60)
            assert final.state != job_pb2.JOB_STATE_SUCCEEDED
    assert await data_of(people, alice, admin) == (1, 1)


async def test_delete_user_still_purges_files_and_jobs_end_to_end(suite: Any) -> None:
    people = await start_all(suite)
    _, admin = await people.add("admin")
    alice, _ = await with_data(people)
    users = pb_grpc.UserServiceStub(people.channel)
    async with embedded_worker(people.ctx.settings, people.server, people.ctx):
        await users.DeleteUser(pb.DeleteUserRequest(name=alice), metadata=bearer(admin))
        for _ in range(300):
            if await data_of(people, alice, admin) == (0, 0):
                break
            await asyncio.sleep(0.2)
    assert await data_of(people, alice, admin) == (0, 0)
    pending = await people.repository.get_pending_purge(alice.removeprefix("users/"))
    assert pending is not None and pending.done_time is not None


async def test_the_users_service_account_holds_the_literal_purge_grant(suite: Any) -> None:
    people = await start_all(suite, "users")
    grants = [job_type_grant("users.purge")]
    first = await issue_service_token(people.ctx, SYSTEM_ACCOUNT_EMAIL, grants)
    await issue_service_token(people.ctx, SYSTEM_ACCOUNT_EMAIL, grants)  # idempotent
    users = pb_grpc.UserServiceStub(people.channel)
    principal = (await users.Authenticate(pb.AuthenticateRequest(token=first))).principal
    assert principal.role == pb.ROLE_SERVICE
    assert "jobs.create:job-types/users.purge" in principal.permissions
    account = await people.repository.find_credentials(SYSTEM_ACCOUNT_EMAIL)
    assert account is not None
    held = await people.repository.list_grants(
        user_id=account.user.id, permission=None, resource=None, after=None, limit=10
    )
    assert [(g.permission, g.resource) for g in held] == [("jobs.create", "job-types/users.purge")]


def refused(code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "refused")


async def test_service_token_is_obtained_once_and_renewed_once_when_refused() -> None:
    issued: list[str] = []

    async def obtain() -> str:
        issued.append(f"t{len(issued)}")
        return issued[-1]

    identity = ServiceToken(obtain)
    seen: list[str] = []

    async def rpc(metadata: tuple[tuple[str, str], ...]) -> str:
        token = dict(metadata)["authorization"].removeprefix("Bearer ")
        seen.append(token)
        if token == "t0":
            raise refused()
        return token

    # However the two callers interleave, a refused token is renewed once, not per caller.
    assert list(await asyncio.gather(identity.call(rpc), identity.call(rpc))) == ["t1", "t1"]
    assert issued == ["t0", "t1"] and seen[0] == "t0"

    async def always_refused(metadata: tuple[tuple[str, str], ...]) -> None:
        raise refused()

    with pytest.raises(Unauthenticated):
        await identity.call(always_refused)
    assert issued == ["t0", "t1", "t2"]  # renewed once, then the refusal is the answer

    async def unavailable(metadata: tuple[tuple[str, str], ...]) -> None:
        raise refused(grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(Exception, match="refused"):
        await identity.call(unavailable)
    assert issued == ["t0", "t1", "t2"]  # other failures never renew


async def test_cli_service_token_issues_a_token_of_the_owning_service(suite: Any) -> None:
    people = await start_all(suite, "users")
    root = ROOT
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGRID_")}
    environ.update(
        MEDIAGRID_ENVIRONMENT="test",
        MEDIAGRID_DATABASE_URL=people.ctx.settings.database_dsn(),
        PYTHONPATH=f"{root}:{root / 'gen'}",
    )
    args = ["--email", "files-service@example.com"]
    args += ["--job-type", "video.probe", "--job-type", "video.thumbnail"]
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "mediagrid"),
        *("users", "service-token", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
        cwd=root,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    users = pb_grpc.UserServiceStub(people.channel)
    reply = await users.Authenticate(pb.AuthenticateRequest(token=out.decode().strip()))
    assert reply.principal.role == pb.ROLE_SERVICE
    assert {
        "jobs.create:job-types/video.probe",
        "jobs.create:job-types/video.thumbnail",
    } <= set(reply.principal.permissions)
