"""Where a jobs RPC spends its time: py-spy on the server, worker and client processes, and
PostgreSQL's own log for the statements (round trips) each RPC sends.

    python -m bench.profile_jobs [--out /tmp/jobs-profile] [--single 2000] [--batches 20]
                                 [--latency 200] [--drain 20000] [--rate 250]

Runs the bench_jobs server (its own process, a scratch database) and, one phase at a time:
CreateJob calls (32 in flight), CreateBatch calls of 1,000 jobs, bench_jobs' latency run (one
``stamp`` job every 20 ms to an idle ``mediagrid worker``) and a drain of no-op jobs through
``mediagrid worker``. For each phase it prints

- the statements PostgreSQL ran for the phase (``log_statement = 'all'`` set on the scratch
  database only, read back from the server log), per RPC, grouped by their first words;
- py-spy's samples of each process (``py-spy record --format raw``, no idle frames), as the
  share of samples spent under each of the functions that matter and the top leaf
  functions; the raw stacks stay in ``--out`` (e.g. for ``flamegraph.pl``) .

Needs root or ptrace rights for py-spy and read access to the PostgreSQL log (``--pg-log``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

import asyncpg  # noqa: E402
import grpc  # noqa: E402
from mediagrid.jobs.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc  # noqa: E402

from bench.bench_jobs import USER, Bench  # noqa: E402

PY_SPY = Path(sys.executable).parent / "py-spy"
STATEMENT = re.compile(r"\[(\d+)\] \S*@(\S+) LOG:  (?:execute [^:]*|statement): (.*)")


class Spy:
    """``py-spy record`` attached to some processes for the length of a ``with`` block."""

    def __init__(self, out: Path, rate: int, **pids: int) -> None:
        self.out, self.rate, self.pids = out, rate, pids
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Spy:
        self.out.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            self._record(name, pid)
        time.sleep(0.5)  # attached before the phase starts
        return self

    def _record(self, name: str, pid: int) -> None:
        command = [str(PY_SPY), "record", "--pid", str(pid), "--rate", str(self.rate)]
        command += ["--format", "raw", "--nonblocking", "-o", str(self.out / f"{name}.txt")]
        self.procs.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )

    def attach(self, **pids: int) -> None:
        """Also record ``pids`` (a process started inside the block) from now on."""
        for name, pid in pids.items():
            self._record(name, pid)

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            proc.wait(30)


def summarize_stacks(path: Path, top: int = 14) -> list[str]:
    """Share of samples under each frame (inclusive), for our code and the libraries it
    calls, and the leaf frames that took the most samples."""
    inclusive: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    if not path.exists():
        return [f"  (no samples: {path.name} missing)"]
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        if "_find_and_load" in stack or "gc_tuning.py" in stack:
            continue  # a process's start-up (imports, freezing its objects), not the phase
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += count
        leaves[frames[-1]] += count
    if not total:
        return ["  (no samples)"]
    lines = [f"  {total} samples; inclusive share of the busiest frames:"]
    for frame, count in inclusive.most_common(60):
        if any(k in frame for k in ("services/", "common/", "grpc", "asyncpg", "pydantic")):
            lines.append(f"    {count / total:6.1%}  {frame}")
            if len(lines) > top:
                break
    lines.append("  self (leaf) share:")
    lines += [f"    {c / total:6.1%}  {f}" for f, c in leaves.most_common(top // 2)]
    return lines


def _frame(raw: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file path from the project or package)"
    name, _, where = raw.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("/site-packages/", str(ROOT) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"


class StatementLog:
    """The scratch database's statements, read from the PostgreSQL server log."""

    def __init__(self, path: Path, database: str) -> None:
        self.path, self.database = path, database
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def since_mark(self, exclude_pids: set[int]) -> collections.Counter[str]:
        counts: collections.Counter[str] = collections.Counter()
        current: list[str] | None = None

        def flush() -> None:
            if current is not None:
                counts[_statement_kind("\n".join(current))] += 1

        with self.path.open("rb") as log:
            log.seek(self.offset)
            for raw in log.read().decode(errors="replace").splitlines():
                if raw.startswith(("\t", " ")) and current is not None:
                    current.append(raw)  # a continuation line of a multi-line statement
                    continue
                flush()
                current = None
                match = STATEMENT.search(raw)
                mine = match and match.group(2) == self.database
                if match and mine and int(match.group(1)) not in exclude_pids:
                    current = [match.group(3)]
            flush()
        return counts


def _normalized(sql: str) -> str:
    return " ".join(re.sub(r"--[^\n]*", " ", sql).split())


def _known_queries() -> dict[str, str]:
    from common.db import load_queries

    return {
        _normalized(sql): name
        for name, sql in load_queries(ROOT / "services" / "jobs" / "sql" / "queries.sql").items()
    }


KNOWN: dict[str, str] = {}


def _statement_kind(sql: str) -> str:
    if not KNOWN:
        KNOWN.update(_known_queries())
    text = _normalized(sql)
    return KNOWN.get(text) or text[:70]


