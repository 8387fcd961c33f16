"""Fixtures of the jobs tests: an in-process jobs service with four principals and stubs."""

from __future__ import annotations

from typing import Any

import pytest_asyncio
from mediagrid.jobs.v1 import job_service_pb2_grpc, worker_service_pb2_grpc

from services.jobs.repository import JobRepository
from tests.jobs.jobs_support import PRINCIPALS, Jobs, JobsFactory
from tests.support.auth import StaticAuthenticator


@pytest_asyncio.fixture
async def jobs_service(suite: Any) -> JobsFactory:
    async def start(**overrides: Any) -> Jobs:
        server, ctx, channel = await suite(
            "jobs", authenticator=StaticAuthenticator(PRINCIPALS), **overrides
        )
        return Jobs(
            server=server,
            ctx=ctx,
            channel=channel,
            jobs=job_service_pb2_grpc.JobServiceStub(channel),
            workers=worker_service_pb2_grpc.WorkerServiceStub(channel),
            repo=JobRepository(ctx.pool),
        )

    return start


@pytest_asyncio.fixture
async def svc(jobs_service: JobsFactory) -> Jobs:
    return await jobs_service()
