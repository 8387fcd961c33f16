"""Do the file records and the object store agree? (``mediagrid check``)

A store wiped or restored from an older backup leaves records whose object is gone: their
downloads answer DATA_LOSS (``OBJECT_MISSING``) and no URL is minted for them. This finds
them, newest first, with one HEAD per record (bounded, a few at a time).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from common.aws import AwsClients
from services.files.repository import FilesRepository

# HEAD requests in flight at once.
CONCURRENCY = 16
NOT_FOUND_CODES = ("404", "NoSuchKey", "NoSuchVersion", "NotFound")


@dataclass(frozen=True)
class StoreAgreement:
    checked: int
    total: int
    missing: list[str]  # files/{id} whose object (version) is not stored


async def missing_objects(pool: Any, aws: AwsClients, limit: int) -> StoreAgreement:
    """Look for the objects of the newest ``limit`` live files; the files whose object is gone."""
    records, total = await FilesRepository(pool).recent_objects(limit)
    gate = asyncio.Semaphore(CONCURRENCY)
    missing: list[str] = []
    async with aws.s3() as s3:

        async def look(file_id: str, bucket: str, key: str, version_id: str) -> None:
            async with gate:
                try:
                    await s3.head_object(Bucket=bucket, Key=key, VersionId=version_id)
                except ClientError as exc:
                    code = str(exc.response.get("Error", {}).get("Code", ""))
                    if code not in NOT_FOUND_CODES:
                        raise
                    missing.append(f"files/{file_id}")

        await asyncio.gather(*(look(*record) for record in records))
    return StoreAgreement(len(records), total, sorted(missing))