async def profile(args: argparse.Namespace) -> None:
    from common.migrations import migrate

    bench = Bench(
        argparse.Namespace(
            dsn=args.dsn,
            prefetch=0,
            claims_in_flight=0,
            concurrency=2000,
            drain_jobs=args.drain,
            latency_jobs=args.latency,
        )
    )
    out = Path(args.out)
    admin = await asyncpg.connect(args.dsn)
    await admin.execute(f"CREATE DATABASE {bench.db}")
    await admin.execute(f"ALTER DATABASE {bench.db} SET log_statement = 'all'")
    statements = StatementLog(Path(args.pg_log), bench.db)
    try:
        conn = await asyncpg.connect(bench.dsn)
        await conn.execute("SET log_statement = 'none'")
        await migrate(conn, "jobs", ROOT / "services" / "jobs" / "sql" / "migrations")
        mine = {conn.get_server_pid()}
        server = await bench.start_server()
        try:
            async with grpc.aio.insecure_channel(bench.address) as channel:
                stub = job_service_pb2_grpc.JobServiceStub(channel)
                request = job_service_pb2.CreateJobRequest(job=job_pb2.JobSpec(type="noop"))
                await stub.CreateJob(request, metadata=USER)  # warm: prepared statements

                calls = iter(range(args.single))

                async def lane() -> None:
                    for _ in calls:
                        await stub.CreateJob(request, metadata=USER)

                statements.mark()
                with Spy(
                    out / "create_job", args.rate, server=bench.server_pid, client=os.getpid()
                ):
                    started = time.perf_counter()
                    await asyncio.gather(*(lane() for _ in range(32)))
                    elapsed = time.perf_counter() - started
                report(
                    f"CreateJob x {args.single} ({args.single / elapsed:,.0f}/s under the profiler)",
                    args.single,
                    statements.since_mark(mine),
                    out / "create_job",
                )

                statements.mark()
                with Spy(
                    out / "create_batch", args.rate, server=bench.server_pid, client=os.getpid()
                ):
                    started = time.perf_counter()
                    for _ in range(args.batches):
                        await stub.CreateBatch(bench.batch_request(1000), metadata=USER)
                    elapsed = time.perf_counter() - started
                report(
                    f"CreateBatch of 1,000 x {args.batches} "
                    f"({args.batches * 1000 / elapsed:,.0f} jobs/s under the profiler)",
                    args.batches,
                    statements.since_mark(mine),
                    out / "create_batch",
                )
                await conn.execute("TRUNCATE jobs.jobs, jobs.job_keys, jobs.batches")

                if args.latency:
                    await latency_phase(bench, conn, statements, mine, out, args)

                worker = await bench.start_worker("noop", 2000)
                try:
                    statements.mark()
                    with Spy(out / "drain", args.rate, server=bench.server_pid, worker=worker.pid):
                        started = time.perf_counter()
                        for start in range(0, args.drain, 20_000):
                            size = min(20_000, args.drain - start)
                            await stub.CreateBatch(bench.batch_request(size), metadata=USER)
                        await bench.poll(
                            conn,
                            "SELECT count(*) FROM jobs.jobs WHERE state = 'succeeded'",
                            args.drain,
                            0.05,
                        )
                        elapsed = time.perf_counter() - started
                finally:
                    await bench.stop(worker)
                report(
                    f"drain of {args.drain:,} no-op jobs ({args.drain / elapsed:,.0f} jobs/s "
                    "under the profiler, enqueue included)",
                    args.drain,
                    statements.since_mark(mine),
                    out / "drain",
                    per="job",
                )
        finally:
            await bench.stop(server)
        await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {bench.db} WITH (FORCE)")
        await admin.close()


async def latency_phase(
    bench: Bench,
    conn: asyncpg.Connection,
    statements: StatementLog,
    mine: set[int],
    out: Path,
    args: argparse.Namespace,
) -> None:
    """bench_jobs' latency run (one ``stamp`` job every 20 ms to an idle worker): what each
    job costs between its CreateJob and its handler's start, and the idle worker's re-poll."""
    start_worker = bench.start_worker

    async def spied_worker(types: str, concurrency: int) -> asyncio.subprocess.Process:
        process = await start_worker(types, concurrency)
        spy.attach(worker=process.pid)
        return process

    bench.start_worker = spied_worker  # type: ignore[method-assign]
    statements.mark()
    with Spy(out / "latency", args.rate, server=bench.server_pid, client=os.getpid()) as spy:
        latency = await bench.latency_mediagrid(conn)
    bench.start_worker = start_worker  # type: ignore[method-assign]
    report(
        f"latency: {args.latency} jobs, one every 20 ms (p50 {latency['p50_ms']:.2f} ms, "
        f"p99 {latency['p99_ms']:.2f} ms under the profiler)",
        args.latency,
        statements.since_mark(mine),
        out / "latency",
        per="job",
    )


def report(
    title: str, calls: int, counts: collections.Counter[str], folder: Path, per: str = "call"
) -> None:
    print(f"\n== {title}")
    total = sum(counts.values())
    print(f"statements: {total} ({total / calls:.3f} per {per})")
    for kind, n in counts.most_common(12):
        print(f"  {n:8d}  {n / calls:8.3f} per {per}  {kind}")
    for stacks in sorted(folder.glob("*.txt")):
        print(f"py-spy, {stacks.stem}:")
        print("\n".join(summarize_stacks(stacks)))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="profile_jobs", description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--out", default="/tmp/jobs-profile")
    parser.add_argument("--single", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--drain", type=int, default=20_000)
    parser.add_argument(
        "--latency", type=int, default=200, help="jobs of the latency run (0: none)"
    )
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--pg-log", default="/var/log/postgresql/postgresql-15-main.log")
    asyncio.run(profile(parser.parse_args(argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
