"""Files service throughput and memory against a real S3 server, each next to its baseline.

One run starts the S3 server (SeaweedFS by default, ``--s3 moto`` for moto's server), a
scratch database, and the files service in a subprocess (8 MiB parts, 4 concurrent,
unsigned payloads over plain HTTP), then measures in alternating rounds, each ratio within
its round, the median of the rounds as the figure:

(a) Upload of N MiB through ``FileService.Upload`` vs a direct aioboto3 multipart upload of
    the same bytes (same part size and concurrency);           target >= 0.9 of direct
(b) ``FileService.Download`` vs a direct single-stream aioboto3 GET read in 1 MiB chunks;
    target >= 1.0 (Download reads with ``download_streams`` ranged GETs; also shown: the
    same through mediagrid's ``FilesClient``, and a bare grpc.aio stream from memory, the
    ceiling of any gRPC download on this machine; ``bench.files_cpu`` accounts the CPU)
(c) the gRPC path alone (the same service with S3 replaced by a discarding sink) vs a bare
    grpc.aio client-streaming server that only counts bytes;  target >= 0.7 of bare (also
    shown: the floor, a bare counter that copies into parts and SHA-256s them)
(d) peak RSS of the files service process during a 1 GiB upload, above its idle RSS;
    target <= 64 MiB + part size x (concurrency + 1); beside it the S3 server's own peak
    RSS for the same upload, SeaweedFS's and moto's (``--rss-moto 0`` skips moto's).

``python -m bench files`` or ``python -m bench.bench_files [--s3 seaweedfs|moto]
[--size-mib 256] [--rss-mib 1024] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from bench.rounds import Ratios, quick

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent
for _path in (str(ROOT), str(ROOT / "gen")):
    if _path not in sys.path:
        sys.path.insert(0, _path)
TOKEN = "bench"
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * MiB),
    ("grpc.max_receive_message_length", 64 * MiB),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                reply.read()
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def line(label: str, nbytes: int, seconds: float) -> str:
    rate = nbytes / seconds / 1e6
    return f"  {label:<44} {rate:8.1f} MB/s  ({nbytes / MiB:.0f} MiB in {seconds:.2f}s)"


# --- subprocess roles ------------------------------------------------------------------


class _BenchAuthenticator:
    async def authenticate(self, token: str) -> Any:
        from common.context import Principal
        from common.errors import Unauthenticated

        if token != TOKEN:
            raise Unauthenticated("unknown token")
        return Principal(name="users/bench", user_id="bench", role="user")


class DiscardStorage:
    """A Storage stand-in that drops every byte: measures the gRPC + engine path alone."""

    bucket = "discard"

    async def create_multipart(self, key: str, content_type: str, metadata: dict[str, str]) -> str:
        return uuid.uuid4().hex

    async def upload_part(self, key: str, upload_id: str, number: int, body: Any) -> str:
        return f'"{number}"'

    async def complete_multipart(self, key: str, upload_id: str, parts: Any) -> Any:
        from services.files.storage import PutResult

        return PutResult(uuid.uuid4().hex, '"done"')

    async def put_object(self, key: str, body: Any, content_type: str, metadata: Any) -> Any:
        from services.files.storage import PutResult

        return PutResult(uuid.uuid4().hex, '"done"')

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        return None

    async def tag_sha256(self, key: str, version_id: str, sha256: str) -> None:
        return None

    async def delete_version(self, key: str, version_id: str) -> None:
        return None

    async def list_multipart_uploads(self) -> AsyncIterator[Any]:
        for item in ():
            yield item

    async def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        return None


async def serve(sink: bool) -> None:
    """Run the files service until stdin closes; print its port."""
    from common.runtime import running_suite
    from common.settings import Settings

    if sink:
        import services.files.app as files_app

        async def open_discard(*_args: Any, **_kwargs: Any) -> Any:
            return DiscardStorage()

        files_app.Storage.open = open_discard  # type: ignore[method-assign]
    settings = Settings()  # from the MEDIAGRID_* environment set by the parent
    async with running_suite(settings, ["files"], port=0, authenticator=_BenchAuthenticator()) as (
        server,
        _ctx,
    ):
        print(f"READY {server.port}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def bare_sink(hashing: bool = False) -> None:
    """A bare grpc.aio client-streaming server on raw bytes that only counts them.

    ``hashing``: it also does the per-byte work no upload can skip, at the least cost: it
    copies the bytes into 8 MiB parts and SHA-256s each part in a worker thread, in order,
    up to 4 parts waiting (the service's defaults); the floor of (c) on this machine."""
    import hashlib

    import grpc

    async def sink(requests: AsyncIterator[bytes], _context: Any) -> bytes:
        total = 0
        digest = hashlib.sha256()
        part, filled = bytearray(8 * MiB), 0
        hashed: list[asyncio.Future[None]] = []

        async def update(body: bytearray, previous: asyncio.Future[None] | None) -> None:
            if previous is not None:
                await previous
            await asyncio.to_thread(digest.update, body)

        async for chunk in requests:
            total += len(chunk)
            if not hashing:
                continue
            view = memoryview(chunk)
            while view:
                piece, view = view[: len(part) - filled], view[len(part) - filled :]
                with memoryview(part) as target:
                    target[filled : filled + len(piece)] = piece
                filled += len(piece)
                if filled == len(part):
                    previous = hashed[-1] if hashed else None
                    hashed.append(asyncio.ensure_future(update(part, previous)))
                    if len(hashed) >= 4:
                        await hashed.pop(0)
                    part, filled = bytearray(8 * MiB), 0
        if hashing:
            previous = hashed[-1] if hashed else None
            await update(part[:filled], previous)
        return total.to_bytes(8, "big")

    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "bench.Sink", {"Upload": grpc.stream_unary_rpc_method_handler(sink)}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"READY {port}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(0)


async def bare_stream() -> None:
    """A bare grpc.aio server streaming N bytes from memory as raw 1 MiB messages: no S3 at
    all, so the fastest any gRPC download can be on this machine, whatever the storage."""
    import grpc

    block = os.urandom(MiB)

    async def stream(request: bytes, _context: Any) -> AsyncIterator[bytes]:
        remaining = int.from_bytes(request, "big")
        while remaining > 0:
            piece = block if remaining >= MiB else block[:remaining]
            remaining -= len(piece)
            yield piece

    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "bench.Stream", {"Get": grpc.unary_stream_rpc_method_handler(stream)}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"READY {port}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(0)


async def stream_download(address: str, size: int) -> tuple[float, int]:
    import grpc

    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        call = channel.unary_stream("/bench.Stream/Get")
        started = time.perf_counter()
        total = 0
        async for chunk in call(size.to_bytes(8, "big")):
            total += len(chunk)
        return time.perf_counter() - started, total


class Child:
    """A subprocess of this module in a given role; ``port`` once it printed READY."""

    def __init__(self, role: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_files", role],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline().split()
        if not ready or ready[0] != "READY":
            self.stop()
            raise RuntimeError(f"{role} did not start")
        self.port = int(ready[1])

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- measurements ----------------------------------------------------------------------


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def grpc_upload(address: str, pieces: list[bytes]) -> tuple[float, Any]:
    import grpc
    from mediagrid.files.v1 import file_pb2, file_service_pb2, file_service_pb2_grpc

    async def requests() -> AsyncIterator[Any]:
        yield file_service_pb2.UploadRequest(
            header=file_pb2.UploadHeader(
                display_name="bench.bin", size_bytes=sum(len(p) for p in pieces)
            )
        )
        for piece in pieces:
            yield file_service_pb2.UploadRequest(data=piece)

    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = file_service_pb2_grpc.FileServiceStub(channel)
        started = time.perf_counter()
        last = None
        async for response in stub.Upload(
            requests(), metadata=(("authorization", f"Bearer {TOKEN}"),)
        ):
            last = response
        elapsed = time.perf_counter() - started
    assert last is not None and last.WhichOneof("payload") == "file"
    return elapsed, last.file


async def grpc_upload_preserialized(address: str, pieces: list[bytes]) -> float:
    """Upload with every message serialized before the clock starts, through a raw-bytes
    call: the client then costs what the bare baseline's client costs, and the difference
    is the server's gRPC path alone."""
    import grpc
    from mediagrid.files.v1 import file_pb2, file_service_pb2

    header = file_pb2.UploadHeader(display_name="bench.bin", size_bytes=sum(len(p) for p in pieces))
    messages = [file_service_pb2.UploadRequest(header=header).SerializeToString()]
    messages += [file_service_pb2.UploadRequest(data=p).SerializeToString() for p in pieces]
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        call = channel.stream_stream(
            "/mediagrid.files.v1.FileService/Upload",
            response_deserializer=file_service_pb2.UploadResponse.FromString,
        )

        async def requests() -> AsyncIterator[bytes]:
            for message in messages:
                yield message

        started = time.perf_counter()
        last = None
        async for response in call(requests(), metadata=(("authorization", f"Bearer {TOKEN}"),)):
            last = response
        elapsed = time.perf_counter() - started
    assert last is not None and last.WhichOneof("payload") == "file"
    return elapsed


async def grpc_download(address: str, name: str) -> tuple[float, int]:
    import grpc
    from mediagrid.files.v1 import file_service_pb2, file_service_pb2_grpc

    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = file_service_pb2_grpc.FileServiceStub(channel)
        started = time.perf_counter()
        total = 0
        async for response in stub.Download(
            file_service_pb2.DownloadRequest(name=name),
            metadata=(("authorization", f"Bearer {TOKEN}"),),
        ):
            total += len(response.data)
        return time.perf_counter() - started, total


class _Discard:
    """A destination that only counts what it is given."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: Any) -> int:
        self.size += len(data)
        return len(data)


async def client_download(address: str, name: str) -> tuple[float, int]:
    """Download through mediagrid's own Python client (``FilesClient.download``): data
    messages as memoryviews, and the whole-file SHA-256 check the client always makes."""
    import grpc

    from services.files.client import FilesClient

    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        client = FilesClient(channel, token=TOKEN)
        sink = _Discard()
        started = time.perf_counter()
        await client.download(name, sink)  # type: ignore[arg-type]
        return time.perf_counter() - started, sink.size


async def bare_upload(address: str, pieces: list[bytes]) -> float:
    import grpc

    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        call = channel.stream_unary("/bench.Sink/Upload")

        async def requests() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece

        started = time.perf_counter()
        counted = int.from_bytes(await call(requests()), "big")
        elapsed = time.perf_counter() - started
    assert counted == sum(len(p) for p in pieces)
    return elapsed


async def direct_upload(s3: Any, bucket: str, data: bytes, part: int, concurrency: int) -> float:
    started = time.perf_counter()
    key = f"direct/{uuid.uuid4().hex}"
    upload_id = (await s3.create_multipart_upload(Bucket=bucket, Key=key))["UploadId"]
    gate = asyncio.Semaphore(concurrency)

    async def one(number: int, body: bytes) -> dict[str, Any]:
        async with gate:
            reply = await s3.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
            return {"PartNumber": number, "ETag": reply["ETag"]}

    parts = await asyncio.gather(
        *(one(i + 1, data[off : off + part]) for i, off in enumerate(range(0, len(data), part)))
    )
    await s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": list(parts)}
    )
    return time.perf_counter() - started


async def direct_get(s3: Any, bucket: str, key: str) -> tuple[float, int, float]:
    """(seconds, bytes, seconds to the first byte)."""
    started = time.perf_counter()
    reply = await s3.get_object(Bucket=bucket, Key=key)
    total = 0
    first = 0.0
    body = reply["Body"]
    while chunk := await body.read(MiB):
        if not total:
            first = time.perf_counter() - started
        total += len(chunk)
    body.close()
    return time.perf_counter() - started, total, first


async def empty_bucket(s3: Any, bucket: str) -> None:
    listed = await s3.list_object_versions(Bucket=bucket)
    entries = [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]
    for entry in entries:
        await s3.delete_object(Bucket=bucket, Key=entry["Key"], VersionId=entry["VersionId"])


async def sample_rss(pid: int, stop: asyncio.Event) -> int:
    peak = 0
    while not stop.is_set():
        peak = max(peak, rss_bytes(pid))
        await asyncio.sleep(0.02)
    return max(peak, rss_bytes(pid))


def stream_pieces(total: int, size: int) -> Iterator[bytes]:
    block = os.urandom(size)
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield block[:n]
        sent += n


async def rss_upload(address: str, total: int) -> Any:
    """Upload ``total`` bytes without holding them in this process (one repeated block)."""
    import grpc
    from mediagrid.files.v1 import file_pb2, file_service_pb2, file_service_pb2_grpc

    async def requests() -> AsyncIterator[Any]:
        yield file_service_pb2.UploadRequest(
            header=file_pb2.UploadHeader(display_name="rss.bin", size_bytes=total)
        )
        for piece in stream_pieces(total, MiB):
            yield file_service_pb2.UploadRequest(data=piece)

    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = file_service_pb2_grpc.FileServiceStub(channel)
        last = None
        async for response in stub.Upload(
            requests(), metadata=(("authorization", f"Bearer {TOKEN}"),)
        ):
            last = response
    return last


async def upload_rss(
    address: str, total: int, service_pid: int, s3_pid: int
) -> tuple[float, int, int, int, int, str]:
    """Upload ``total`` bytes; (seconds, service idle RSS, service peak, S3 idle, S3 peak,
    the error that ended the upload or "")."""
    import grpc

    await asyncio.sleep(1.0)
    idle, s3_idle = rss_bytes(service_pid), rss_bytes(s3_pid)
    stop = asyncio.Event()
    samplers = [asyncio.create_task(sample_rss(pid, stop)) for pid in (service_pid, s3_pid)]
    started = time.perf_counter()
    error = ""
    try:
        last = await rss_upload(address, total)
        assert last is not None and last.file.size_bytes == total
    except grpc.aio.AioRpcError as exc:  # still report the memory seen until then
        error = f"{exc.code().name}: {exc.details()}"
    elapsed = time.perf_counter() - started
    stop.set()
    peak, s3_peak = [await sampler for sampler in samplers]
    return elapsed, idle, peak, s3_idle, s3_peak, error


class S3Server:
    """The S3 endpoint of a run: SeaweedFS (``weed mini``, signatures checked) or moto."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        if kind == "seaweedfs":
            from common.seaweed import SeaweedServer, ensure_identities

            identity = ensure_identities(workdir / "s3-identities.json")
            self.access_key, self.secret_key = identity.access_key, identity.secret_key
            self.server = SeaweedServer(workdir / "s3", identities=identity)
            self.endpoint = self.server.start()
            self.pid = int(self.server.pid or 0)
            return
        port = free_port()
        self.access_key = self.secret_key = "bench"
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.endpoint = f"http://127.0.0.1:{port}"
        wait_http(f"{self.endpoint}/moto-api/")
        self.pid = self.proc.pid

    def stop(self) -> None:
        if self.kind == "seaweedfs":
            self.server.stop()
        else:
            self.proc.terminate()
            self.proc.wait()

    def settings(self, database: str) -> Any:
        """Settings of a client of this endpoint (the direct baselines), as the service's."""
        from common.settings import Settings

        return Settings(
            environment="test",
            database_url=database,
            s3_endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            s3_payload_signing=False,
        )

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """The files service's environment for this endpoint."""
        env = dict(base)
        env.update(
            {
                "MEDIAGRID_S3_ENDPOINT_URL": self.endpoint,
                "MEDIAGRID_AWS_ACCESS_KEY_ID": self.access_key,
                "MEDIAGRID_AWS_SECRET_ACCESS_KEY": self.secret_key,
            }
        )
        if self.kind == "moto":  # moto reads the whole object for every GET, ranged or not
            env.setdefault("MEDIAGRID_DOWNLOAD_STREAMS", "1")
        return env


async def measure_transfers(
    args: argparse.Namespace, env: dict[str, str], s3_server: S3Server
) -> None:
    """(a) and (b), in alternating rounds."""
    from common.aws import AwsClients

    part, concurrency = args.part_mib * MiB, args.concurrency
    size = args.size_mib * MiB
    settings = s3_server.settings(env["MEDIAGRID_DATABASE_URL"])
    bucket = settings.bucket("files")
    data = os.urandom(size)
    pieces = chunks(data, args.chunk_kib * 1024)
    service = Child("serve", env)
    memory = Child("bare-stream", env)
    upload = Ratios("(a) Upload / direct aioboto3 multipart", target=0.9, unit="MB/s")
    download = Ratios("(b) Download / direct single-stream GET", target=1.0, unit="MB/s")
    through_client = Ratios(
        "(b) Download through mediagrid's FilesClient / direct single-stream GET",
        target=1.0,
        unit="MB/s",
    )
    try:
        address = f"127.0.0.1:{service.port}"
        async with AwsClients(settings).s3() as s3:
            memory_down = []
            for _ in range(args.rounds):
                direct_up = await direct_upload(s3, bucket, data, part, concurrency)
                ours_up, file = await grpc_upload(address, pieces)
                print(upload.add(size / ours_up / 1e6, size / direct_up / 1e6))
                listed = await s3.list_objects_v2(Bucket=bucket, Prefix="direct/")
                key = listed["Contents"][0]["Key"]
                direct_down, got, _ = await direct_get(s3, bucket, key)
                assert got == size
                ours_down, got = await grpc_download(address, file.name)
                assert got == size
                print(download.add(size / ours_down / 1e6, size / direct_down / 1e6))
                ours_client, got = await client_download(address, file.name)
                assert got == size
                direct_down, got, _ = await direct_get(s3, bucket, key)
                assert got == size
                print(through_client.add(size / ours_client / 1e6, size / direct_down / 1e6))
                seconds, got = await stream_download(f"127.0.0.1:{memory.port}", size)
                assert got == size
                memory_down.append(seconds)
                await empty_bucket(s3, bucket)
            print(upload.summary())
            print(download.summary())
            print(through_client.summary())
            print(line("bare grpc.aio stream from memory, no S3 (ceiling)", size, min(memory_down)))
    finally:
        service.stop()
        memory.stop()


async def measure_sink(args: argparse.Namespace, env: dict[str, str]) -> None:
    """(c): the gRPC path alone."""
    size = args.size_mib * MiB
    pieces = chunks(os.urandom(size), args.chunk_kib * 1024)
    sink = Child("serve-sink", env)
    bare = Child("bare-sink", env)
    floor = Child("bare-sink-sha256", env)
    ratios = Ratios("(c) Upload into a sink / bare grpc.aio byte counter", target=0.7, unit="MB/s")
    floors = Ratios(
        "(c) floor: bare counter + part copy + SHA-256 / bare byte counter", unit="MB/s"
    )
    try:
        for _ in range(max(args.rounds, 5)):  # cheap runs: more rounds against the noise
            base = await bare_upload(f"127.0.0.1:{bare.port}", pieces)
            ours = await grpc_upload_preserialized(f"127.0.0.1:{sink.port}", pieces)
            print(ratios.add(size / ours / 1e6, size / base / 1e6))
            least = await bare_upload(f"127.0.0.1:{floor.port}", pieces)
            base = await bare_upload(f"127.0.0.1:{bare.port}", pieces)
            print(floors.add(size / least / 1e6, size / base / 1e6))
        print(ratios.summary())
        print(floors.summary())
    finally:
        sink.stop()
        bare.stop()
        floor.stop()


async def measure_rss(args: argparse.Namespace, env: dict[str, str], s3_server: S3Server) -> str:
    """(d) against one S3 server: the files service's and the server's peak RSS."""
    total = args.rss_mib * MiB
    service = Child("serve", env)
    try:
        elapsed, idle, peak, s3_idle, s3_peak, error = await upload_rss(
            f"127.0.0.1:{service.port}", total, service.proc.pid, s3_server.pid
        )
    finally:
        service.stop()
    budget = 64 * MiB + args.part_mib * MiB * (args.concurrency + 1)
    above = peak - idle
    outcome = (
        f"FAILED after {elapsed:.0f}s ({error})" if error else line("", total, elapsed).strip()
    )
    return (
        f"  {s3_server.kind}: {outcome}\n"
        f"    files service: idle {idle / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB, above idle "
        f"{above / MiB:.0f} MiB; target <= {budget / MiB:.0f} MiB "
        f"{'OK' if above <= budget else 'MISSED'}\n"
        f"    S3 server ({s3_server.kind}): idle {s3_idle / MiB:.0f} MiB, peak "
        f"{s3_peak / MiB:.0f} MiB"
    )


async def scratch_database(dsn: str, name: str, create: bool) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        if create:
            await conn.execute(f"CREATE DATABASE {name}")
        else:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


def service_env(args: argparse.Namespace, database: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGRID_")}
    env.update(
        {
            "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}",
            "MEDIAGRID_ENVIRONMENT": "test",
            "MEDIAGRID_DATABASE_URL": database,
            "MEDIAGRID_S3_PAYLOAD_SIGNING": "false",
            "MEDIAGRID_UPLOAD_PART_SIZE_BYTES": str(args.part_mib * MiB),
            "MEDIAGRID_UPLOAD_CONCURRENCY": str(args.concurrency),
            "MEDIAGRID_LOG_LEVEL": "WARNING",
            "MEDIAGRID_GRPC_MAX_MESSAGE_BYTES": str(64 * MiB),
            "MEDIAGRID_DOWNLOAD_CHUNK_BYTES": str(args.download_chunk_kib * 1024),
            # moto assembles a completed 1 GiB object in memory for longer than the default
            # bound of a completion on a loaded machine; the bench measures speed, not bounds.
            "MEDIAGRID_S3_TRANSFER_TIMEOUT_SECONDS": "600",
        }
    )
    if args.download_streams:
        env["MEDIAGRID_DOWNLOAD_STREAMS"] = str(args.download_streams)
    return env


def run(args: argparse.Namespace, database: str, workdir: Path) -> None:
    base = service_env(args, database)
    print(
        f"  S3: {args.s3}; {args.size_mib} MiB, {args.part_mib} MiB parts, {args.concurrency} "
        f"concurrent, {args.chunk_kib} KiB messages, {args.rounds} rounds"
    )
    s3_server = S3Server(args.s3, workdir / args.s3)
    try:
        env = s3_server.env(base)
        if "ab" in args.only:
            asyncio.run(measure_transfers(args, env, s3_server))
        if "d" in args.only and args.rss_mib:
            print(f"(d) peak RSS during a {args.rss_mib} MiB upload", flush=True)
            print(asyncio.run(measure_rss(args, env, s3_server)), flush=True)
    finally:
        s3_server.stop()
    if "c" in args.only:
        asyncio.run(measure_sink(args, s3_server.env(base)))
    if "d" in args.only and args.rss_mib and args.rss_moto and args.s3 != "moto":
        moto = S3Server("moto", workdir / "moto")
        try:
            print(asyncio.run(measure_rss(args, moto.env(base), moto)), flush=True)
        finally:
            moto.stop()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_files")
    parser.add_argument(
        "role",
        nargs="?",
        default="bench",
        choices=["bench", "serve", "serve-sink", "bare-sink", "bare-sink-sha256", "bare-stream"],
    )
    parser.add_argument("--s3", choices=["seaweedfs", "moto"], default="seaweedfs")
    parser.add_argument("--only", default="abcd", help="which of (a)(b) (c) (d) to run")
    parser.add_argument("--size-mib", type=int, default=quick(256, 64))
    parser.add_argument("--rss-mib", type=int, default=quick(1024, 0), help="0 skips (d)")
    parser.add_argument(
        "--rss-moto", type=int, default=1, help="0: no moto beside SeaweedFS in (d)"
    )
    parser.add_argument("--part-mib", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--chunk-kib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=quick(5, 3))
    parser.add_argument("--download-chunk-kib", type=int, default=1024)
    parser.add_argument("--download-streams", type=int, default=0, help="0: the setting's default")
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args(argv)
    if args.role == "serve":
        asyncio.run(serve(sink=False))
        return
    if args.role == "serve-sink":
        profile_to = os.environ.get("BENCH_PROFILE")  # profile the service's event loop
        if profile_to:
            import cProfile

            cProfile.runctx("asyncio.run(serve(sink=True))", globals(), locals(), profile_to)
        else:
            asyncio.run(serve(sink=True))
        return
    if args.role == "bare-sink":
        asyncio.run(bare_sink())
        return
    if args.role == "bare-sink-sha256":
        asyncio.run(bare_sink(hashing=True))
        return
    if args.role == "bare-stream":
        asyncio.run(bare_stream())
        return

    name = f"mg_bench_files_{os.getpid()}"
    database = args.admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(scratch_database(args.admin_dsn, name, create=True))
    try:
        with tempfile.TemporaryDirectory(prefix="mg-bench-files-") as workdir:
            run(args, database, Path(workdir))
    finally:
        asyncio.run(scratch_database(args.admin_dsn, name, create=False))


if __name__ == "__main__":
    main(sys.argv[1:])
