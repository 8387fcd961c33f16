"""Benchmark: an authenticated ``GetUser`` (and ``Authenticate``) against a bare grpc.aio echo.

The baseline is a grpc.aio server with one unary method that returns its request bytes, no
interceptor: the physical limit of the RPC layer on this machine. It runs in the same server
process as the users service and is measured in the same run, with the same client. Callers
are closed loops (each sends its next call when the previous one returns) at 1, 16 and 64
concurrent callers. Call kinds alternate within each round, so the load of other processes
on a shared machine falls on all of them alike; the report gives calls/s, p50 and p99, each
round's ratio to the echo of the same round, and their median.

Call kinds (``--calls``, comma-separated; default ``echo,echo-auth,getuser,authenticate``):

- ``echo``: the bare echo (baseline);
- ``echo-suite``: the same echo served by the users service's server, through the suite
  interceptor (request id, hygiene, error mapping, access log), no token;
- ``echo-auth``: that echo with a bearer token, so also through authentication (an auth
  cache hit): what the interceptor stack costs per call, against ``echo``;
- ``getuser``: ``GetUser`` on oneself, authenticated (cache hit + authorization + one read);
- ``authenticate``: ``Authenticate`` (public; one database lookup of the session);
- ``checkpermission``: an authenticated call that reads nothing (``CheckPermission``).

The users service runs with its real stack (suite interceptor, auth cache, PostgreSQL) in a
child process, against a database this benchmark creates and drops (``--database-url``, else
the PostgreSQL at 127.0.0.1:5432 when it answers, else an embedded one).

Profiling (docs/benchmarks.md): ``--profile DIR`` samples the server and the client with
py-spy while the rounds run, writes ``DIR/{server,client}.txt`` (collapsed stacks) and
prints CPU time per call by component; ``--pg-stats`` (needs ``pg_stat_statements`` loaded
by the server) prints the statements each call kind costs.

    python -m bench users [-- --seconds 5 --rounds 5 --concurrency 1,16,64 --calls ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for entry in (str(ROOT), str(ROOT / "gen")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import asyncpg  # noqa: E402
import grpc  # noqa: E402

from bench.rounds import Ratios, quick  # noqa: E402

ECHO_SERVICE = "bench.Echo"
BARE_ECHO = f"/{ECHO_SERVICE}/Unary"
# Served by the users service's own server, so through its interceptors: one public method
# (no token needed) and one that needs a token.
SUITE_ECHO_PUBLIC = f"/{ECHO_SERVICE}/Public"
SUITE_ECHO_AUTH = f"/{ECHO_SERVICE}/Authenticated"
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_CALLS = "echo,echo-auth,getuser,authenticate"


# --- server side (child process) ---------------------------------------------------------


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


def _echo_handlers(*methods: str) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        ECHO_SERVICE, {name: grpc.unary_unary_rpc_method_handler(_echo) for name in methods}
    )


async def serve(dsn: str) -> None:
    """Start the echo server and the users service, print ports and a token, run until EOF."""
    import logging

    from common.runtime import running_suite
    from common.server import SuiteServer
    from common.settings import Settings
    from services.users.passwords import Passwords
    from services.users.repository import UserRepository
    from services.users.sessions import SessionManager

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mediagrid.access").setLevel(logging.WARNING)
    echo = grpc.aio.server()
    echo.add_generic_rpc_handlers((_echo_handlers("Unary"),))
    echo_port = echo.add_insecure_port("127.0.0.1:0")
    await echo.start()
    settings = Settings(
        environment="test",
        database_url=dsn,
        grpc_port=0,
        log_format="text",
        log_level="WARNING",
        db_pool_max_size=16,
        grpc_shutdown_grace_seconds=1,
    )
    server = SuiteServer(settings)
    server.server.add_generic_rpc_handlers((_echo_handlers("Public", "Authenticated"),))
    async with running_suite(settings, ["users"], port=0, server=server) as (server, ctx):
        # After start-up, which sets the public methods from the services it serves.
        server.interceptor.public_methods |= {SUITE_ECHO_PUBLIC}
        repository = UserRepository(ctx.pool)
        user = await repository.create_user(
            email="bench@example.com", display_name="bench", role="user", password_hash=None
        )
        sessions = SessionManager(repository, settings, Passwords.from_settings(settings))
        token, _ = await sessions.open_session(user.id)
        from common import gc_tuning

        gc_tuning.tune(settings.gc_gen0_threshold)  # what `mediagrid serve` does once ready
        print(
            json.dumps(
                {"echo": echo_port, "users": server.port, "token": token, "user": user.name}
            ),
            flush=True,
        )
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await echo.stop(0)


# --- database ------------------------------------------------------------------------------


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _with_database(dsn: str, database: str) -> str:
    head, sep, query = dsn.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{database}{sep}{query}"


async def _admin(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


# --- client side -----------------------------------------------------------------------------


@dataclass
class Result:
    """Calls of one kind at one concurrency, gathered over several interleaved rounds."""

    name: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    round_rates: list[float] = field(default_factory=list)
    # Per round, the CPU µs per call of each process (server, client, postgres).
    round_cpu: list[dict[str, float]] = field(default_factory=list)

    def add(self, latencies: list[float], elapsed: float, cpu: dict[str, float]) -> None:
        self.latencies.extend(latencies)
        self.elapsed += elapsed
        self.round_rates.append(len(latencies) / elapsed)
        calls = max(1, len(latencies))
        self.round_cpu.append({name: seconds / calls * 1e6 for name, seconds in cpu.items()})

    def cpu_per_call_us(self) -> dict[str, float]:
        """The median over rounds of each process's CPU µs per call."""
        if not self.round_cpu:
            return {}
        return {
            name: statistics.median(r[name] for r in self.round_cpu) for name in self.round_cpu[0]
        }

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000

    def ratios(self, baseline: Result) -> list[float]:
        """This kind's calls/s over the baseline's, round by round."""
        return [a / b for a, b in zip(self.round_rates, baseline.round_rates, strict=True)]


