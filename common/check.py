"""``mediagrid check``: is this configuration able to run the suite?

Checks, in order: the settings (already validated when this runs), the database (reachable,
server version), each service's migrations (pending versions are a failure: run
``mediagrid migrate``), and each bucket (exists, versioning on, and a write/read/delete
round trip of a small object), then whether the newest file records' objects are stored (a
wiped or restored store leaves records without objects). A dependency that cannot be
reached fails its row and the rows that need it, each naming the setting to look at.

With nothing configured in dev/test, check uses the same embedded stand-ins as ``serve``:
the embedded PostgreSQL and SeaweedFS under MEDIAGRID_DATA_DIR (so it reports what ``serve``
would find; with MEDIAGRID_EMBEDDED_S3=moto, a fresh in-memory S3 endpoint, which only
proves the S3 code path works).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from botocore.exceptions import BotoCoreError, ClientError

from common import db
from common.aws import AwsClients
from common.embedded import embedded_dependencies
from common.errors import Unavailable
from common.migrations import pending
from common.registry import SERVICES
from common.settings import BUCKET_PURPOSES, Settings

# File records whose object ``check`` looks for (the newest ones): a HEAD each.
STORED_OBJECTS_CHECKED = 1000


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


async def check_database(settings: Settings, embedded: bool) -> tuple[list[CheckResult], bool]:
    if embedded:
        where = "embedded PostgreSQL"
    elif settings.database_url is None:
        where = "(none)"
    else:
        where = db.describe_dsn(settings.database_url.get_secret_value())
    try:
        pool = await db.create_pool(settings)
    except Unavailable as exc:
        return [
            CheckResult(
                "database",
                False,
                f"database unreachable ({where}); check MEDIAGRID_DATABASE_URL: {exc}",
            )
        ], False
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        return [
            CheckResult(
                "database", False, f"cannot connect ({where}); check MEDIAGRID_DATABASE_URL: {exc}"
            )
        ], False
    results: list[CheckResult] = []
    try:
        async with pool.acquire() as conn:
            version = await conn.fetchval("SHOW server_version")
            results.append(CheckResult("database", True, f"{where}: PostgreSQL {version}"))
            for spec in SERVICES.values():
                if not spec.migrations.is_dir():
                    continue
                missing = await pending(conn, spec.schema, spec.migrations)
                if missing:
                    versions = ", ".join(f"{v:03d}" for v in missing)
                    results.append(
                        CheckResult(
                            f"migrations: {spec.name}",
                            False,
                            f"pending {versions}; run `mediagrid migrate`",
                        )
                    )
                else:
                    results.append(CheckResult(f"migrations: {spec.name}", True, "up to date"))
    finally:
        await pool.close()
    return results, True


def _client_error(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', '?')}: {error.get('Message', '') or exc}"


async def check_bucket(s3: Any, settings: Settings, bucket: str) -> CheckResult:
    name = f"bucket {bucket}"
    try:
        await s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            return CheckResult(
                name,
                False,
                f"bucket {bucket} does not exist; it is built from MEDIAGRID_BUCKET_PREFIX="
                f"{settings.bucket_prefix!r} and MEDIAGRID_ENVIRONMENT="
                f"{settings.environment.value!r} (provision it, see deploy/aws)",
            )
        return CheckResult(name, False, f"cannot access bucket: {_client_error(exc)}")
    try:
        versioning = await s3.get_bucket_versioning(Bucket=bucket)
        if versioning.get("Status") != "Enabled":
            return CheckResult(
                name, False, "versioning is not enabled (the files service needs it)"
            )
        return await _round_trip(s3, name, bucket)
    except ClientError as exc:
        return CheckResult(name, False, f"write/read/delete failed: {_client_error(exc)}")


async def _round_trip(s3: Any, name: str, bucket: str) -> CheckResult:
    key = f".mediagrid-check/{uuid.uuid4().hex}"
    body = os.urandom(64)
    put = await s3.put_object(Bucket=bucket, Key=key, Body=body)
    version = put.get("VersionId")
    try:
        got = await s3.get_object(Bucket=bucket, Key=key)
        async with got["Body"] as stream:
            read = await stream.read()
        if read != body:
            return CheckResult(name, False, "read back different bytes than were written")
    finally:
        # Deleting the version itself (not adding a delete marker) leaves no trace.
        extra = {"VersionId": version} if version else {}
        await s3.delete_object(Bucket=bucket, Key=key, **extra)
    return CheckResult(name, True, "exists, versioned, write/read/delete ok")


async def check_s3(settings: Settings, embedded: bool) -> list[CheckResult]:
    if embedded and settings.embedded_s3 == "moto":
        where = f"embedded in-memory S3 (moto) at {settings.s3_endpoint_url}"
    elif embedded:
        where = f"embedded SeaweedFS at {settings.s3_endpoint_url}, data in {settings.data_dir}/s3"
    else:
        where = settings.s3_endpoint_url or "AWS S3"
    buckets = [settings.bucket(purpose) for purpose in BUCKET_PURPOSES]
    try:
        async with AwsClients(settings).s3() as s3:
            results = [await check_bucket(s3, settings, bucket) for bucket in buckets]
    except (BotoCoreError, ClientError, OSError) as exc:
        return [
            CheckResult(
                f"bucket {bucket}",
                False,
                f"S3 unreachable at {where} (check MEDIAGRID_S3_ENDPOINT_URL and "
                f"MEDIAGRID_AWS_*): {exc}",
            )
            for bucket in buckets
        ]
    return [CheckResult("s3", True, where), *results]


async def run_checks(settings: Settings) -> list[CheckResult]:
    results = [
        CheckResult(
            "settings",
            True,
            f"environment {settings.environment.value}, buckets "
            + ", ".join(settings.bucket(p) for p in BUCKET_PURPOSES),
        )
    ]
    async with embedded_dependencies(settings) as effective:
        database_rows, reachable = await check_database(effective, settings.embedded_database)
        results.extend(database_rows)
        s3_rows = await check_s3(effective, settings.s3_is_embedded)
        results.extend(s3_rows)
        migrated = all(row.ok for row in database_rows)
        if reachable and migrated and all(row.ok for row in s3_rows):
            results.append(await check_stored_objects(effective))
    return results


async def check_stored_objects(settings: Settings) -> CheckResult:
    """Records whose S3 object is gone (a wiped or restored store), newest first."""
    from services.files.consistency import missing_objects

    raw = await db.create_pool(settings)
    try:
        agreement = await missing_objects(
            db.SuitePool(raw, settings), AwsClients(settings), STORED_OBJECTS_CHECKED
        )
    except (BotoCoreError, ClientError, OSError) as exc:
        return CheckResult("stored objects", False, f"cannot look objects up: {exc}")
    finally:
        await raw.close()
    scope = f"the newest {agreement.checked} of {agreement.total} files"
    if not agreement.missing:
        return CheckResult("stored objects", True, f"{scope}: every object present")
    shown = ", ".join(agreement.missing[:10])
    more = f" and {len(agreement.missing) - 10} more" if len(agreement.missing) > 10 else ""
    return CheckResult(
        "stored objects",
        False,
        f"{len(agreement.missing)} of {scope} have no object in S3 (was the store wiped or "
        f"restored?): {shown}{more}; their downloads answer DATA_LOSS (OBJECT_MISSING)",
    )
