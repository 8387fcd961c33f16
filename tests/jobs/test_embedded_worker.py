"""The embedded worker of `mediagrid serve` is supervised: when it dies it is restarted with
backoff, each death is logged at ERROR with its cause, and its own health entry says whether
it runs while the services' entries stay SERVING (real users and jobs services in-process)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mediagrid.jobs.v1 import job_pb2

from services.jobs.client import JobsClient
from services.jobs.worker.embedded import (
    HEALTH_SERVICE_NAME,
    WORKER_ACCOUNT_EMAIL,
    embedded_worker,
)
from tests.jobs.jobs_support import wait_until
from tests.support.auth import bearer
from tests.support.people import People, start_all

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def status(people: People, service: str) -> int:
    response = await health_pb2_grpc.HealthStub(people.channel).Check(
        health_pb2.HealthCheckRequest(service=service)
    )
    return int(response.status)


async def run_noop(client: JobsClient) -> job_pb2.Job:
    job = await client.create_job("noop", {})

    async def finished() -> bool:
        return (await client.get_job(job.name)).state == job_pb2.JOB_STATE_SUCCEEDED

    await wait_until(finished, 60)
    return await client.get_job(job.name)


async def test_the_embedded_worker_comes_back_after_it_dies_and_health_says_so(
    suite: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Its account is disabled (sessions revoked): the next claim is refused for good
    # (UNAUTHENTICATED) and the restarts cannot get a token; once the account is active
    # again, the next restart runs jobs.
    people = await start_all(
        suite, "users", "jobs", auth_cache_ttl_seconds=0, worker_claim_wait_seconds=0.5
    )
    _, token = await people.add()
    client = JobsClient(people.channel, bearer(token))
    others = ["", "mediagrid.jobs.v1.JobService", "mediagrid.users.v1.UserService"]
    caplog.set_level(logging.ERROR, logger="mediagrid.worker")
    async with embedded_worker(
        people.ctx.settings, people.server, people.ctx, restart_delay=0.05, restart_delay_max=0.3
    ) as worker:

        async def serving() -> bool:
            return await status(people, HEALTH_SERVICE_NAME) == SERVING

        await wait_until(serving, 30)
        assert (await run_noop(client)).state == job_pb2.JOB_STATE_SUCCEEDED
        credentials = await people.repository.find_credentials(WORKER_ACCOUNT_EMAIL)
        assert credentials is not None
        account = credentials.user.id
        await people.repository.update_user(account, status="disabled", revoke_sessions=True)

        async def down() -> bool:
            return await status(people, HEALTH_SERVICE_NAME) == NOT_SERVING

        await wait_until(down, 30)
        seen_down = {name: await status(people, name) for name in others}

        async def restarts_failing() -> bool:
            return worker.deaths >= 3

        await wait_until(restarts_failing, 30)
        assert await status(people, HEALTH_SERVICE_NAME) == NOT_SERVING
        await people.repository.update_user(account, status="active")
        await wait_until(serving, 30)
        after = await run_noop(client)
        deaths, starts = worker.deaths, worker.starts
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    died = [m for m in errors if m.startswith("embedded worker died")]
    print(f"\ndeaths {deaths}, starts {starts}, other services while down {seen_down}")
    for message in died:
        print(message)
    assert seen_down == dict.fromkeys(others, SERVING)
    assert after.state == job_pb2.JOB_STATE_SUCCEEDED
    assert len(died) == deaths >= 3
    assert "UNAUTHENTICATED" in died[0]  # the claim refused for good
    assert any("NOT_A_SERVICE_USER" in m or "not an active service user" in m for m in died[1:])
    assert starts >= 2  # the first run and the one after the account came back
    assert await status(people, HEALTH_SERVICE_NAME) == NOT_SERVING  # closed with the block


async def test_a_crashed_worker_loop_stops_the_worker_and_it_is_restarted(
    suite: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug in the runtime (its heartbeat loop raises once): the worker stops with that
    # error instead of running on without heartbeats, and the supervisor restarts it.
    from services.jobs.worker import runtime

    real = runtime.WorkerRuntime.heartbeat_once
    crashes = []

    async def crash_once(self: runtime.WorkerRuntime) -> None:
        if not crashes:
            crashes.append(self.worker_id)
            raise RuntimeError("heartbeat bug")
        await real(self)

    monkeypatch.setattr(runtime.WorkerRuntime, "heartbeat_once", crash_once)
    people = await start_all(suite, "users", "jobs", worker_claim_wait_seconds=0.5)
    _, token = await people.add()
    caplog.set_level(logging.ERROR, logger="mediagrid.worker")
    async with embedded_worker(
        people.ctx.settings, people.server, people.ctx, restart_delay=0.05, restart_delay_max=0.3
    ) as worker:

        async def restarted() -> bool:
            return worker.deaths == 1 and worker.starts == 2

        await wait_until(restarted, 30)
        assert await status(people, HEALTH_SERVICE_NAME) == SERVING
        job = await run_noop(JobsClient(people.channel, bearer(token)))
    died = [r.getMessage() for r in caplog.records if r.getMessage().startswith("embedded worker")]
    print("\n".join(died))
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    assert len(died) == 1 and "RuntimeError: heartbeat bug" in died[0]
