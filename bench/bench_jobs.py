"""Benchmark of the jobs service against PGQueuer, Procrastinate and a raw asyncpg loop.

In one run, on the same PostgreSQL, in a dedicated database created and dropped here, in
``--rounds`` rounds that alternate mediagrid and PGQueuer measurement by measurement (the
machine's load phases, seconds long on a shared machine, fall on both alike; every round's
ratio is printed and the median of the rounds is the figure):

(a) enqueue throughput: single ``CreateJob`` calls (32 in flight) and ``CreateBatch`` calls of
    1,000 jobs, against PGQueuer's ``enqueue`` of one job (32 in flight) and of 1,000;
(b) drain throughput of N no-op jobs through the worker runtime (``python -m
    services.jobs.worker`` = ``mediagrid worker``) over gRPC, server in its own process,
    and the CPU per drained job of every process involved (PostgreSQL's backends included);
(c) enqueue-to-start latency p50/p99 with an idle worker (one job every 20 ms);
(d) once, after the rounds: Procrastinate and a raw asyncpg SKIP LOCKED loop (the limit),
    for reference (``--others``); PGQueuer and Procrastinate run as subprocesses in their own
    virtual environment (bench/make_queues_venv.sh);
(e) claim cost (one ``claim_jobs`` statement of 100 jobs) with an empty table and with
    1,000,000 finished jobs in it (``--finished-rows``, 0 skips it).

Usage: python bench/bench_jobs.py [--dsn ADMIN_DSN] [--rounds 3] [--drain-jobs 20000]
       [--latency-jobs 200] [--finished-rows 1000000] [--queues-venv DIR] [--skip-baselines]
Quick mode (``make bench-quick``): fewer jobs and calls, no Procrastinate/raw, no claim cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

import asyncpg  # noqa: E402
import grpc  # noqa: E402
from mediagrid.jobs.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc  # noqa: E402

from bench.queue_baselines import CpuSampler  # noqa: E402
from bench.rounds import Ratios, quick  # noqa: E402

USER = (("authorization", "Bearer bench-user"),)
SINGLE_CONCURRENCY = 32
LATENCY_GAP_SECONDS = 0.02
PROCRASTINATE_DRAIN_JOBS = 3000
BATCH_LIMIT = 20_000  # the bench server's job_batch_max_jobs: one CreateBatch, one commit  # ~550 jobs/s: 20,000 would take most of a minute

SERVER_SCRIPT = """
import asyncio, logging, sys
from common.context import Principal
from common.errors import Unauthenticated
from common.runtime import running_suite
from common.server import serve_until_signalled
from common.settings import Settings

class Tokens:
    async def authenticate(self, token):
        if token == "bench-user":
            # A service, like the producers of bulk work: a user's own creations are capped and
            # serialized per owner (docs/jobs.md, Quota), which is not the queue's speed.
            return Principal(name="users/bench", user_id="bench", role="service")
        if token == "bench-worker":
            return Principal(name="users/worker", user_id="worker", role="service")
        raise Unauthenticated("unknown token")

async def main():
    settings = Settings(
        environment="test", database_url=sys.argv[1], grpc_port=int(sys.argv[2]),
        log_level="WARNING", log_format="text", db_pool_max_size=16,
        job_batch_max_jobs=20000, job_claim_max_jobs=2000,  # BATCH_LIMIT
        # A slow phase of a shared machine must slow the benchmark down, not fail it.
        db_call_timeout_seconds=60,
    )
    async with running_suite(settings, ["jobs"], authenticator=Tokens()) as (server, _ctx):
        from common import gc_tuning

        gc_tuning.tune(settings.gc_gen0_threshold)  # what `mediagrid serve` does once ready
        print("READY", flush=True)
        await serve_until_signalled(server)