async def measure(
    call: Callable[[], Awaitable[object]], concurrency: int, seconds: float
) -> tuple[list[float], float]:
    """Closed-loop callers for ``seconds``: (latencies, elapsed)."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


Call = Callable[[], Awaitable[object]]


@contextlib.asynccontextmanager
async def call_kinds(info: dict[str, object], wanted: list[str]) -> AsyncIterator[dict[str, Call]]:
    """The callables of the wanted kinds, over one channel per server."""
    from mediagrid.users.v1 import user_service_pb2 as pb
    from mediagrid.users.v1 import user_service_pb2_grpc as pb_grpc

    token = str(info["token"])
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{info['echo']}") as echo_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{info['users']}") as users_channel,
    ):
        payload = pb.GetUserRequest(name=str(info["user"])).SerializeToString()
        stub = pb_grpc.UserServiceStub(users_channel)
        metadata = (("authorization", f"Bearer {token}"),)
        bare = echo_channel.unary_unary(BARE_ECHO)
        public = users_channel.unary_unary(SUITE_ECHO_PUBLIC)
        authenticated = users_channel.unary_unary(SUITE_ECHO_AUTH)
        authenticate = pb.AuthenticateRequest(token=token)
        get_user = pb.GetUserRequest(name=str(info["user"]))
        check = pb.CheckPermissionRequest(
            principal="users/me", permission="files.read", resource="files/x"
        )
        kinds: dict[str, Call] = {
            "echo": lambda: bare(payload),
            "echo-suite": lambda: public(payload),
            "echo-auth": lambda: authenticated(payload, metadata=metadata),
            "getuser": lambda: stub.GetUser(get_user, metadata=metadata),
            "authenticate": lambda: stub.Authenticate(authenticate),
            "checkpermission": lambda: stub.CheckPermission(check, metadata=metadata),
        }
        unknown = sorted(set(wanted) - set(kinds))
        if unknown:
            raise SystemExit(f"unknown call kind(s) {unknown}; have: {', '.join(kinds)}")
        yield {name: kinds[name] for name in wanted}


class CpuMeter:
    """CPU seconds (user + system) used so far by the server, this client and the PostgreSQL
    backends serving the benchmark's database, from /proc (Linux)."""

    def __init__(self, server_pid: int, admin: asyncpg.Connection, database: str) -> None:
        self.server_pid = server_pid
        self.admin = admin
        self.database = database
        self.tick = os.sysconf("SC_CLK_TCK")

    def _process(self, pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:  # gone, or not Linux
            return 0.0
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime

    async def snapshot(self) -> dict[str, float]:
        backends = await self.admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            self.database,
        )
        return {
            "server": self._process(self.server_pid),
            "client": self._process(os.getpid()),
            "postgres": sum(self._process(row["pid"]) for row in backends),
        }

    async def during(self, work: Awaitable[tuple[list[float], float]]) -> tuple[Any, ...]:
        """``work``'s result, with the CPU seconds each process spent meanwhile."""
        before = await self.snapshot()
        latencies, elapsed = await work
        after = await self.snapshot()
        return latencies, elapsed, {name: after[name] - before[name] for name in after}


