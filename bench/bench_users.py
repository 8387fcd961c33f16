"""Benchmark: ``Authenticate`` and an authenticated ``GetUser`` against a bare grpc.aio echo.

The baseline is a grpc.aio server with one unary method that returns its request bytes, no
interceptor: the physical limit of the RPC layer on this machine. It runs in the same server
process as the users service and is measured in the same run, with the same client. Callers
are closed loops (each sends its next call when the previous one returns) at 1, 16 and 64
concurrent callers; the report gives calls/s, p50 and p99 latency and the ratio to the echo.

The users service runs with its real stack (suite interceptor, auth cache, PostgreSQL) in a
child process, against a database this benchmark creates and drops (the PostgreSQL at
127.0.0.1:5432 when it answers, otherwise an embedded one).

    python bench/bench_users.py [--seconds 5] [--rounds 5] [--concurrency 1,16,64] [--breakdown]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for entry in (str(ROOT), str(ROOT / "gen")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import asyncpg  # noqa: E402
import grpc  # noqa: E402

ECHO_METHOD = "/bench.Echo/Unary"
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


# --- server side (child process) ---------------------------------------------------------


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def serve(dsn: str) -> None:
    """Start the echo server and the users service, print ports and a token, run until EOF."""
    import logging

    from common.runtime import running_suite
    from common.settings import Settings
    from services.users.passwords import Passwords
    from services.users.repository import UserRepository
    from services.users.sessions import SessionManager

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mediagrid.access").setLevel(logging.WARNING)
    echo = grpc.aio.server()
    echo.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(_echo)}
            ),
        )
    )
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
    async with running_suite(settings, ["users"], port=0) as (server, ctx):
        repository = UserRepository(ctx.pool)
        user = await repository.create_user(
            email="bench@example.com", display_name="bench", role="user", password_hash=None
        )
        sessions = SessionManager(repository, settings, Passwords.from_settings(settings))
        token, _ = await sessions.open_session(user.id)
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


class Result:
    """Calls of one kind at one concurrency, gathered over several interleaved rounds."""

    def __init__(self, name: str, concurrency: int) -> None:
        self.name = name
        self.concurrency = concurrency
        self.latencies: list[float] = []
        self.elapsed = 0.0
        self.round_rates: list[float] = []

    def add(self, latencies: list[float], elapsed: float) -> None:
        self.latencies.extend(latencies)
        self.elapsed += elapsed
        self.round_rates.append(len(latencies) / elapsed)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


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


async def run_client(
    info: dict[str, object], seconds: float, rounds: int, levels: list[int], breakdown: bool
) -> list[Result]:
    """Per level, interleaved rounds of echo, Authenticate, GetUser: load drift hits all alike."""
    from mediagrid.users.v1 import user_service_pb2 as pb
    from mediagrid.users.v1 import user_service_pb2_grpc as pb_grpc

    token = str(info["token"])
    results: list[Result] = []
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{info['echo']}") as echo_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{info['users']}") as users_channel,
    ):
        echo = echo_channel.unary_unary(ECHO_METHOD)
        payload = pb.GetUserRequest(name=str(info["user"])).SerializeToString()
        stub = pb_grpc.UserServiceStub(users_channel)
        metadata = (("authorization", f"Bearer {token}"),)
        authenticate = pb.AuthenticateRequest(token=token)
        get_user = pb.GetUserRequest(name=str(info["user"]))
        calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("echo (baseline)", lambda: echo(payload)),
            ("Authenticate", lambda: stub.Authenticate(authenticate)),
            ("GetUser (authenticated)", lambda: stub.GetUser(get_user, metadata=metadata)),
        ]
        if breakdown:
            # Authenticated, through the interceptor and auth cache, but no database query.
            check = pb.CheckPermissionRequest(
                principal="users/me", permission="files.read", resource="files/x"
            )
            calls.append(
                ("CheckPermission (no DB)", lambda: stub.CheckPermission(check, metadata=metadata))
            )
        for _, call in calls:  # warm-up: connections, caches, prepared statements
            for _ in range(50):
                await call()
        for level in levels:
            level_results = [Result(name, level) for name, _ in calls]
            for _ in range(rounds):
                for result, (_, call) in zip(level_results, calls, strict=True):
                    result.add(*await measure(call, level, seconds / rounds))
            results.extend(level_results)
    return results


def report(results: list[Result]) -> None:
    baseline = {r.concurrency: r for r in results if r.name.startswith("echo")}
    print(
        f"{'call':<26}{'callers':>8}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'vs echo':>9}{'(median of rounds)':>20}"
    )
    for r in results:
        echo = baseline[r.concurrency]
        ratio = r.rate / echo.rate
        per_round = statistics.median(
            a / b for a, b in zip(r.round_rates, echo.round_rates, strict=True)
        )
        print(
            f"{r.name:<26}{r.concurrency:>8}{r.rate:>10.0f}{r.percentile(0.5):>9.2f}"
            f"{r.percentile(0.99):>9.2f}{ratio:>8.0%}{per_round:>19.0%}"
        )
    target = next(
        (r for r in results if r.name.startswith("GetUser") and r.concurrency == 16), None
    )
    if target is not None:
        echo = baseline[16]
        ratio = statistics.median(
            a / b for a, b in zip(target.round_rates, echo.round_rates, strict=True)
        )
        verdict = "meets" if ratio >= 0.5 else "misses"
        print(
            f"\nauthenticated GetUser at 16 callers: {ratio:.0%} of echo ({verdict} the 50% target)"
        )


async def run(seconds: float, rounds: int, levels: list[int], breakdown: bool) -> None:
    forced = os.environ.get("MEDIAGRID_TEST_EMBEDDED_PG") == "1"
    embedded = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if not forced and _port_open("127.0.0.1", 5432):
        admin_dsn = LOCAL_PG
    else:
        import pgserver

        tmp = tempfile.TemporaryDirectory(prefix="mg-bench-pg-")
        embedded = pgserver.get_server(Path(tmp.name) / "pgdata", cleanup_mode="stop")  # type: ignore[attr-defined]
        admin_dsn = embedded.get_uri()
    database = f"mg_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    await _admin(admin_dsn, f"CREATE DATABASE {database}")
    child = None
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve",
            _with_database(admin_dsn, database),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        assert child.stdout is not None
        line = await child.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark server did not start")
        info = json.loads(line)
        print(
            f"users service and echo baseline in one child process (pid {child.pid}); "
            f"{seconds:.0f} s per call kind and level in {rounds} interleaved rounds, "
            "closed-loop callers\n"
        )
        report(await run_client(info, seconds, rounds, levels, breakdown))
    finally:
        if child is not None:
            assert child.stdin is not None
            child.stdin.close()
            await asyncio.wait_for(child.wait(), timeout=30)
        await _admin(admin_dsn, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        if embedded is not None:
            embedded.cleanup()
        if tmp is not None:
            tmp.cleanup()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="time per call kind and level")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per level")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated caller counts")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also measure an authenticated call without database work (CheckPermission)",
    )
    parser.add_argument("--serve", metavar="DSN", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    levels = [int(part) for part in args.concurrency.split(",") if part]
    asyncio.run(run(args.seconds, args.rounds, levels, args.breakdown))


if __name__ == "__main__":
    main(sys.argv[1:])
