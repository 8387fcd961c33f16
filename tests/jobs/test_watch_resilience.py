"""Watches ride out database blips and server restarts; a rescued job keeps its queue place.

Real PostgreSQL throughout: connections are killed with ``pg_terminate_backend`` (only those
of the test's own database), the LISTEN connection is cut at a fault proxy, and the jobs
server is stopped and started again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2
from mediagrid.jobs.v1 import job_pb2, job_service_pb2, worker_service_pb2
from pydantic import SecretStr

from common import deadlines
from common.db import create_pool
from common.errors import Unavailable
from common.runtime import running_suite
from common.settings import Settings
from services.jobs.client import JobsClient
from services.jobs.metrics import JobMetrics
from services.jobs.models import LeaseRef
from services.jobs.notifier import Notifier
from services.jobs.repository import CHANGE_CHANNEL, JobRepository
from services.jobs.retention import reap
from tests.jobs.jobs_support import (
    OTHER,
    OWNER,
    PRINCIPALS,
    TEST_JOB_TYPES,
    Jobs,
    JobsFactory,
    lease_of,
    wait_until,
)
from tests.support.auth import StaticAuthenticator, bearer
from tests.support.proxy import TcpProxy, free_port

STEP_SECONDS = 60.0  # guards against a hung test only


def notifier_of(server: Any) -> Notifier:
    notifier = server.services[0].background[0].__self__
    assert isinstance(notifier, Notifier)
    return notifier


async def terminate_database_connections(dsn: str) -> int:
    """Kill every other connection to the test's own database (the pool's and the LISTEN one)."""
    conn = await asyncpg.connect(dsn)
    try:
        killed: int = await conn.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return killed


async def next_message(call: Any) -> Any:
    async with asyncio.timeout(STEP_SECONDS):
        message = await call.read()
    assert message is not grpc.aio.EOF
    return message


async def test_watches_keep_going_across_terminated_connections(svc: Jobs) -> None:
    dsn = svc.ctx.settings.database_dsn()
    notifier = notifier_of(svc.server)
    created = await svc.jobs.CreateBatch(
        job_service_pb2.CreateBatchRequest(jobs=[job_pb2.JobSpec(type="test.noop")]),
        metadata=svc.owner,
    )
    [name] = created.job_names
    job_call = svc.jobs.WatchJob(job_service_pb2.WatchJobRequest(name=name), metadata=svc.owner)
    batch_call = svc.jobs.WatchBatch(
        job_service_pb2.WatchBatchRequest(name=created.batch.name), metadata=svc.owner
    )
    try:
        assert (await next_message(job_call)).job.state == job_pb2.JOB_STATE_QUEUED
        assert not (await next_message(batch_call)).batch.done
        subscriptions = notifier.subscriptions
        assert await terminate_database_connections(dsn) >= 2  # at least LISTEN + one pooled

        async def resubscribed() -> bool:
            return notifier.subscriptions > subscriptions and notifier.connected.is_set()

        await wait_until(resubscribed, STEP_SECONDS)
        # The pool's connections died too: the next state change goes through them.
        [claimed] = await claim_with_retry(svc)
        running = await next_message(job_call)
        assert (running.job.state, running.job.attempts) == (job_pb2.JOB_STATE_RUNNING, 1)
        await svc.workers.CompleteJob(
            worker_service_pb2.CompleteJobRequest(lease=lease_of(claimed)), metadata=svc.service
        )
        assert (await next_message(job_call)).job.state == job_pb2.JOB_STATE_SUCCEEDED
        async with asyncio.timeout(STEP_SECONDS):
            assert await job_call.read() is grpc.aio.EOF
            batch = (await next_message(batch_call)).batch
            while not batch.done:
                batch = (await next_message(batch_call)).batch
            assert await batch_call.read() is grpc.aio.EOF
        assert batch.state_counts["JOB_STATE_SUCCEEDED"] == 1
    finally:
        job_call.cancel()
        batch_call.cancel()


async def test_a_watch_outlasts_a_database_outage_and_sees_what_it_missed(
    jobs_service: JobsFactory, database_dsn: str, pool: asyncpg.Pool
) -> None:
    """The whole service reaches PostgreSQL through a proxy that goes away for a while: the
    watch's re-reads fail (connections reset, then refused) and are retried, the state change
    made meanwhile (its NOTIFY sent to nobody) arrives once the listener is back."""
    async with TcpProxy.for_dsn(database_dsn) as proxy:
        database = database_dsn.rsplit("/", 1)[1].split("?")[0]
        svc = await jobs_service(database_url=SecretStr(proxy.dsn(database)))
        notifier = notifier_of(svc.server)
        job = await svc.create()
        call = svc.jobs.WatchJob(job_service_pb2.WatchJobRequest(name=job.name), metadata=svc.owner)
        try:
            assert (await next_message(call)).job.state == job_pb2.JOB_STATE_QUEUED
            await proxy.refuse()
            await proxy.close_connections()
            await wait_until(_is_cleared(notifier.connected), STEP_SECONDS)
            # Changed behind the service's back (another replica, say): nobody listens.
            repo = JobRepository(pool)
            [claimed] = await repo.claim("elsewhere", ["test.noop"], 1, 60.0)
            await asyncio.sleep(1.0)  # re-reads fail meanwhile; the stream must stay open
            await proxy.accept()
            running = await next_message(call)
            assert running.job.state == job_pb2.JOB_STATE_RUNNING
            assert claimed.job.lease_id is not None
            await repo.complete(
                [(LeaseRef(job_id=claimed.job.id, lease_id=claimed.job.lease_id), {})]
            )
            assert (await next_message(call)).job.state == job_pb2.JOB_STATE_SUCCEEDED
        finally:
            call.cancel()


async def test_the_client_watch_resumes_after_the_proxy_drops_its_connection(
    svc: Jobs,
) -> None:
    host, port = svc.server.address.rsplit(":", 1)
    async with TcpProxy(host, int(port)) as proxy:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{proxy.port}")
        client = JobsClient(channel, svc.owner)
        try:
            job = await client.create_job("test.noop")
            seen: list[int] = []

            async def watch() -> None:
                async for update in client.watch_job(job.name):
                    seen.append(update.state)

            watcher = asyncio.create_task(watch())
            await wait_until(lambda: _at_least(seen, 1), STEP_SECONDS)
            accepted = proxy.accepted
            await proxy.close_connections()
            [claimed] = await svc.claim(("test.noop",))
            await wait_until(lambda: _at_least(seen, 2), STEP_SECONDS)
            assert proxy.accepted > accepted  # a new connection, a new stream
            await proxy.close_connections()
            await svc.workers.CompleteJob(
                worker_service_pb2.CompleteJobRequest(lease=lease_of(claimed)),
                metadata=svc.service,
            )
            async with asyncio.timeout(STEP_SECONDS):
                await watcher
        finally:
            await channel.close()
    assert seen == [
        job_pb2.JOB_STATE_QUEUED,
        job_pb2.JOB_STATE_RUNNING,
        job_pb2.JOB_STATE_SUCCEEDED,
    ]


async def claim_with_retry(svc: Jobs) -> list[job_pb2.ClaimedJob]:
    """Claim once the service answers again: a call may meet a pooled connection that was
    killed (answered UNAVAILABLE); the watches under test are not allowed that excuse."""
    for _ in range(50):
        try:
            claimed = await svc.claim(("test.noop",), max_jobs=1)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            await asyncio.sleep(0.1)
            continue
        if claimed:
            return claimed
    raise AssertionError("the job could not be claimed")


async def test_watch_rereads_after_the_listen_connection_comes_back(
    pool: asyncpg.Pool, database_dsn: str
) -> None:
    """Notifications sent while the LISTEN connection is down are lost: the re-subscription
    itself wakes the watchers, so they re-read what they missed."""
    async with TcpProxy.for_dsn(database_dsn) as proxy:
        database = database_dsn.rsplit("/", 1)[1].split("?")[0]

        async def connect() -> Any:
            return await asyncpg.connect(proxy.dsn(database), timeout=5)

        notifier = Notifier(connect, check_interval=0.2, reconnect_base=0.05)
        await notifier.start()
        runner = asyncio.create_task(notifier.run())
        try:
            with notifier.job("some-job") as changed:
                await pool.execute("SELECT pg_notify($1, 'some-job')", CHANGE_CHANNEL)
                await wait_until(_is_set(changed), STEP_SECONDS)
                changed.clear()
                await proxy.refuse()
                await proxy.close_connections()
                await wait_until(_is_cleared(notifier.connected), STEP_SECONDS)
                changed.clear()
                # Sent while nobody listens: this notification never arrives.
                await pool.execute("SELECT pg_notify($1, 'some-job')", CHANGE_CHANNEL)
                received = notifier.received
                await asyncio.sleep(0.5)
                assert not changed.is_set() and notifier.received == received
                await proxy.accept()
                await wait_until(_is_set(changed), STEP_SECONDS)
                assert notifier.connected.is_set() and notifier.received == received
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            await notifier.close()


async def test_a_silent_listen_connection_is_noticed_and_replaced(
    pool: asyncpg.Pool, database_dsn: str
) -> None:
    """A LISTEN connection whose path went silent (no reset, no error) fails its liveness
    probe; the notifier reconnects once the path is back and wakes the watchers."""
    async with TcpProxy.for_dsn(database_dsn) as proxy:
        database = database_dsn.rsplit("/", 1)[1].split("?")[0]

        async def connect() -> Any:
            return await asyncpg.connect(proxy.dsn(database), timeout=2)

        notifier = Notifier(connect, check_interval=0.2, reconnect_base=0.05, reconnect_cap=0.5)
        await notifier.start()
        runner = asyncio.create_task(notifier.run())
        try:
            with notifier.job("some-job") as changed:
                subscriptions = notifier.subscriptions
                proxy.pause()
                await wait_until(_is_cleared(notifier.connected), STEP_SECONDS)
                changed.clear()
                proxy.resume()
                await wait_until(_is_set(changed), STEP_SECONDS)
                await wait_until(_is_set(notifier.connected), STEP_SECONDS)
                assert notifier.subscriptions > subscriptions
                received = notifier.received
                await pool.execute("SELECT pg_notify($1, 'some-job')", CHANGE_CHANNEL)
                await wait_until(lambda: _more(notifier, received), STEP_SECONDS)
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            await notifier.close()


async def _more(notifier: Notifier, received: int) -> bool:
    return notifier.received > received


def _is_set(event: asyncio.Event) -> Any:
    async def check() -> bool:
        return event.is_set()

    return check


def _is_cleared(event: asyncio.Event) -> Any:
    async def check() -> bool:
        return not event.is_set()

    return check


@contextlib.asynccontextmanager
async def jobs_server(settings: Settings, port: int) -> AsyncIterator[Any]:
    overrides = {"job_types": TEST_JOB_TYPES, "grpc_shutdown_grace_seconds": 0.5}
    async with running_suite(
        settings.model_copy(update=overrides),
        ("jobs",),
        port=port,
        authenticator=StaticAuthenticator(PRINCIPALS),
    ) as (server, _ctx):
        yield server


async def test_client_watch_resumes_across_server_restarts_without_repeats(
    settings: Settings,
) -> None:
    port = free_port()
    pool = await create_pool(settings)
    repo = JobRepository(pool)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    client = JobsClient(channel, bearer("owner-token"), watch_retry=STEP_SECONDS)
    seen: list[Any] = []
    try:
        async with jobs_server(settings, port) as server:
            job = await client.create_job("test.noop")

            async def watch() -> None:
                async for update in client.watch_job(job.name):
                    seen.append((update.state, update.progress_percent))

            watcher = asyncio.create_task(watch())
            await wait_until(lambda: _at_least(seen, 1), STEP_SECONDS)
        # Down and up again with nothing changed: the re-opened watch yields nothing new.
        async with jobs_server(settings, port) as server:
            await wait_until(lambda: _watched(server), STEP_SECONDS)
            [claimed] = await repo.claim("w1", ["test.noop"], 1, 60.0)
            await wait_until(lambda: _at_least(seen, 2), STEP_SECONDS)
        # Changed twice while the server is down: the watch shows where the job is now.
        assert claimed.job.lease_id is not None
        lease = LeaseRef(job_id=claimed.job.id, lease_id=claimed.job.lease_id)
        await repo.report_progress(lease, 40, "")
        await repo.complete([(lease, {})])
        async with jobs_server(settings, port):
            async with asyncio.timeout(STEP_SECONDS):
                await watcher
    finally:
        await channel.close()
        await pool.close()
    assert seen == [
        (job_pb2.JOB_STATE_QUEUED, 0),
        (job_pb2.JOB_STATE_RUNNING, 0),
        (job_pb2.JOB_STATE_SUCCEEDED, 100),
    ]


async def _at_least(items: list[Any], n: int) -> bool:
    return len(items) >= n


async def _watched(server: Any) -> bool:
    return notifier_of(server).waiter_count > 0


async def test_every_client_call_has_a_deadline(svc: Jobs) -> None:
    """Behind a proxy that stops forwarding, every call ends within its bound."""
    target = svc.server.address.rsplit(":", 1)
    async with TcpProxy(target[0], int(target[1])) as proxy:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{proxy.port}")
        bound = 1.0
        client = JobsClient(
            channel, svc.admin, timeout=bound, bulk_timeout=bound, watch_idle=bound, watch_retry=0
        )
        job = await client.create_job("test.noop")  # connected, then the path goes dead
        batch = await svc.jobs.CreateBatch(
            job_service_pb2.CreateBatchRequest(jobs=[job_pb2.JobSpec(type="test.noop")]),
            metadata=svc.admin,
        )
        proxy.pause()
        calls = {
            "create_job": lambda: client.create_job("test.noop"),
            "get_job": lambda: client.get_job(job.name),
            "cancel_job": lambda: client.cancel_job(job.name),
            "get_job_counts": lambda: client.get_job_counts(OWNER),
            "delete_user_jobs": lambda: client.delete_user_jobs(OTHER),
            "watch_job": lambda: _drain(client.watch_job(job.name)),
            "watch_batch": lambda: _drain(client.watch_batch(batch.batch.name)),
            "retry_job": lambda: client.retry_job(job.name),
            "list_jobs": lambda: _drain(client.list_jobs()),
            "queue_stats": lambda: client.queue_stats(),
            "create_batch": lambda: client.create_batch([job_pb2.JobSpec(type="test.noop")]),
            "get_batch": lambda: client.get_batch(batch.batch.name),
            "cancel_batch": lambda: client.cancel_batch(batch.batch.name),
        }
        public = {n for n in vars(JobsClient) if not n.startswith("_")}
        assert set(calls) == public  # a new method needs its line here
        loop = asyncio.get_running_loop()
        try:
            for name, call in calls.items():
                started = loop.time()
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    async with asyncio.timeout(bound + 30):  # generous: a shared, busy machine
                        await call()
                assert raised.value.code() in (
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.UNAVAILABLE,
                ), name
                assert loop.time() - started < bound + 30, name
            # Serving an RPC whose caller has no time left, the client does not even try.
            with deadlines.incoming(0.0), pytest.raises(Unavailable) as refused:
                await client.get_job(job.name)
            assert refused.value.reason == "DEADLINE_TOO_SHORT"
        finally:
            proxy.resume()
            await channel.close()


async def _drain(updates: AsyncIterator[Any]) -> None:
    async for _ in updates:
        pass


async def test_a_rescued_job_keeps_its_place_in_the_queue(svc: Jobs) -> None:
    first = await svc.create()
    [claimed] = await svc.claim(max_jobs=1, lease=0.05)
    assert claimed.job.name == first.name
    later = [await svc.create() for _ in range(2)]
    await asyncio.sleep(0.1)
    assert await reap(svc.repo, JobMetrics()) == 1
    again = await svc.claim(max_jobs=3, lease=60)
    assert [c.job.name for c in again] == [first.name, *(j.name for j in later)]


async def _rescue(svc: Jobs, claimed: Any) -> None:
    """The worker stalled: its lease runs out and the reaper returns the job."""
    await asyncio.sleep(0.1)
    assert await reap(svc.repo, JobMetrics()) == 1


async def _release(svc: Jobs, claimed: Any) -> None:
    """The worker stops before starting the job and hands it back."""
    released = await svc.workers.ReleaseJobs(
        worker_service_pb2.ReleaseJobsRequest(leases=[lease_of(claimed)]), metadata=svc.service
    )
    assert released.released_count == 1


@pytest.mark.parametrize(("give_back", "lease"), [(_rescue, 0.05), (_release, 60.0)])
async def test_a_returned_job_keeps_its_place_between_owners(
    jobs_service: JobsFactory, give_back: Any, lease: float
) -> None:
    """A rescue or a release gives back the turn the claim cost its owner (fair claims)."""
    svc = await jobs_service()
    other = bearer("other-token")
    for md in (svc.owner, other):  # both owners served once: equal turns
        await svc.create(md=md)
    for done in await svc.claim(max_jobs=2, lease=60):
        await svc.workers.CompleteJob(
            worker_service_pb2.CompleteJobRequest(lease=lease_of(done)), metadata=svc.service
        )
    mine = await svc.create(md=svc.owner)
    theirs = await svc.create(md=other)
    [claimed] = await svc.claim(max_jobs=1, lease=lease)
    assert claimed.job.name == mine.name  # equal turns: the older job
    await give_back(svc, claimed)
    [next_one] = await svc.claim(max_jobs=1, lease=60)
    assert next_one.job.name == mine.name
    [last] = await svc.claim(max_jobs=1, lease=60)
    assert last.job.name == theirs.name


async def test_a_failed_job_with_a_retry_delay_is_still_scheduled_later(svc: Jobs) -> None:
    first = await svc.create(max_attempts=3)
    [claimed] = await svc.claim(max_jobs=1, lease=60)
    await svc.workers.FailJob(
        worker_service_pb2.FailJobRequest(
            lease=lease_of(claimed),
            error="boom",
            retryable=True,
            retry_delay=duration_pb2.Duration(seconds=600),
        ),
        metadata=svc.service,
    )
    later = await svc.create()
    [next_one] = await svc.claim(max_jobs=1, lease=60)
    assert next_one.job.name == later.name
    assert (await svc.get(first.name)).state == job_pb2.JOB_STATE_SCHEDULED