async def run_client(
    calls: dict[str, Call], seconds: float, rounds: int, levels: list[int], meter: CpuMeter
) -> list[Result]:
    """Per level, rounds in which every kind runs once, in turn."""
    for call in calls.values():  # warm-up: connections, caches, prepared statements
        for _ in range(50):
            await call()
    results: list[Result] = []
    for level in levels:
        level_results = [Result(name, level) for name in calls]
        for _ in range(rounds):
            for result, call in zip(level_results, calls.values(), strict=True):
                result.add(*await meter.during(measure(call, level, seconds / rounds)))
        results.extend(level_results)
    return results


def report(results: list[Result]) -> None:
    baseline = {r.concurrency: r for r in results if r.name == "echo"}
    print(
        f"{'call':<16}{'callers':>8}{'calls/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'CPU µs/call: server':>21}{'client':>7}{'pg':>5}{'/ echo':>8}"
    )
    for r in results:
        echo = baseline.get(r.concurrency)
        median = f"{statistics.median(r.ratios(echo)):.0%}" if echo is not None else "-"
        cpu = r.cpu_per_call_us()
        print(
            f"{r.name:<16}{r.concurrency:>8}{r.rate:>9.0f}{r.percentile(0.5):>8.2f}"
            f"{r.percentile(0.99):>8.2f}{cpu.get('server', 0):>21.0f}{cpu.get('client', 0):>7.0f}"
            f"{cpu.get('postgres', 0):>5.0f}{median:>8}"
        )
    print(
        "\n(CPU µs/call: median over rounds of each process's CPU time per call; "
        "'/ echo': median over rounds of calls/s over the echo's in the same round)\n"
    )
    for r in results:
        echo = baseline.get(r.concurrency)
        if echo is None or r is echo:
            continue
        level = r.concurrency
        if r.name == "getuser":
            calls = Ratios(f"GetUser / echo, calls/s, {level} callers", target=0.5)
            cpu_ratios = Ratios(
                f"GetUser / echo, server CPU per call, {level} callers",
                target=2.0,
                lower_is_better=True,
            )
            for rate, echo_rate in zip(r.round_rates, echo.round_rates, strict=True):
                calls.add(rate, echo_rate)
            for ours, base in zip(r.round_cpu, echo.round_cpu, strict=True):
                cpu_ratios.add(ours["server"], base["server"])
            print(calls.summary())
            print(cpu_ratios.summary())
        if r.name in ("echo-suite", "echo-auth"):
            # What the interceptor stack (and, with a token, the auth cache hit) costs per
            # call: the difference of server CPU per call with the bare echo, round by round.
            extra = statistics.median(
                ours["server"] - base["server"]
                for ours, base in zip(r.round_cpu, echo.round_cpu, strict=True)
            )
            what = "suite interceptor" if r.name == "echo-suite" else "suite interceptor + auth"
            print(
                f"{what}, {level} callers: +{extra:.0f} µs of server CPU per call over the bare "
                "echo (median of rounds)"
            )


