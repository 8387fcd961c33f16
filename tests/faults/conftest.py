"""Fault scenarios: the suite as subprocesses with PostgreSQL and S3 behind fault proxies.

``fault_suite(**settings)`` starts a FaultSuite (tests/support/suite_process.py) for the
test and stops it afterwards, whatever happened; when the test failed, the tail of every
child's log is printed (the whole logs stay in the test's tmp_path).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.support.suite_process import FaultSuite

FaultSuiteFactory = Callable[..., Awaitable[FaultSuite]]
FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED] = True
    return report


@pytest_asyncio.fixture
async def fault_suite(
    request: pytest.FixtureRequest, tmp_path: Path, pg_admin_dsn: str, template_db: str
) -> AsyncIterator[FaultSuiteFactory]:
    suites: list[FaultSuite] = []
    async with AsyncExitStack() as stack:

        async def start(**settings: Any) -> FaultSuite:
            suite = FaultSuite(tmp_path, pg_admin_dsn, template_db, **settings)
            suites.append(suite)
            return await stack.enter_async_context(suite)

        yield start
        if request.node.stash.get(FAILED, False):
            for suite in suites:
                print(f"\n===== logs (whole files in {tmp_path}) =====")
                suite.print_logs()