logging.basicConfig(level=logging.WARNING)
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_database(dsn: str, database: str) -> str:
    head, sep, query = dsn.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{database}{sep}{query}"


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGRID_")}
    return {**clean, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}"}


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Each metric's median over the rounds that measured it."""
    keys = {key for r in rounds for key in r}
    return {key: statistics.median(r[key] for r in rounds if key in r) for key in sorted(keys)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.db = f"mg_bench_jobs_{os.getpid()}"
        self.dsn = with_database(args.dsn, self.db)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.results: dict[str, dict[str, float]] = {}
        self.server_pid = 0
        self.cpu_split = ""
        self.forwarders: set[asyncio.Task[None]] = set()
        self.ours_rounds: list[dict[str, float]] = []
        self.theirs_rounds: list[dict[str, float]] = []
        # mediagrid / PGQueuer per metric, with the targets of docs/benchmarks.md.
        self.ratios = {
            "enqueue_single": Ratios("enqueue, single calls / PGQueuer", target=1.0),
            "enqueue_batch": Ratios("enqueue, batches of 1,000 / PGQueuer", target=1.0),
            "drain": Ratios("drain / PGQueuer", target=1.2, every_round=True),
            "cpu_us_per_job": Ratios(
                "CPU per drained job / PGQueuer", target=1.0, lower_is_better=True, unit="us"
            ),
            "p50_ms": Ratios(
                "enqueue-to-start p50 / PGQueuer", target=1.0, lower_is_better=True, unit="ms"
            ),
            "p99_ms": Ratios("enqueue-to-start p99 / PGQueuer", lower_is_better=True, unit="ms"),
        }

    # --- processes ----------------------------------------------------------------------

    async def start_server(self) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SERVER_SCRIPT,
            self.dsn,
            str(self.port),
            stdout=asyncio.subprocess.PIPE,
            env=env(),
            cwd=ROOT,
        )
        assert process.stdout is not None
        self.server_pid = process.pid
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if b"READY" not in line:
            raise RuntimeError("the jobs server did not start")
        return process

    async def start_worker(self, types: str, concurrency: int) -> asyncio.subprocess.Process:
        worker_env = {
            **env(),
            "MEDIAGRID_ENVIRONMENT": "test",
            # INFO for the "serving" line that says the worker is up (read below).
            "MEDIAGRID_LOG_LEVEL": "INFO",
            "MEDIAGRID_WORKER_HANDLER_MODULES": '["services.jobs.builtin_handlers"]',
            "MEDIAGRID_WORKER_ACK_BATCH_SIZE": "1000",
            "MEDIAGRID_WORKER_PREFETCH": str(self.args.prefetch),
        }
        if self.args.claims_in_flight:  # else the setting's own default
            worker_env["MEDIAGRID_WORKER_CLAIMS_IN_FLIGHT"] = str(self.args.claims_in_flight)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.jobs.worker",
            "worker",
            "--types",
            types,
            "--concurrency",
            str(concurrency),
            "--address",
            self.address,
            "--token",
            "bench-worker",
            env=worker_env,
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stderr is not None
        stderr = process.stderr

        async def serving() -> None:
            while line := await stderr.readline():
                if b"serving" in line:
                    return
            raise RuntimeError("the worker exited before serving")

        async def forward() -> None:  # keep the pipe drained; pass warnings and errors on
            while line := await stderr.readline():
                if b"INFO" not in line:
                    sys.stderr.write(line.decode(errors="replace"))

        await asyncio.wait_for(serving(), 120)
        self.forwarders.add(asyncio.create_task(forward()))
        await asyncio.sleep(0.3)  # its first (idle, long-polling) claim reaches the server
        return process

    @staticmethod
    async def stop(process: asyncio.subprocess.Process) -> None:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()

    # --- mediagrid ------------------------------------------------------------------------

    async def enqueue_mediagrid(self, conn: asyncpg.Connection) -> dict[str, float]:
        """(a) CreateJob calls, SINGLE_CONCURRENCY in flight, then CreateBatch calls of 1,000."""
        single, batch = self.args.single_calls, self.args.batch_jobs
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            request = job_service_pb2.CreateJobRequest(job=job_pb2.JobSpec(type="noop"))
            await stub.CreateJob(request, metadata=USER)  # connected before the clock starts
            calls = iter(range(single))

            async def lane() -> None:
                for _ in calls:
                    await stub.CreateJob(request, metadata=USER)

            started = time.perf_counter()
            await asyncio.gather(*(lane() for _ in range(SINGLE_CONCURRENCY)))
            single_rate = single / (time.perf_counter() - started)
            started = time.perf_counter()
            for start in range(0, batch, 1000):
                await stub.CreateBatch(self.batch_request(min(1000, batch - start)), metadata=USER)
            batch_rate = batch / (time.perf_counter() - started)
        await conn.execute("TRUNCATE jobs.jobs, jobs.job_keys, jobs.batches")
        return {"enqueue_single": single_rate, "enqueue_batch": batch_rate}

    async def latency_mediagrid(self, conn: asyncpg.Connection) -> dict[str, float]:
        """(c) One job every LATENCY_GAP_SECONDS to an idle worker: creation to handler start."""
        worker = await self.start_worker("stamp", 8)
        sent: dict[str, float] = {}
        try:
            async with grpc.aio.insecure_channel(self.address) as channel:
                stub = job_service_pb2_grpc.JobServiceStub(channel)
                # Connected before the clock starts, as PGQueuer's enqueuing connection is: the
                # first job's latency would otherwise include the channel's TCP and HTTP/2 set-up.
                await channel.channel_ready()
                stamp = job_service_pb2.CreateJobRequest(job=job_pb2.JobSpec(type="stamp"))
                for _ in range(self.args.latency_jobs):
                    before = time.time()
                    response = await stub.CreateJob(stamp, metadata=USER)
                    sent[response.job.name.removeprefix("jobs/")] = before
                    await asyncio.sleep(LATENCY_GAP_SECONDS)
            await self.poll(
                conn, "SELECT count(*) FROM jobs.jobs WHERE state = 'succeeded'", len(sent)
            )
        finally:
            await self.stop(worker)
        rows = await conn.fetch(
            "SELECT id::text, (result->>'started_unix')::float8 AS s FROM jobs.jobs"
        )
        latencies = [(r["s"] - sent[r["id"]]) * 1000 for r in rows]
        await conn.execute("TRUNCATE jobs.jobs, jobs.job_keys, jobs.batches")
        return {"p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 0.99)}

    async def drain_mediagrid(self, conn: asyncpg.Connection) -> dict[str, float]:
        """(b) One drain of N no-op jobs through the worker runtime over gRPC.

        The worker starts first and waits, idle, on an empty queue; then the N jobs arrive in
        one CreateBatch (one transaction: they become claimable together). The drain's window
        is PostgreSQL's own: from the first claim (min started_at) to the last completion
        (max finished_at), so neither the worker's start-up nor the enqueue is in it, and no
        job can be drained before the clock starts (with the jobs queued before the worker
        started, a fast worker finished part of them before the first poll saw it).
        """
        n = self.args.drain_jobs
        worker = await self.start_worker("noop", self.args.concurrency)
        try:
            async with grpc.aio.insecure_channel(self.address) as channel:
                stub = job_service_pb2_grpc.JobServiceStub(channel)
                for start in range(0, n, BATCH_LIMIT):
                    size = min(BATCH_LIMIT, n - start)
                    await stub.CreateBatch(self.batch_request(size), metadata=USER)
            # CPU from the first claim on: the enqueue is not part of the drain's cost.
            await self.poll(conn, "SELECT count(*) FROM jobs.jobs WHERE state <> 'queued'", 1)
            async with CpuSampler(
                self.dsn, (self.server_pid, worker.pid), exclude=(conn.get_server_pid(),)
            ) as cpu:
                await self.poll(
                    conn, "SELECT count(*) FROM jobs.jobs WHERE state = 'succeeded'", n, 0.02
                )
        finally:
            await self.stop(worker)
        window = await conn.fetchval(
            "SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 FROM jobs.jobs"
        )
        split = {"server": cpu.of(self.server_pid), "worker": cpu.of(worker.pid or 0)}
        split["postgres"] = cpu.seconds - split["server"] - split["worker"]
        self.cpu_split = ", ".join(f"{k} {v / n * 1e6:.0f}" for k, v in split.items())
        await conn.execute("TRUNCATE jobs.jobs, jobs.job_keys, jobs.batches")
        return {"drain": n / window, "cpu_us_per_job": cpu.seconds / n * 1e6}

    async def rounds(self, conn: asyncpg.Connection) -> None:
        """Every measurement of mediagrid right before the same one of PGQueuer, round after
        round: the machine's load phases fall on both alike; each round's ratio is printed."""
        skip = self.args.skip_baselines
        for round_ in range(1, self.args.rounds + 1):
            print(f"round {round_}/{self.args.rounds}", flush=True)
            ours = await self.enqueue_mediagrid(conn)
            theirs = (
                {}
                if skip
                else await asyncio.to_thread(
                    self.baseline,
                    "pgqueuer",
                    "enqueue",
                    self.args.single_calls,
                    self.args.batch_jobs,
                )
            )
            self.record(
                ours,
                {
                    "enqueue_single": theirs.get("single", 0.0),
                    "enqueue_batch": theirs.get("batch", 0.0),
                },
            )
            ours = await self.drain_mediagrid(conn)
            theirs = (
                {}
                if skip
                else await asyncio.to_thread(
                    self.baseline, "pgqueuer", "drain", self.args.drain_jobs
                )
            )
            self.record(ours, theirs)
            print(f"  mediagrid CPU per drained job by process (us): {self.cpu_split}")
            if self.args.latency_jobs:
                ours = await self.latency_mediagrid(conn)
                theirs = (
                    {}
                    if skip
                    else await asyncio.to_thread(
                        self.baseline, "pgqueuer", "latency", self.args.latency_jobs
                    )
                )
                self.record(ours, theirs)

    def record(self, ours: dict[str, float], theirs: dict[str, float]) -> None:
        """Keep one round's values of both systems and print the ratio of each metric."""
        self.ours_rounds.append(ours)
        if theirs:
            self.theirs_rounds.append(theirs)
        for key, value in ours.items():
            if key in self.ratios and theirs.get(key):
                print(self.ratios[key].add(value, theirs[key]), flush=True)
            elif key in self.ratios:
                print(f"  {self.ratios[key].label}: {value:,.1f}", flush=True)

    @staticmethod
    def batch_request(n: int) -> job_service_pb2.CreateBatchRequest:
        return job_service_pb2.CreateBatchRequest(jobs=[job_pb2.JobSpec(type="noop")] * n)

    @staticmethod
    async def poll(
        conn: asyncpg.Connection, query: str, target: int, every: float = 0.005
    ) -> float:
        deadline = time.perf_counter() + 600
        while time.perf_counter() < deadline:
            if await conn.fetchval(query) >= target:
                return time.perf_counter()
            await asyncio.sleep(every)
        raise TimeoutError(query)

    # --- claim cost vs finished rows -------------------------------------------------------

    async def claim_cost(self, conn: asyncpg.Connection) -> None:
        from common.db import create_pool
        from common.settings import Settings
        from services.jobs.models import JobSpec
        from services.jobs.repository import JobRepository

        pool = await create_pool(Settings(environment="test", database_url=self.dsn), self.dsn)
        repo = JobRepository(pool)
        spec = JobSpec(type="cost.noop", max_attempts=3)

        from services.jobs.repository import Q

        async def buffers() -> int:
            """Shared buffers one 100-job claim touches: a load-independent cost measure."""
            async with pool.acquire() as c:
                tx = c.transaction()
                await tx.start()
                plan = await c.fetchval(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + Q.claim_jobs,
                    ["cost.noop"],
                    100,
                    "bench",
                    uuid.uuid4(),
                    30.0,
                    100,
                    0,  # job_owner_max_running: the bench's jobs are a service's, not capped
                )
                await tx.rollback()
            top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
            return int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])

        async def measure() -> tuple[float, int]:
            await repo.create_batch("users/bench", "", None, [spec] * 10_000, 1000)
            touched = await buffers()
            timings = []
            for _ in range(60):
                started = time.perf_counter()
                claimed = await repo.claim_rows("bench", ["cost.noop"], 100, 30)
                timings.append(time.perf_counter() - started)
                await repo.complete_ids(
                    [c["id"] for c in claimed],
                    [c["lease_id"] for c in claimed],
                    [None] * len(claimed),
                )
            await conn.execute("DELETE FROM jobs.jobs WHERE type = 'cost.noop'")
            await conn.execute("VACUUM ANALYZE jobs.jobs")
            return statistics.median(timings[10:]) * 1000, touched

        empty, empty_buffers = await measure()
        rows = self.args.finished_rows
        print(f"  inserting {rows:,} finished jobs ...", flush=True)
        for start in range(0, rows, 200_000):
            await conn.execute(
                """INSERT INTO jobs.jobs (id, type, owner, state, max_attempts, attempts,
                                          finished_at, started_at, result)
                   SELECT gen_random_uuid(), 'old.noop', 'users/old', 'succeeded', 3, 1,
                          now() - interval '1 hour', now() - interval '1 hour', '{}'
                   FROM generate_series(1, $1)""",
                min(200_000, rows - start),
            )
        await conn.execute("VACUUM ANALYZE jobs.jobs")
        await conn.execute("VACUUM ANALYZE jobs.job_keys")
        await conn.execute("CHECKPOINT")  # keep the insert's write-back out of the timing
        full, full_buffers = await measure()
        await pool.close()
        self.results["claim cost (ms per 100-job claim)"] = {
            "empty": empty,
            "full": full,
            "empty_buffers": empty_buffers,
            "full_buffers": full_buffers,
        }

    # --- baselines -----------------------------------------------------------------------------

    def baseline(self, system: str, command: str, *numbers: int) -> dict[str, float]:
        """One command of bench/queue_baselines.py in the baselines' venv; a failure (on a
        shared machine, most often a connection refused at max_connections) is shown and
        retried once."""
        python = Path(self.args.queues_venv) / "bin" / "python"
        command_line = [
            str(python),
            str(ROOT / "bench" / "queue_baselines.py"),
            system,
            command,
            self.dsn,
            *map(str, numbers),
        ]
        for attempt in (1, 2):
            done = subprocess.run(command_line, capture_output=True, text=True, timeout=900)
            if done.returncode == 0:
                return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
            print(f"  {system} {command} failed (attempt {attempt}):", file=sys.stderr)
            print("\n".join(done.stderr.strip().splitlines()[-5:]), file=sys.stderr)
        raise RuntimeError(f"{system} {command} failed twice")

    def others(self) -> None:
        """Procrastinate and the raw asyncpg loop, once, for reference (not alternated)."""
        for system, label, drain_jobs in (
            ("procrastinate", "Procrastinate", PROCRASTINATE_DRAIN_JOBS),
            ("raw", "raw asyncpg SKIP LOCKED", self.args.drain_jobs),
        ):
            print(f"  {label} ...", flush=True)
            self.baseline(system, "setup")
            result = self.results.setdefault(label, {})
            single, batch = self.args.single_calls, self.args.batch_jobs
            enqueue = self.baseline(system, "enqueue", single, batch)
            result["enqueue_single"] = enqueue["single"]
            result["enqueue_batch"] = enqueue["batch"]
            result.update(self.baseline(system, "drain", drain_jobs))
            if self.args.latency_jobs:
                result.update(self.baseline(system, "latency", self.args.latency_jobs))

    # --- report ----------------------------------------------------------------------------------

    def report(self) -> None:
        self.results = {
            "mediagrid over gRPC": median_of(self.ours_rounds),
            **({"PGQueuer": median_of(self.theirs_rounds)} if self.theirs_rounds else {}),
            **self.results,
        }
        systems = [s for s in self.results if not s.startswith("claim cost")]
        rows = [
            ("enqueue, single calls (jobs/s)", "enqueue_single"),
            ("enqueue, batches (jobs/s)", "enqueue_batch"),
            ("drain no-op jobs (jobs/s)", "drain"),
            ("  CPU per drained job (us, all processes)", "cpu_us_per_job"),
            ("enqueue-to-start p50 (ms)", "p50_ms"),
            ("enqueue-to-start p99 (ms)", "p99_ms"),
        ]
        width = 44
        print(f"\nmedians of {self.args.rounds} rounds (mediagrid and PGQueuer alternating)")
        print("metric".ljust(width) + "".join(s[:24].rjust(26) for s in systems))
        for label, key in rows:
            cells = []
            for system in systems:
                value = self.results[system].get(key)
                cells.append(("-" if value is None else f"{value:,.1f}").rjust(26))
            print(label.ljust(width) + "".join(cells))
        print("\nmediagrid / PGQueuer, per round (ratios of the same round):")
        for ratios in self.ratios.values():
            if ratios.rounds:
                print("  " + ratios.summary())
        p99 = self.results["mediagrid over gRPC"].get("p99_ms")
        if p99 is not None:
            print(f"  enqueue-to-start p99 {p99:.1f} ms (target <= 10 ms)")
        cost = self.results.get("claim cost (ms per 100-job claim)")
        if cost:
            print(
                "\nclaim cost, 100 jobs per statement: "
                f"{cost['empty']:.2f} ms with an empty table, "
                f"{cost['full']:.2f} ms with {self.args.finished_rows:,} finished jobs "
                f"(ratio {cost['full'] / cost['empty']:.2f}x); shared buffers touched per claim: "
                f"{cost['empty_buffers']:.0f} empty, {cost['full_buffers']:.0f} full"
            )
        print(
            f"\n(enqueue: {self.args.single_calls:,} single calls, {self.args.batch_jobs:,} jobs in "
            f"batches; drain: {self.args.drain_jobs:,} jobs, worker concurrency "
            f"{self.args.concurrency}; latency: {self.args.latency_jobs} jobs, one every "
            f"{LATENCY_GAP_SECONDS * 1000:.0f} ms; Procrastinate drained "
            f"{PROCRASTINATE_DRAIN_JOBS:,}; drains timed from PostgreSQL's first claim to its last "
            "recorded completion)"
        )

    async def run(self) -> None:
        from common.migrations import migrate

        admin = await asyncpg.connect(self.args.dsn)
        await admin.execute(f"CREATE DATABASE {self.db}")
        try:
            conn = await asyncpg.connect(self.dsn)
            await migrate(conn, "jobs", ROOT / "services" / "jobs" / "sql" / "migrations")
            if not self.args.skip_baselines:
                self.baseline("pgqueuer", "setup")
            server = await self.start_server()
            try:
                await self.rounds(conn)
            finally:
                await self.stop(server)
            if self.args.others and not self.args.skip_baselines:
                print("once, for reference ...", flush=True)
                await asyncio.to_thread(self.others)
            if self.args.finished_rows:
                print("claim cost ...", flush=True)
                await self.claim_cost(conn)
            await conn.close()
        finally:
            await admin.execute(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
            await admin.close()
        self.report()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_jobs", description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rounds", type=int, default=3, help="alternating mediagrid/PGQueuer")
    parser.add_argument("--single-calls", type=int, default=quick(2000, 300))
    parser.add_argument("--batch-jobs", type=int, default=quick(20_000, 3000))
    parser.add_argument("--drain-jobs", type=int, default=quick(20_000, 3000))
    parser.add_argument("--latency-jobs", type=int, default=quick(200, 40))
    parser.add_argument("--finished-rows", type=int, default=quick(1_000_000, 0))
    parser.add_argument(
        "--others",
        action=argparse.BooleanOptionalAction,
        default=quick(True, False),
        help="also Procrastinate and the raw asyncpg loop, once",
    )
    parser.add_argument("--concurrency", type=int, default=2000)
    parser.add_argument(
        "--claims-in-flight",
        type=int,
        default=0,
        help="worker_claims_in_flight of the worker (default: the setting's default)",
    )
    parser.add_argument("--prefetch", type=int, default=0, help="worker_prefetch of the worker")
    parser.add_argument(
        "--queues-venv", default=os.environ.get("BENCH_QUEUES_VENV", "/tmp/mediagrid-bench-queues")
    )
    parser.add_argument("--skip-baselines", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_baselines and not (Path(args.queues_venv) / "bin" / "python").exists():
        # PGQueuer and Procrastinate never enter the project's environment: they get their
        # own, created here once so that `make bench` needs no preparation.
        print(f"creating the baseline venv at {args.queues_venv} (PGQueuer, Procrastinate) ...")
        subprocess.run(
            ["bash", str(ROOT / "bench" / "make_queues_venv.sh"), args.queues_venv], check=True
        )
    asyncio.run(Bench(args).run())


if __name__ == "__main__":
    main(sys.argv[1:])