# --- profiles ----------------------------------------------------------------------------------

# Components a sampled stack is charged to: the innermost frame that matches one (first match
# wins per frame), so asyncio work done for our code (a timeout, a task) counts as our code's.
COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("suite interceptor", ("common/interceptors.py", "common/rpc_metrics.py", "common/hygiene")),
    ("auth", ("common/auth.py", "services/users/sessions.py", "common/context.py")),
    ("users handler", ("services/users/",)),
    ("database path", ("common/db.py", "common/resilience.py", "common/deadlines.py")),
    ("asyncpg", ("asyncpg/",)),
    ("logging", ("logging/",)),
    ("opentelemetry", ("opentelemetry/",)),
    ("pydantic", ("pydantic",)),
    ("protobuf", ("google/protobuf", "_pb2")),
    ("grpc (Python)", ("grpc/",)),
]
# Leaves of threads that block in C (gRPC's completion-queue poller, the server's stdin
# reader): py-spy cannot tell them idle, so they are left out.
BLOCKED_LEAVES = ("Thread.run (threading.py",)


def component(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, needles in COMPONENTS:
            if any(needle in frame for needle in needles):
                return name
    if frames[-1].startswith("Handle._run (asyncio/events.py"):
        return "grpc core (C callbacks)"  # C code run from the loop: cygrpc's callbacks
    return "event loop"


def summarize_profile(path: Path, calls: int, rate: int) -> list[tuple[str, float]]:
    """(component, µs of sampled time per call) from py-spy's collapsed stacks."""
    samples: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if frames[-1].startswith(BLOCKED_LEAVES):
            continue
        samples[component(frames)] += int(count)
    per_sample_us = 1e6 / rate
    return [(name, n * per_sample_us / calls) for name, n in samples.most_common()]


@contextlib.contextmanager
def profiling(
    directory: Path | None, pids: dict[str, int], rate: int, *, native: bool = False
) -> Iterator[None]:
    if directory is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    command = [spy, "record", "--rate", str(rate), "--format", "raw", "--gil"]
    command += ["--native"] if native else ["--nonblocking"]
    procs = [
        subprocess.Popen(
            [*command, "--pid", str(pid), "-o", str(directory / f"{name}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            proc.wait(timeout=30)


# --- PostgreSQL statistics ----------------------------------------------------------------------


async def pg_stats(admin_dsn: str, database: str, calls: dict[str, Call], n: int) -> None:
    """Statements per call of each kind (``pg_stat_statements``): each one a round trip."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        loaded = await conn.fetchval(
            "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"
        )
        if not loaded:
            print("--pg-stats: pg_stat_statements is not installed in the admin database")
            return
        dbid = await conn.fetchval("SELECT oid FROM pg_database WHERE datname = $1", database)
        print(f"\nPostgreSQL statements per call ({n} sequential calls of each kind)")
        for name, call in calls.items():
            if name.startswith("echo") or name == "checkpermission":
                continue
            await conn.execute("SELECT pg_stat_statements_reset(0, $1, 0)", dbid)
            for _ in range(n):
                await call()
            rows = await conn.fetch(
                "SELECT calls, regexp_replace(query, '\\s+', ' ', 'g') AS query "
                "FROM pg_stat_statements WHERE dbid = $1 ORDER BY calls DESC",
                dbid,
            )
            print(f"  {name}:")
            for row in rows:
                print(f"    {row['calls'] / n:6.2f} x {row['query'][:110]}")
    finally:
        await conn.close()


# --- main -----------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bench_database(admin_dsn: str | None) -> AsyncIterator[tuple[str, str]]:
    """(admin DSN, database name) of a fresh database, dropped at the end."""
    forced = os.environ.get("MEDIAGRID_TEST_EMBEDDED_PG") == "1"
    embedded = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if admin_dsn is None:
        if not forced and _port_open("127.0.0.1", 5432):
            admin_dsn = LOCAL_PG
        else:
            import pgserver

            tmp = tempfile.TemporaryDirectory(prefix="mg-bench-pg-")
            embedded = pgserver.get_server(Path(tmp.name) / "pgdata", cleanup_mode="stop")  # type: ignore[attr-defined]
            admin_dsn = embedded.get_uri()
    database = f"mg_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    await _admin(admin_dsn, f"CREATE DATABASE {database}")
    try:
        yield admin_dsn, database
    finally:
        await _admin(admin_dsn, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        if embedded is not None:
            embedded.cleanup()
        if tmp is not None:
            tmp.cleanup()


async def run(args: argparse.Namespace) -> None:
    levels = [int(part) for part in args.concurrency.split(",") if part]
    wanted = [part for part in args.calls.split(",") if part]
    async with bench_database(args.database_url) as (admin_dsn, database):
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve",
            _with_database(admin_dsn, database),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            assert child.stdout is not None
            line = await child.stdout.readline()
            if not line:
                raise RuntimeError("the benchmark server did not start")
            info = json.loads(line)
            print(
                f"users service and echo baseline in one child process (pid {child.pid}), "
                f"client pid {os.getpid()}; {args.seconds:g} s per call kind and level in "
                f"{args.rounds} rounds, kinds in turn within each round; closed-loop callers; "
                f"load average {os.getloadavg()[0]:.1f}\n",
                flush=True,
            )
            admin = await asyncpg.connect(admin_dsn)
            async with call_kinds(info, wanted) as calls:
                pids = {"server": child.pid, "client": os.getpid()}
                meter = CpuMeter(child.pid, admin, database)
                with profiling(args.profile, pids, args.profile_rate, native=args.native):
                    results = await run_client(calls, args.seconds, args.rounds, levels, meter)
                await admin.close()
                report(results)
                if args.profile is not None:
                    total = sum(len(r.latencies) for r in results)
                    print(f"\nCPU µs per call (all {total} calls of every kind), by component:")
                    for name in pids:
                        rows = summarize_profile(
                            args.profile / f"{name}.txt", total, args.profile_rate
                        )
                        shown = ", ".join(f"{c} {us:.0f}" for c, us in rows if us >= 1)
                        print(f"  {name}: {sum(us for _, us in rows):.0f} total; {shown}")
                if args.pg_stats:
                    await pg_stats(admin_dsn, database, calls, args.pg_stats_calls)
            print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
        finally:
            assert child.stdin is not None
            child.stdin.close()
            await asyncio.wait_for(child.wait(), timeout=30)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="bench users",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--seconds", type=float, default=quick(10.0, 2.0), help="time per call kind and level"
    )
    parser.add_argument("--rounds", type=int, default=quick(10, 4), help="rounds per level")
    parser.add_argument(
        "--concurrency", default=quick("1,16,64", "16,64"), help="comma-separated caller counts"
    )
    parser.add_argument("--calls", default=DEFAULT_CALLS, help="comma-separated call kinds")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="all call kinds (adds echo-suite and checkpermission to the default ones)",
    )
    parser.add_argument("--database-url", help="admin DSN of the PostgreSQL to create a db in")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the server, client")
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples/s")
    parser.add_argument(
        "--native", action="store_true", help="py-spy --native: C frames too (pauses the process)"
    )
    parser.add_argument(
        "--pg-stats", action="store_true", help="statements per call (pg_stat_statements)"
    )
    parser.add_argument("--pg-stats-calls", type=int, default=500, help=argparse.SUPPRESS)
    parser.add_argument("--serve", metavar="DSN", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    if args.breakdown:
        args.calls = "echo,echo-suite,echo-auth,checkpermission,getuser,authenticate"
    asyncio.run(run(args))


if __name__ == "__main__":
    main(sys.argv[1:])
