"""Fault scenarios: the suite as subprocesses with PostgreSQL and S3 behind fault proxies.

``fault_suite(**settings)`` starts a FaultSuite (tests/support/suite_process.py) for the
test and stops it afterwards, whatever happened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest_asyncio

from tests.support.suite_process import FaultSuite

FaultSuiteFactory = Callable[..., Awaitable[FaultSuite]]


@pytest_asyncio.fixture
async def fault_suite(
    tmp_path: Path, pg_admin_dsn: str, template_db: str
) -> AsyncIterator[FaultSuiteFactory]:
    async with AsyncExitStack() as stack:

        async def start(**settings: Any) -> FaultSuite:
            suite = FaultSuite(tmp_path, pg_admin_dsn, template_db, **settings)
            return await stack.enter_async_context(suite)

        yield start
