"""Legacy importers: throughput next to a baseline measured in the same run.

(a) import-files vs. plain ``put_object`` of the same files (same S3 = moto's server in its
    own process, same concurrency): what the upload engine, hashing, verification and
    bookkeeping cost. Also the no-op re-run (files/s checked).
(b) import-redis vs. the same number of bare ``create_user`` / ``create_job`` repository
    calls (no Redis, no validation, no bookkeeping).

``python -m bench legacy -- --files 100 --size-kib 512 --users 500 --jobs 1000``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.bench_files import free_port, scratch_database, wait_http
from bench.rounds import quick

MiB = 1024 * 1024


def _line(label: str, value: float, unit: str) -> str:
    return f"{label:<46} {value:>10.1f} {unit}"


async def measure(args: argparse.Namespace, endpoint: str, database: str) -> None:
    import redis.asyncio as aioredis

    from common import db
    from common.activity import LoggingActivityRecorder
    from common.aws import AwsClients
    from common.registry import resolve
    from common.runtime import migrate_all
    from common.settings import Settings
    from services.files.repository import FileRepository
    from services.files.storage import Storage
    from services.jobs.models import JobSpec
    from services.jobs.repository import JobRepository
    from services.migration.files_import import FileImporter
    from services.migration.redis_import import RedisImporter
    from services.migration.repository import LegacyRepository
    from services.users.repository import UserRepository

    settings = Settings(
        environment="test",
        database_url=database,
        s3_endpoint_url=endpoint,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        s3_payload_signing=False,
        log_level="WARNING",
    )
    pool = await db.create_pool(settings)
    await migrate_all(pool, resolve(["all"]))
    aws = AwsClients(settings)
    storage = await Storage.open(aws, settings.bucket("files"), create=True)
    users = UserRepository(pool)
    try:
        owner = await users.create_user(
            email="bench@example.com", display_name="", role="user", password_hash=None
        )
        rng = random.Random(1)
        with tempfile.TemporaryDirectory(prefix="mg-bench-legacy-") as tmp:
            root = Path(tmp)
            (root / owner.id).mkdir()
            total = 0
            for n in range(args.files):
                data = rng.randbytes(args.size_kib * 1024)
                (root / owner.id / f"f{n:05d}.bin").write_bytes(data)
                total += len(data)

            # (a) baseline: put_object of each file, same concurrency.
            gate = asyncio.Semaphore(args.concurrency)

            async def put(path: Path) -> None:
                async with gate:
                    body = await asyncio.to_thread(path.read_bytes)
                    await storage.client.put_object(
                        Bucket=storage.bucket, Key=f"baseline/{path.name}", Body=body
                    )

            paths = sorted((root / owner.id).iterdir())
            started = time.perf_counter()
            await asyncio.gather(*(put(p) for p in paths))
            base = time.perf_counter() - started

            importer = FileImporter(
                settings=settings,
                files=FileRepository(pool),
                storage=storage,
                legacy=LegacyRepository(pool),
                users=users,
                activity=LoggingActivityRecorder(),
                concurrency=args.concurrency,
            )
            started = time.perf_counter()
            report = await importer.run(root, "bench")
            ours = time.perf_counter() - started
            assert not report.failures, report.failures[:3]
            started = time.perf_counter()
            again = await importer.run(root, "bench")
            rerun = time.perf_counter() - started
            assert again.count("skipped") == args.files
        mb = total / 1e6
        print(f"(a) import-files: {args.files} files of {args.size_kib} KiB ({mb:.0f} MB)")
        print(_line("put_object, same concurrency (baseline)", mb / base, "MB/s"))
        print(_line("legacy import-files (engine verify)", mb / ours, "MB/s"))
        print(f"{'ratio import / baseline':<46} {base / ours:>10.2f}x")
        print(_line("no-op re-run", args.files / rerun, "files/s"))

        # (b) Redis import vs. bare repository calls.
        client = aioredis.from_url(args.redis, decode_responses=False)
        prefix = f"mgbench:{uuid.uuid4().hex[:8]}:"
        try:
            pipe = client.pipeline(transaction=False)
            for n in range(args.users):
                pipe.hset(
                    f"{prefix}user:u{n}",
                    mapping={"email": f"u{n}@legacy.example.com", "created_at": "1600000000"},
                )
            for n in range(args.jobs):
                pipe.hset(
                    f"{prefix}job:j{n}",
                    mapping={
                        "type": "bench.work",
                        "owner": f"u{n % args.users}",
                        "state": "queued",
                        "payload": '{"n": 1}',
                        "created_at": "1600000000",
                    },
                )
            await pipe.execute()
            jobs = JobRepository(pool)

            async def baseline(tag: str) -> float:
                started = time.perf_counter()
                for n in range(args.users):
                    await users.create_user(
                        email=f"{tag}{n}@base.example.com",
                        display_name="",
                        role="user",
                        password_hash=None,
                    )
                for _ in range(args.jobs):
                    await jobs.create_job(
                        f"users/{owner.id}", JobSpec(type="bench.work", max_attempts=3), None
                    )
                return time.perf_counter() - started

            first_base = await baseline("b")
            redis_importer = RedisImporter(
                settings=settings,
                redis=client,
                url=args.redis,
                prefix=prefix,
                users=users,
                jobs=jobs,
                legacy=LegacyRepository(pool),
            )
            started = time.perf_counter()
            result = await redis_importer.run()
            ours = time.perf_counter() - started
            assert not result.rejects, result.rejects[:3]
            # The baseline again after the import (warm caches); the faster run counts.
            base = min(first_base, await baseline("c"))
        finally:
            keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
            if keys:
                await client.delete(*keys)
            await client.aclose()
        records = args.users + args.jobs
        print(f"(b) import-redis: {args.users} users + {args.jobs} jobs")
        print(_line("create_user/create_job calls (baseline)", records / base, "records/s"))
        print(_line("legacy import-redis", records / ours, "records/s"))
        print(f"{'ratio import / baseline':<46} {base / ours:>10.2f}x")
    finally:
        await storage.close()
        await pool.close()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_legacy")
    parser.add_argument("--files", type=int, default=quick(100, 30))
    parser.add_argument("--size-kib", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--users", type=int, default=quick(500, 200))
    parser.add_argument("--jobs", type=int, default=quick(1000, 300))
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")
    moto_port = free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    name = f"mg_bench_legacy_{os.getpid()}"
    database = args.admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(scratch_database(args.admin_dsn, name, create=True))
    try:
        endpoint = f"http://127.0.0.1:{moto_port}"
        wait_http(f"{endpoint}/moto-api/")
        asyncio.run(measure(args, endpoint, database))
    finally:
        moto.terminate()
        moto.wait()
        asyncio.run(scratch_database(args.admin_dsn, name, create=False))


if __name__ == "__main__":
    main(sys.argv[1:])
