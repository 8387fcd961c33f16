"""Where the CPU of a download goes: per-process CPU seconds for each way of reading the
same object, from ``/proc/<pid>/stat``, in alternating rounds (the floor of target (b)).

One run starts SeaweedFS, the files service and a bare grpc.aio server streaming from memory
(as ``bench.bench_files`` does), stores one object, then reads it, each way in turn:

- ``direct``: a single-stream aioboto3 GET (the (b) baseline);
- ``stub``: ``FileService.Download`` through the generated stub (the (b) figure);
- ``views``: the same call through ``wire.download_method`` (data messages as memoryviews);
- ``client``: ``FilesClient.download`` (views, plus the whole-file SHA-256 check);
- ``memory``: the bare grpc.aio stream from memory (what sending and receiving 1 MiB gRPC
  messages costs, with no S3 at all).

``--compare-streams`` instead runs two files services, one reading with a single GET and
one with 4 ranged GETs, and downloads the object from each in alternating order, each
download right after a direct GET: the paired ratios and each process's CPU (decision 0007).

An ideal relay costs what the direct GET's client costs (receiving from S3) plus what the
bare stream's server costs (sending over gRPC), and its caller what the bare stream's client
costs: with the S3 server on the same cores, the sum of the processes' CPU bounds what any
relay can reach. ``python -u -m bench.files_cpu [--size-mib 256] [--rounds 3]
[--download-streams N | --compare-streams]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import bench_files as bf

KINDS = ("direct", "stub", "views", "client", "memory")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def views_download(address: str, name: str) -> int:
    import grpc
    from mediagrid.files.v1 import file_service_pb2

    from services.files import wire

    async with grpc.aio.insecure_channel(address, options=bf.CHANNEL_OPTIONS) as channel:
        total = 0
        call = wire.download_method(channel)
        metadata = (("authorization", f"Bearer {bf.TOKEN}"),)
        async for response in call(file_service_pb2.DownloadRequest(name=name), metadata=metadata):
            if isinstance(response, memoryview):
                total += len(response)
        return total


async def measure(args: argparse.Namespace, database: str, workdir: Path) -> None:
    from common.aws import AwsClients

    s3_server = bf.S3Server("seaweedfs", workdir / "s3")
    env = s3_server.env(bf.service_env(args, database))
    settings = s3_server.settings(database)
    size = args.size_mib * bf.MiB
    data = os.urandom(size)
    service = bf.Child("serve", env)
    memory = bf.Child("bare-stream", env)
    try:
        address = f"127.0.0.1:{service.port}"
        async with AwsClients(settings).s3() as s3:
            bucket = settings.bucket("files")
            await bf.direct_upload(s3, bucket, data, 8 * bf.MiB, 4)
            _, file = await bf.grpc_upload(address, bf.chunks(data, bf.MiB))
            listed = await s3.list_objects_v2(Bucket=bucket, Prefix="direct/")
            key = listed["Contents"][0]["Key"]
            pids = {
                "s3": s3_server.pid,
                "service": service.proc.pid,
                "memory-server": memory.proc.pid,
                "caller": os.getpid(),
            }
            print(f"  per-process CPU seconds per {args.size_mib} MiB read")
            for _ in range(args.rounds):
                for kind in KINDS:
                    before = {k: cpu_seconds(p) for k, p in pids.items()}
                    started = time.perf_counter()
                    got: Any
                    if kind == "direct":
                        _, got, _ = await bf.direct_get(s3, bucket, key)
                    elif kind == "stub":
                        _, got = await bf.grpc_download(address, file.name)
                    elif kind == "views":
                        got = await views_download(address, file.name)
                    elif kind == "client":
                        _, got = await bf.client_download(address, file.name)
                    else:
                        _, got = await bf.stream_download(f"127.0.0.1:{memory.port}", size)
                    elapsed = time.perf_counter() - started
                    assert got == size
                    spent = {k: cpu_seconds(p) - before[k] for k, p in pids.items()}
                    used = " ".join(f"{k} {v:.2f}" for k, v in spent.items() if v >= 0.005)
                    print(
                        f"  {kind:7} {size / elapsed / 1e6:7,.0f} MB/s  "
                        f"total {sum(spent.values()):.2f}  ({used})"
                    )
    finally:
        service.stop()
        memory.stop()
        s3_server.stop()


async def compare_streams(args: argparse.Namespace, database: str, workdir: Path) -> None:
    import statistics

    from common.aws import AwsClients

    s3_server = bf.S3Server("seaweedfs", workdir / "s3")
    env = s3_server.env(bf.service_env(args, database))
    services = {
        streams: bf.Child("serve", {**env, "MEDIAGRID_DOWNLOAD_STREAMS": str(streams)})
        for streams in (1, 4)
    }
    settings = s3_server.settings(database)
    size = args.size_mib * bf.MiB
    data = os.urandom(size)
    ratios: dict[int, list[float]] = {1: [], 4: []}
    try:
        async with AwsClients(settings).s3() as s3:
            bucket = settings.bucket("files")
            await bf.direct_upload(s3, bucket, data, 8 * bf.MiB, 4)
            _, file = await bf.grpc_upload(f"127.0.0.1:{services[1].port}", bf.chunks(data, bf.MiB))
            listed = await s3.list_objects_v2(Bucket=bucket, Prefix="direct/")
            key = listed["Contents"][0]["Key"]
            for round_ in range(args.rounds * 2):
                for streams in (1, 4) if round_ % 2 == 0 else (4, 1):
                    direct, _, _ = await bf.direct_get(s3, bucket, key)
                    service = services[streams]
                    before = cpu_seconds(service.proc.pid), cpu_seconds(s3_server.pid)
                    seconds, got = await bf.grpc_download(f"127.0.0.1:{service.port}", file.name)
                    assert got == size
                    spent = (
                        cpu_seconds(service.proc.pid) - before[0],
                        cpu_seconds(s3_server.pid) - before[1],
                    )
                    ratios[streams].append(direct / seconds)
                    print(
                        f"  {streams} GET(s) {size / seconds / 1e6:6,.0f} MB/s, direct "
                        f"{size / direct / 1e6:6,.0f} MB/s: {direct / seconds:.2f}x  "
                        f"(CPU s: service {spent[0]:.2f}, S3 {spent[1]:.2f})"
                    )
        for streams, measured in ratios.items():
            rounds = ", ".join(f"{r:.2f}" for r in measured)
            print(f"  {streams} GET(s): median {statistics.median(measured):.2f}x ({rounds})")
    finally:
        for service in services.values():
            service.stop()
        s3_server.stop()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--download-streams", type=int, default=0, help="0: the setting's default")
    parser.add_argument("--compare-streams", action="store_true", help="1 GET vs 4, paired")
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args(argv)
    args.part_mib, args.concurrency, args.download_chunk_kib = 8, 4, 1024
    name = f"mg_bench_cpu_{os.getpid()}"
    database = args.admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(bf.scratch_database(args.admin_dsn, name, create=True))
    try:
        with tempfile.TemporaryDirectory(prefix="mg-bench-cpu-") as workdir:
            run = compare_streams if args.compare_streams else measure
            asyncio.run(run(args, database, Path(workdir)))
    finally:
        asyncio.run(bf.scratch_database(args.admin_dsn, name, create=False))


if __name__ == "__main__":
    main(sys.argv[1:])
