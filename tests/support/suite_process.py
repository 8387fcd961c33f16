"""The suite as real processes, with its database and S3 endpoint behind fault proxies.

A fault scenario needs what production has: `mediagrid serve` and `mediagrid worker`
processes that only reach PostgreSQL and S3 over TCP, so that a proxy between them can
blackhole, refuse, reset or slow those connections (this machine has no tc/netem).

    async with FaultSuite(tmp_path, pg_admin_dsn, template_db, job_lease_seconds=3) as suite:
        server = await suite.serve("all")           # port 0; the address is read from its log
        token = await suite.service_token()
        await suite.worker(server, ["noop"], token)
        suite.pg_proxy.pause()                       # PostgreSQL blackholed for every process
        ...

Each suite gets a fresh database (a copy of the migrated template), its own moto server
process on a free port, a TcpProxy in front of PostgreSQL and an HttpFaultProxy in front
of moto. Every child writes its output to ``<tmp>/<name>.log``; leaving the block stops
every child (SIGTERM, then SIGKILL after a bound), the proxies, moto, and drops the
database, also when the scenario failed. Children also die with the test process
(PR_SET_PDEATHSIG), so a killed pytest leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.proxy import HttpFaultProxy, TcpProxy, free_port
from tests.support.stores import run_admin, with_database

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"mediagrid listening on (\S+)")
DIRECT_APPLICATION = "faults-direct"


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the test process dies (Linux)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def setting_env(values: Mapping[str, Any]) -> dict[str, str]:
    """``MEDIAGRID_*`` variables for settings (lists and dicts as JSON, booleans lowercase)."""
    env = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (list, tuple, dict)):
            text = json.dumps(value)
        else:
            text = str(value)
        env[f"MEDIAGRID_{key.upper()}"] = text
    return env


class ChildProcess:
    """One child process whose stdout and stderr go to a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log
        self.process: asyncio.subprocess.Process | None = None
        self.address = ""

    async def start(self, cwd: Path) -> None:
        out = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self.env,
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=_die_with_parent,
            )
        finally:
            os.close(out)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(sig)

    async def wait(self, within: float) -> int | None:
        """The exit code, or None when still running after ``within`` seconds."""
        if self.process is None:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), within)
        return self.process.returncode

    async def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; the exit code."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.signal(signal.SIGTERM)
            if await self.wait(grace) is None:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode

    async def wait_listening(self, within: float = 90.0) -> str:
        """The address the server printed (it was started with port 0)."""
        deadline = time.monotonic() + within
        while True:
            found = LISTENING.search(self.log())
            if found:
                self.address = found.group(1)
                return self.address
            if self.returncode is not None:
                raise AssertionError(f"{self.name} exited {self.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not listen in {within}s:\n{self.tail()}")
            await asyncio.sleep(0.1)

    async def wait_serving(self, service: str = "", within: float = 60.0) -> None:
        await wait_serving(self.address, service, within, process=self)


async def health_status(address: str, service: str = "", deadline: float = 2.0) -> str:
    """The grpc.health.v1 status name, or the status code name when the check failed."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=deadline
            )
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def wait_serving(
    address: str, service: str = "", within: float = 60.0, *, process: ChildProcess | None = None
) -> None:
    deadline = time.monotonic() + within
    status = ""
    while True:
        status = await health_status(address, service)
        if status == "SERVING":
            return
        if process is not None and process.returncode is not None:
            raise AssertionError(f"{process.name} exited {process.returncode}:\n{process.tail()}")
        if time.monotonic() > deadline:
            tail = process.tail() if process is not None else ""
            raise AssertionError(
                f"{address} {service!r} not SERVING in {within}s ({status})\n{tail}"
            )
        await asyncio.sleep(0.2)


class MotoProcess(ChildProcess):
    """moto's S3 server in a process of its own (not a thread of the test: the proxies and
    clients in the test's event loop must not wait on its GIL)."""

    @classmethod
    def create(cls, workdir: Path) -> MotoProcess:
        port = free_port()
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        moto = cls("moto", argv, os.environ, workdir / "moto.log")
        moto.address = f"127.0.0.1:{port}"
        return moto

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}"

    async def wait_ready(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while True:
            try:
                await asyncio.to_thread(_http_get, f"{self.endpoint}/moto-api/")
                return
            except (OSError, urllib.error.URLError):
                if self.returncode is not None or time.monotonic() > deadline:
                    raise AssertionError(f"moto did not start:\n{self.tail()}") from None
                await asyncio.sleep(0.1)


def _http_get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=2) as reply:
        reply.read()


