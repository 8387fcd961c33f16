"""Fixtures of the jobs tests: an in-process jobs service with four principals and stubs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest_asyncio
from mediagrid.jobs.v1 import job_service_pb2_grpc, worker_service_pb2_grpc

from common.context import Principal
from common.settings import JobTypeSetting
from services.jobs.repository import JobRepository
from tests.jobs.jobs_support import PRINCIPALS, TEST_JOB_TYPES, Jobs, JobsFactory
from tests.support.auth import StaticAuthenticator


@pytest_asyncio.fixture
async def jobs_service(suite: Any) -> JobsFactory:
    async def start(
        *,
        declare: Iterable[JobTypeSetting] = (),
        principals: Mapping[str, Principal] | None = None,
        **overrides: Any,
    ) -> Jobs:
        """The jobs service with the test job types and ``declare``d ones, and the test
        principals (plus ``principals``, by token)."""
        overrides.setdefault("job_types", [*TEST_JOB_TYPES, *declare])
        server, ctx, channel = await suite(
            "jobs",
            authenticator=StaticAuthenticator({**PRINCIPALS, **(principals or {})}),
            **overrides,
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
