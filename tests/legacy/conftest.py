"""Fixtures for the legacy importers: real PostgreSQL, moto S3, real Redis (unique prefix; the
session's ``redis_url``: the machine's or an embedded one, see tests/conftest.py)."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest_asyncio
import redis.asyncio as aioredis

from common.activity import LoggingActivityRecorder
from common.aws import AwsClients
from common.settings import Settings
from services.files.repository import FileRepository
from services.files.storage import Storage
from services.migration.files_import import FileImporter
from services.migration.repository import LegacyRepository
from services.users.repository import UserRepository

MiB = 1024 * 1024
# A Redis client and the key prefix that belongs to one test.
Redis = tuple[aioredis.Redis, str]


@dataclass
class FilesEnv:
    settings: Settings
    pool: asyncpg.Pool
    storage: Storage
    files: FileRepository
    legacy: LegacyRepository
    users: UserRepository

    def importer(self, storage: Storage | None = None, **options: Any) -> FileImporter:
        return FileImporter(
            settings=self.settings,
            files=self.files,
            storage=storage or self.storage,
            legacy=self.legacy,
            users=self.users,
            activity=LoggingActivityRecorder(),
            **options,
        )

    async def download(self, file_name: str) -> bytes:
        record = await self.files.get_file(file_name.removeprefix("files/"))
        assert record is not None
        return b"".join(
            [c async for c in self.storage.stream(record.object_key, record.version_id)]
        )


@pytest_asyncio.fixture
async def files_env(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[FilesEnv]:
    # The smallest part size S3 allows: the 6 MiB test file becomes a two-part upload.
    settings = settings.model_copy(update={"upload_part_size_bytes": 5 * MiB})
    storage = await Storage.open(AwsClients(settings), settings.bucket("files"), create=True)
    try:
        yield FilesEnv(
            settings,
            pool,
            storage,
            FileRepository(pool),
            LegacyRepository(pool),
            UserRepository(pool),
        )
    finally:
        await storage.close()


def write_tree(root: Path, owners: list[str], seed: int = 7) -> dict[str, bytes]:
    """A legacy upload tree: random sizes including 0 bytes and a few MiB; path -> bytes."""
    rng = random.Random(seed)
    sizes = [0, 1, 4096, 100_000, 3 * MiB + 17, 6 * MiB + 5]
    written: dict[str, bytes] = {}
    for index, owner in enumerate(owners):
        for n, size in enumerate(sizes if index == 0 else [0, rng.randint(1, 300_000), 2048]):
            sub = ["", "2019", "2019/holiday", "deep/er/still"][n % 4]
            rel = Path(owner, sub, f"file-{n}.bin") if sub else Path(owner, f"file-{n}.bin")
            data = rng.randbytes(size)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
            written[rel.as_posix()] = data
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(100)
    (root / owners[0] / "picture.png").write_bytes(png)
    written[f"{owners[0]}/picture.png"] = png
    return written


@pytest_asyncio.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[tuple[aioredis.Redis, str]]:
    """A client and a key prefix of this test alone; its keys are deleted afterwards."""
    client = aioredis.from_url(redis_url, decode_responses=True)
    prefix = f"mgtest:{uuid.uuid4().hex[:10]}:"
    try:
        yield client, prefix
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
