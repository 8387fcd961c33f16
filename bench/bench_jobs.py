"""Benchmark of the jobs service against PGQueuer, Procrastinate and a raw asyncpg loop.

In one run, on the same PostgreSQL, in a dedicated database created and dropped here:

(a) enqueue throughput: single ``CreateJob`` calls (32 in flight) and ``CreateBatch``;
(b) drain throughput of N no-op jobs through the worker runtime (``python -m
    services.jobs.worker`` = ``mediagrid worker``) over gRPC, server in its own process,
    alternating with PGQueuer's drain for ``--drain-rounds`` rounds (medians reported, and
    every round's ratio);
(c) enqueue-to-start latency p50/p99 with an idle worker (one job every 20 ms);
(d) the same three for PGQueuer and Procrastinate, run as subprocesses in their own virtual
    environment (bench/make_queues_venv.sh), and a raw asyncpg SKIP LOCKED loop (the limit);
(e) claim cost (one ``claim_jobs`` statement of 100 jobs) with an empty table and with
    1,000,000 finished jobs in it.

Usage: python bench/bench_jobs.py [--dsn ADMIN_DSN] [--drain-jobs 20000] [--drain-rounds 3]
       [--latency-jobs 200]
       [--finished-rows 1000000] [--queues-venv DIR] [--skip-baselines]
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

USER = (("authorization", "Bearer bench-user"),)
SINGLE_CALLS = 2000
SINGLE_CONCURRENCY = 32
BATCH_JOBS = 20_000
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
    """Each metric's median over rounds."""
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]} if rounds else {}


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
        self.drain_rounds_seen: list[tuple[float, float, float]] = []

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
            "MEDIAGRID_LOG_LEVEL": "WARNING",
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
        )
        await asyncio.sleep(3.0)  # imports and the first (idle, long-polling) claim
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

    async def mediagrid(self, conn: asyncpg.Connection) -> None:
        channel = grpc.aio.insecure_channel(self.address)
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        result = self.results.setdefault("mediagrid over gRPC", {})

        # (a) enqueue
        calls = iter(range(SINGLE_CALLS))
        request = job_service_pb2.CreateJobRequest(job=job_pb2.JobSpec(type="noop"))

        async def lane() -> None:
            for _ in calls:
                await stub.CreateJob(request, metadata=USER)

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(SINGLE_CONCURRENCY)))
        result["enqueue_single"] = SINGLE_CALLS / (time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(BATCH_JOBS // 1000):
            await stub.CreateBatch(self.batch_request(1000), metadata=USER)
        result["enqueue_batch"] = BATCH_JOBS / (time.perf_counter() - started)
        await conn.execute("TRUNCATE jobs.jobs, jobs.job_keys, jobs.batches")

        # (c) latency with an idle worker
        worker = await self.start_worker("stamp", 8)
        sent: dict[str, float] = {}
        try:
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
        result["p50_ms"] = statistics.median(latencies)
        result["p99_ms"] = percentile(latencies, 0.99)
        await conn.execute("TRUNCATE jobs.jobs, jobs.job_keys, jobs.batches")
        await channel.close()

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

    async def drain_rounds(self, conn: asyncpg.Connection) -> None:
        """Alternate mediagrid's and PGQueuer's drains, round after round, so that the
        machine's load phases (seconds long on a shared machine) fall on both alike; the
        table shows the medians and every round's ratio is printed."""
        ours: list[dict[str, float]] = []
        theirs: list[dict[str, float]] = []
        for round_ in range(self.args.drain_rounds):
            print(f"  drain round {round_ + 1}/{self.args.drain_rounds} ...", flush=True)
            ours.append(await self.drain_mediagrid(conn))
            if not self.args.skip_baselines:
                drain = self.args.drain_jobs
                theirs.append(await asyncio.to_thread(self.baseline, "pgqueuer", "drain", drain))
        self.results.setdefault("mediagrid over gRPC", {}).update(median_of(ours))
        if theirs:
            self.drain_rounds_seen = [
                (o["drain"], t["drain"], t.get("drain_wall", t["drain"]))
                for o, t in zip(ours, theirs, strict=True)
            ]
            self.results.setdefault("PGQueuer", {}).update(median_of(theirs))

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
        from services.jobs.models import JobSpec, LeaseRef
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
                claimed = await repo.claim("bench", ["cost.noop"], 100, 30)
                timings.append(time.perf_counter() - started)
                await repo.complete(
                    [(LeaseRef(job_id=c.job.id, lease_id=c.job.lease_id), None) for c in claimed]  # type: ignore[arg-type]
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
        python = Path(self.args.queues_venv) / "bin" / "python"
        output = subprocess.run(
            [
                str(python),
                str(ROOT / "bench" / "queue_baselines.py"),
                system,
                command,
                self.dsn,
                *map(str, numbers),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=900,
        ).stdout
        return json.loads(output.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def baselines(self) -> None:
        for system, label, drain_jobs in (
            ("pgqueuer", "PGQueuer", self.args.drain_jobs),
            ("procrastinate", "Procrastinate", PROCRASTINATE_DRAIN_JOBS),
            ("raw", "raw asyncpg SKIP LOCKED", self.args.drain_jobs),
        ):
            print(f"  {label} ...", flush=True)
            if system != "pgqueuer":  # installed before the alternating drain rounds
                self.baseline(system, "setup")
            result = self.results.setdefault(label, {})
            enqueue = self.baseline(system, "enqueue", SINGLE_CALLS, BATCH_JOBS)
            result["enqueue_single"] = enqueue["single"]
            result["enqueue_batch"] = enqueue["batch"]
            if system != "pgqueuer":  # PGQueuer's drain ran in the alternating rounds
                result.update(self.baseline(system, "drain", drain_jobs))
            result.update(self.baseline(system, "latency", self.args.latency_jobs))

    # --- report ----------------------------------------------------------------------------------

    def report(self) -> None:
        systems = [s for s in self.results if not s.startswith("claim cost")]
        rows = [
            ("enqueue, single calls (jobs/s)", "enqueue_single", True),
            ("enqueue, batches (jobs/s)", "enqueue_batch", True),
            ("drain no-op jobs (jobs/s)", "drain", True),
            ("  CPU per drained job (us, all processes)", "cpu_us_per_job", False),
            ("enqueue-to-start p50 (ms)", "p50_ms", False),
            ("enqueue-to-start p99 (ms)", "p99_ms", False),
        ]
        width = 44
        print()
        print(
            "metric".ljust(width)
            + "".join(s[:24].rjust(26) for s in systems)
            + "   mediagrid/PGQueuer"
        )
        for label, key, higher_better in rows:
            cells = []
            for system in systems:
                value = self.results[system].get(key)
                cells.append(("-" if value is None else f"{value:,.1f}").rjust(26))
            ours = self.results.get("mediagrid over gRPC", {}).get(key)
            theirs = self.results.get("PGQueuer", {}).get(key)
            ratio = f"{ours / theirs:.2f}x" if ours and theirs else "-"
            note = "" if higher_better else " (lower is better)"
            print(label.ljust(width) + "".join(cells) + f"   {ratio}{note}")
        cost = self.results.get("claim cost (ms per 100-job claim)")
        if cost:
            print(
                "\nclaim cost, 100 jobs per statement: "
                f"{cost['empty']:.2f} ms with an empty table, "
                f"{cost['full']:.2f} ms with {self.args.finished_rows:,} finished jobs "
                f"(ratio {cost['full'] / cost['empty']:.2f}x); shared buffers touched per claim: "
                f"{cost['empty_buffers']:.0f} empty, {cost['full_buffers']:.0f} full"
            )
        if self.drain_rounds_seen:
            ratios = [ours / theirs for ours, theirs, _ in self.drain_rounds_seen]
            print(
                "\ndrain rounds, alternating (jobs/s, mediagrid / PGQueuer = ratio; both from "
                "PostgreSQL's first claim to last recorded completion):"
            )
            for index, ((ours, theirs, wall), ratio) in enumerate(
                zip(self.drain_rounds_seen, ratios, strict=True)
            ):
                print(
                    f"  round {index + 1}: {ours:,.0f} / {theirs:,.0f} = {ratio:.2f}x"
                    f"  (PGQueuer by the wall clock around its run: {wall:,.0f})"
                )
            print(
                f"  median ratio {statistics.median(ratios):.2f}x, lowest {min(ratios):.2f}x "
                f"(target >= 1x)"
            )
        if self.cpu_split:
            print(f"\nmediagrid CPU per drained job by process (us, last round): {self.cpu_split}")
        print(
            f"\n(drain: {self.args.drain_jobs:,} jobs; Procrastinate drained "
            f"{PROCRASTINATE_DRAIN_JOBS:,}; worker concurrency {self.args.concurrency}; "
            f"latency: {self.args.latency_jobs} jobs, "
            f"one every {LATENCY_GAP_SECONDS * 1000:.0f} ms)"
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
                print("mediagrid ...", flush=True)
                await self.mediagrid(conn)
                print("drain, mediagrid and PGQueuer alternating ...", flush=True)
                await self.drain_rounds(conn)
            finally:
                await self.stop(server)
            if not self.args.skip_baselines:
                await asyncio.to_thread(self.baselines)
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
    parser.add_argument("--drain-jobs", type=int, default=20_000)
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument(
        "--drain-rounds", type=int, default=3, help="alternating mediagrid/PGQueuer drains"
    )
    parser.add_argument("--finished-rows", type=int, default=1_000_000)
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
