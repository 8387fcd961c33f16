"""Baseline queues for bench/bench_jobs.py: PGQueuer, Procrastinate and a raw asyncpg loop.

Runs inside the separate benchmark virtual environment (bench/make_queues_venv.sh), as a
subprocess of bench_jobs.py; imports nothing from the project. Each command prints one JSON
object on its last stdout line.

    python queue_baselines.py <system> setup   DSN
    python queue_baselines.py <system> enqueue DSN SINGLE BATCH
    python queue_baselines.py <system> drain   DSN N         (enqueue N no-ops, drain them)
    python queue_baselines.py <system> latency DSN N         (one job at a time, idle worker)

where <system> is pgqueuer, procrastinate or raw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

SINGLE_CONCURRENCY = 32
LATENCY_GAP_SECONDS = 0.02


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class CpuSampler:
    """CPU seconds used by the PostgreSQL backends of one database (sampled every 50 ms, so
    backends that connect and disconnect meanwhile are counted) plus given processes."""

    def __init__(self, dsn: str, pids: tuple[int, ...] = (), exclude: tuple[int, ...] = ()) -> None:
        self.dsn = dsn
        self.pids = pids
        self.exclude = set(exclude)
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.task: asyncio.Task[None] | None = None

    async def _sample(self, conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        for pid in [r["pid"] for r in rows] + list(self.pids):
            if pid in self.exclude:
                continue
            cpu = cpu_seconds(pid)
            if cpu:
                self.first.setdefault(pid, cpu if self.task is None else 0.0)
                self.last[pid] = cpu

    async def __aenter__(self) -> CpuSampler:
        self.conn = await asyncpg.connect(self.dsn)
        await self._sample(self.conn)

        async def loop() -> None:
            while True:
                await asyncio.sleep(0.05)
                await self._sample(self.conn)

        self.task = asyncio.create_task(loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self._sample(self.conn)
        await self.conn.close()

    def of(self, pid: int) -> float:
        return self.last.get(pid, 0.0) - self.first.get(pid, 0.0)

    @property
    def seconds(self) -> float:
        return sum(self.last[pid] - self.first.get(pid, 0.0) for pid in self.last)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def concurrently(n: int, make: Callable[[int], Awaitable[Any]]) -> float:
    """Run ``make(i)`` for i < n with SINGLE_CONCURRENCY in flight; return jobs/s."""
    queue = iter(range(n))

    async def lane() -> None:
        for i in queue:
            await make(i)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(SINGLE_CONCURRENCY)))
    return n / (time.perf_counter() - started)


# --- PGQueuer ------------------------------------------------------------------------------


async def pgq_setup(dsn: str) -> dict[str, Any]:
    from pgqueuer import AsyncpgDriver, Queries

    conn = await asyncpg.connect(dsn)
    await Queries(AsyncpgDriver(conn)).install()
    await conn.close()
    return {}


async def pgq_enqueue(dsn: str, single: int, batch: int) -> dict[str, Any]:
    from pgqueuer import AsyncpgPoolDriver, Queries

    pool = await asyncpg.create_pool(dsn, min_size=SINGLE_CONCURRENCY, max_size=SINGLE_CONCURRENCY)
    queries = Queries(AsyncpgPoolDriver(pool))
    single_rate = await concurrently(single, lambda i: queries.enqueue("noop", None, 0))
    started = time.perf_counter()
    for start in range(0, batch, 1000):
        n = min(1000, batch - start)
        await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
    batch_rate = batch / (time.perf_counter() - started)
    await pool.execute("TRUNCATE pgqueuer")
    await pool.close()
    return {"single": single_rate, "batch": batch_rate}


async def pgq_worker(dsn: str, n: int, on_job: Callable[[Any], None], batch_size: int) -> float:
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    conn = await asyncpg.connect(dsn)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    done = 0
    finished = asyncio.Event()

    @qm.entrypoint("noop")
    async def noop(job: Any) -> None:
        nonlocal done
        on_job(job)
        done += 1
        if done >= n:
            finished.set()

    async def stop_when_done() -> None:
        await finished.wait()
        qm.shutdown.set()

    stopper = asyncio.create_task(stop_when_done())
    started = time.perf_counter()
    await qm.run(
        batch_size=batch_size,
        mode=QueueExecutionMode.continuous,
        dequeue_timeout=timedelta(seconds=5),
    )
    elapsed = time.perf_counter() - started
    stopper.cancel()
    return elapsed


async def pgq_empty_tables(conn: asyncpg.Connection) -> None:
    """Start every drain from empty tables: PGQueuer keeps a log row per finished job, and a
    log grown by earlier drains made each later drain slower (7.2k, 5.6k, 3.6k jobs/s over
    three alternating rounds before this)."""
    tables = await conn.fetch(
        "SELECT format('%I.%I', schemaname, tablename) AS t FROM pg_tables "
        "WHERE tablename LIKE 'pgqueuer%'"
    )
    if tables:
        await conn.execute("TRUNCATE " + ", ".join(row["t"] for row in tables))


async def pgq_drain(dsn: str, n: int) -> dict[str, Any]:
    from pgqueuer import AsyncpgDriver, Queries

    best: dict[str, float] = {}
    for batch_size in (10, 100):  # give the baseline its better setting
        conn = await asyncpg.connect(dsn)
        await pgq_empty_tables(conn)
        queries = Queries(AsyncpgDriver(conn))
        for start in range(0, n, 5000):
            k = min(5000, n - start)
            await queries.enqueue(["noop"] * k, [None] * k, [0] * k)
        await conn.close()
        async with CpuSampler(dsn, (os.getpid(),)) as cpu:
            wall = await pgq_worker(dsn, n, lambda job: None, batch_size)
        # The same window as mediagrid's: PostgreSQL's own times, from the first pick to the
        # last recorded success (PGQueuer logs both), not the wall clock around qm.run, which
        # includes its start-up and shutdown.
        conn = await asyncpg.connect(dsn)
        elapsed = await conn.fetchval(
            "SELECT extract(epoch FROM max(created) FILTER (WHERE status = 'successful')"
            " - min(created) FILTER (WHERE status = 'picked'))::float8 FROM pgqueuer_log"
        )
        await conn.close()
        if not elapsed or elapsed <= 0:
            elapsed = wall
        if n / elapsed > best.get("drain", 0.0):
            best = {
                "drain": n / elapsed,
                "drain_wall": n / wall,
                "cpu_us_per_job": cpu.seconds / n * 1e6,
            }
    return best


async def pgq_latency(dsn: str, n: int) -> dict[str, Any]:
    from pgqueuer import AsyncpgDriver, Queries

    started: dict[str, float] = {}

    def record(job: Any) -> None:
        started[json.loads(job.payload)["sent"]] = time.time()

    worker = asyncio.create_task(pgq_worker(dsn, n, record, 10))
    await asyncio.sleep(1.0)  # let the consumer reach its idle wait
    conn = await asyncpg.connect(dsn)
    queries = Queries(AsyncpgDriver(conn))
    sent: dict[str, float] = {}
    for i in range(n):
        key = str(i)
        sent[key] = time.time()
        await queries.enqueue("noop", json.dumps({"sent": key}).encode(), 0)
        await asyncio.sleep(LATENCY_GAP_SECONDS)
    await worker
    await conn.close()
    latencies = [(started[k] - sent[k]) * 1000 for k in sent]
    return {"p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 0.99)}


# --- Procrastinate -------------------------------------------------------------------------


def procrastinate_app(dsn: str) -> Any:
    import procrastinate

    return procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))


async def pc_setup(dsn: str) -> dict[str, Any]:
    app = procrastinate_app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
    return {}


async def pc_enqueue(dsn: str, single: int, batch: int) -> dict[str, Any]:
    app = procrastinate_app(dsn)

    @app.task(name="noop")
    async def noop() -> None:
        return None

    async with app.open_async():
        single_rate = await concurrently(single, lambda i: noop.defer_async())
        started = time.perf_counter()
        for start in range(0, batch, 1000):
            k = min(1000, batch - start)
            await noop.batch_defer_async(*({} for _ in range(k)))
        batch_rate = batch / (time.perf_counter() - started)
    conn = await asyncpg.connect(dsn)
    await conn.execute("DELETE FROM procrastinate_jobs")
    await conn.close()
    return {"single": single_rate, "batch": batch_rate}


async def pc_drain(dsn: str, n: int) -> dict[str, Any]:
    app = procrastinate_app(dsn)

    @app.task(name="noop")
    async def noop() -> None:
        return None

    async with app.open_async():
        for start in range(0, n, 1000):
            k = min(1000, n - start)
            await noop.batch_defer_async(*({} for _ in range(k)))
        async with CpuSampler(dsn, (os.getpid(),)) as cpu:
            started = time.perf_counter()
            await app.run_worker_async(concurrency=16, wait=False, install_signal_handlers=False)
            elapsed = time.perf_counter() - started
    return {"drain": n / elapsed, "cpu_us_per_job": cpu.seconds / n * 1e6}


async def pc_latency(dsn: str, n: int) -> dict[str, Any]:
    app = procrastinate_app(dsn)
    started: dict[str, float] = {}
    done = asyncio.Event()

    @app.task(name="stamp")
    async def stamp(sent: str) -> None:
        started[sent] = time.time()
        if len(started) >= n:
            done.set()

    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(concurrency=4, wait=True, install_signal_handlers=False)
        )
        await asyncio.sleep(1.0)
        sent: dict[str, float] = {}
        for i in range(n):
            key = str(i)
            sent[key] = time.time()
            await stamp.defer_async(sent=key)
            await asyncio.sleep(LATENCY_GAP_SECONDS)
        await asyncio.wait_for(done.wait(), 120)
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker
    latencies = [(started[k] - sent[k]) * 1000 for k in sent]
    return {"p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 0.99)}


# --- raw asyncpg: the physical limit ---------------------------------------------------------

RAW_SCHEMA = """
CREATE TABLE IF NOT EXISTS raw_jobs (
    id bigserial PRIMARY KEY,
    state text NOT NULL DEFAULT 'queued',
    priority int NOT NULL DEFAULT 0,
    payload jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz
);
CREATE INDEX IF NOT EXISTS raw_jobs_claim ON raw_jobs (priority DESC, id) WHERE state = 'queued';
"""
RAW_CLAIM = """
UPDATE raw_jobs SET state = 'running', started_at = now()
WHERE id IN (SELECT id FROM raw_jobs WHERE state = 'queued'
             ORDER BY priority DESC, id LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id, payload
"""
RAW_DONE = "UPDATE raw_jobs SET state = 'done' WHERE id = ANY($1::bigint[])"


async def raw_setup(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    await conn.execute(RAW_SCHEMA)
    await conn.close()
    return {}


async def raw_enqueue(dsn: str, single: int, batch: int) -> dict[str, Any]:
    pool = await asyncpg.create_pool(dsn, min_size=SINGLE_CONCURRENCY, max_size=SINGLE_CONCURRENCY)
    single_rate = await concurrently(
        single, lambda i: pool.execute("INSERT INTO raw_jobs (payload) VALUES ('{}')")
    )
    started = time.perf_counter()
    for start in range(0, batch, 1000):
        k = min(1000, batch - start)
        await pool.execute(
            "INSERT INTO raw_jobs (payload) SELECT '{}'::jsonb FROM generate_series(1, $1)", k
        )
    batch_rate = batch / (time.perf_counter() - started)
    await pool.execute("TRUNCATE raw_jobs")
    await pool.close()
    return {"single": single_rate, "batch": batch_rate}


async def raw_drain(dsn: str, n: int) -> dict[str, Any]:
    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=4)
    await pool.execute(
        "INSERT INTO raw_jobs (payload) SELECT '{}'::jsonb FROM generate_series(1, $1)", n
    )

    async def loop() -> None:
        while True:
            rows = await pool.fetch(RAW_CLAIM, 100)
            if not rows:
                return
            await pool.execute(RAW_DONE, [r["id"] for r in rows])

    async with CpuSampler(dsn, (os.getpid(),)) as cpu:
        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(4)))
        elapsed = time.perf_counter() - started
    await pool.execute("TRUNCATE raw_jobs")
    await pool.close()
    return {"drain": n / elapsed, "cpu_us_per_job": cpu.seconds / n * 1e6}


async def raw_latency(dsn: str, n: int) -> dict[str, Any]:
    listener = await asyncpg.connect(dsn)
    worker = await asyncpg.connect(dsn)
    producer = await asyncpg.connect(dsn)
    woken = asyncio.Event()
    await listener.add_listener("raw_jobs", lambda *args: woken.set())
    started: dict[str, float] = {}

    async def work() -> None:
        while len(started) < n:
            await woken.wait()
            woken.clear()
            for row in await worker.fetch(RAW_CLAIM, 100):
                started[json.loads(row["payload"])["sent"]] = time.time()
                await worker.execute(RAW_DONE, [row["id"]])

    task = asyncio.create_task(work())
    sent: dict[str, float] = {}
    for i in range(n):
        key = str(i)
        sent[key] = time.time()
        async with producer.transaction():
            await producer.execute(
                "INSERT INTO raw_jobs (payload) VALUES ($1::jsonb)", json.dumps({"sent": key})
            )
            await producer.execute("NOTIFY raw_jobs")
        await asyncio.sleep(LATENCY_GAP_SECONDS)
    await asyncio.wait_for(task, 120)
    for conn in (listener, worker, producer):
        await conn.close()
    latencies = [(started[k] - sent[k]) * 1000 for k in sent]
    return {"p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 0.99)}


COMMANDS: dict[tuple[str, str], Callable[..., Awaitable[dict[str, Any]]]] = {
    ("pgqueuer", "setup"): pgq_setup,
    ("pgqueuer", "enqueue"): pgq_enqueue,
    ("pgqueuer", "drain"): pgq_drain,
    ("pgqueuer", "latency"): pgq_latency,
    ("procrastinate", "setup"): pc_setup,
    ("procrastinate", "enqueue"): pc_enqueue,
    ("procrastinate", "drain"): pc_drain,
    ("procrastinate", "latency"): pc_latency,
    ("raw", "setup"): raw_setup,
    ("raw", "enqueue"): raw_enqueue,
    ("raw", "drain"): raw_drain,
    ("raw", "latency"): raw_latency,
}


def main(argv: list[str]) -> None:
    system, command, dsn, *numbers = argv
    result = asyncio.run(COMMANDS[(system, command)](dsn, *(int(x) for x in numbers)))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