class FaultSuite:
    """A fresh database, moto, both behind proxies, and the suite's processes (module doc)."""

    def __init__(self, workdir: Path, admin_dsn: str, template: str, **settings: Any) -> None:
        self.workdir = workdir
        self.admin_dsn = admin_dsn
        self.template = template
        self.database = f"mg_faults_{uuid.uuid4().hex[:12]}"
        self.settings = settings
        self.pg_proxy = TcpProxy.for_dsn(admin_dsn)
        self.s3_proxy = HttpFaultProxy()
        self.moto: MotoProcess | None = None
        self.children: list[ChildProcess] = []
        self._created = False
        self._pool: Any = None

    # --- lifecycle ------------------------------------------------------------------------
    async def __aenter__(self) -> FaultSuite:
        try:
            await run_admin(
                self.admin_dsn, f"CREATE DATABASE {self.database} TEMPLATE {self.template}"
            )
            self._created = True
            await self.pg_proxy.start()
            self.moto = await self._start_moto()
            self.s3_proxy.target_port = int(self.moto.address.rsplit(":", 1)[1])
            await self.s3_proxy.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self.print_logs()
        await self.close()

    async def _start_moto(self) -> MotoProcess:
        for _ in range(5):  # a free port may be taken by someone else before moto binds it
            moto = MotoProcess.create(self.workdir)
            await moto.start(self.workdir)
            self.children.append(moto)
            try:
                await moto.wait_ready()
                return moto
            except AssertionError:
                await moto.stop(2)
        raise AssertionError("moto did not start on any of 5 ports")

    async def close(self) -> None:
        # Heal first: a server stopping behind a blackhole would wait out its grace period.
        self.pg_proxy.heal()
        self.s3_proxy.heal()
        await asyncio.gather(*(child.stop(15) for child in reversed(self.children)))
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        await self.pg_proxy.stop()
        await self.s3_proxy.stop()
        if self._created:
            await run_admin(self.admin_dsn, f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")
            self._created = False

    def print_logs(self, lines: int = 60) -> None:
        for child in self.children:
            print(f"----- {child.name} (exit {child.returncode}) -----\n{child.tail(lines)}")

    # --- where things are -----------------------------------------------------------------
    @property
    def direct_dsn(self) -> str:
        """The scenario's database without the proxy (the test's own checks and set-up)."""
        return with_database(self.admin_dsn, self.database)

    @property
    def proxied_dsn(self) -> str:
        return self.pg_proxy.dsn(self.database)

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_proxy.port}"

    def server_settings(self, **overrides: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "environment": "test",
            "database_url": self.proxied_dsn,
            "s3_endpoint_url": self.s3_endpoint,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            "s3_payload_signing": False,
            "s3_create_buckets": True,
            "grpc_host": "127.0.0.1",
            "grpc_port": 0,
            "grpc_shutdown_grace_seconds": 5,
            "health_check_interval_seconds": 0.5,
            "log_format": "text",
            "embedded_worker": False,
            "data_dir": str(self.workdir / "data"),
            "job_types": [{"type": "faults.record", "creators": ["user"], "max_run_seconds": 60}],
            "worker_handler_modules": ["tests.faults.handlers"],
        }
        values.update(self.settings)
        values.update(overrides)
        return values

    def env(self, **overrides: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGRID_")}
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'gen'}"
        env["FAULTS_RUN_LOG"] = str(self.run_log)
        env.update(setting_env(self.server_settings(**overrides)))
        return env

    @property
    def run_log(self) -> Path:
        """Where ``faults.record`` handlers append one line per start and per finish."""
        return self.workdir / "runs.log"

    # --- processes ------------------------------------------------------------------------
    async def _spawn(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> ChildProcess:
        script = "import sys; from common.cli import main; sys.argv[0] = 'mediagrid'; main()"
        child = ChildProcess(
            name, [sys.executable, "-c", script, *args], env, self.workdir / f"{name}.log"
        )
        self.children.append(child)
        await child.start(self.workdir)
        return child

    async def serve(
        self, *services: str, name: str = "server", wait: bool = True, **overrides: Any
    ) -> ChildProcess:
        """``mediagrid serve`` on a port of its own; returns once it is SERVING (``wait``)."""
        child = await self._spawn(name, ["serve", *(services or ("all",))], self.env(**overrides))
        await child.wait_listening()
        if wait:
            await child.wait_serving()
        return child

    async def worker(
        self,
        server: ChildProcess,
        types: Sequence[str],
        token: str,
        *,
        name: str = "worker",
        concurrency: int = 8,
        **overrides: Any,
    ) -> ChildProcess:
        args = ["worker", "--types", ",".join(types), "--address", server.address]
        args += ["--token", token, "--concurrency", str(concurrency), "--worker-id", name]
        return await self._spawn(name, args, self.env(**overrides))

    # --- accounts (straight into the database, as `mediagrid users` does) -----------------
    def _direct_settings(self) -> Any:
        from common.settings import Settings

        # application_name: terminate_backends spares the test's own connections.
        return Settings(
            environment="test", database_url=self.direct_dsn, service_name=DIRECT_APPLICATION
        )

    async def pool(self) -> Any:
        """The test's own pool on the scenario's database, as the services' code takes it."""
        if self._pool is None:
            from common import db

            settings = self._direct_settings()
            raw = await db.create_pool(settings, self.direct_dsn)
            self._pool = db.SuitePool(raw, settings)
        return self._pool

    async def user_token(self, email: str, role: str = "user") -> tuple[str, str]:
        """Create a user; return its name (``users/{id}``) and a session token."""
        from services.users.passwords import Passwords
        from services.users.repository import UserRepository
        from services.users.sessions import SessionManager

        repository = UserRepository(await self.pool())
        user = await repository.create_user(
            email=email, display_name=email.split("@")[0], role=role, password_hash=None
        )
        settings = self._direct_settings()
        sessions = SessionManager(repository, settings, Passwords.from_settings(settings))
        token, _ = await sessions.open_session(user.id)
        return f"users/{user.id}", token

    async def service_token(self, email: str = "worker@example.com") -> str:
        """A session token of a ``service`` account (what a worker authenticates with)."""
        from common.app import AppContext
        from common.aws import AwsClients
        from services.users.bootstrap import issue_service_token

        settings = self._direct_settings()
        ctx = AppContext(settings=settings, pool=await self.pool(), aws=AwsClients(settings))
        return await issue_service_token(ctx, email)

    async def terminate_backends(self) -> int:
        """``pg_terminate_backend`` on every connection to this scenario's database (only)."""
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            rows = await conn.fetch(
                "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()"
                " AND application_name <> $2",
                self.database,
                DIRECT_APPLICATION,
            )
        finally:
            await conn.close()
        return sum(1 for row in rows if row["done"])


async def direct_connect(dsn: str) -> asyncpg.Connection:
    """A connection of the test's own, which ``terminate_backends`` leaves alone."""
    return await asyncpg.connect(dsn, server_settings={"application_name": DIRECT_APPLICATION})


def run_counts(run_log: Path) -> dict[str, list[tuple[str, int]]]:
    """Per job name, the (event, attempt) lines its handler runs wrote, in order."""
    runs: dict[str, list[tuple[str, int]]] = {}
    if not run_log.exists():
        return runs
    for line in run_log.read_text().splitlines():
        event, job, attempt = line.split()
        runs.setdefault(job, []).append((event, int(attempt)))
    return runs
