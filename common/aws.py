"""One aioboto3 session per process and a factory for S3 clients configured from settings.

SigV4 everywhere (moto presigns SigV2 otherwise), botocore ``standard`` retries, pool size
and timeouts from settings; payload signing can be turned off for local plain-HTTP
endpoints. Every S3 call is traced, the synchronous client's (downloads, probes) too
(``common.telemetry.instrument_aws_session`` / ``instrument_sync_session``).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import aioboto3
from botocore.config import Config

from common.settings import Settings
from common.telemetry import instrument_aws_session, instrument_sync_session


class AwsClients:
    """Owns the aioboto3 session; hands out S3 clients as async context managers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._credentials: dict[str, str] = {}
        if settings.aws_access_key_id and settings.aws_secret_access_key:
            self._credentials = {
                "aws_access_key_id": settings.aws_access_key_id.get_secret_value(),
                "aws_secret_access_key": settings.aws_secret_access_key.get_secret_value(),
            }
        self.session = aioboto3.Session(region_name=settings.aws_region, **self._credentials)
        instrument_aws_session(self.session)
        self._sync_s3: Any = None
        self._presigner: Any = None

    def config(self) -> Config:
        s = self.settings
        return Config(
            signature_version="s3v4",
            retries={"mode": "standard", "max_attempts": s.s3_max_attempts},
            max_pool_connections=s.s3_max_pool_connections,
            connect_timeout=s.s3_connect_timeout_seconds,
            read_timeout=s.s3_read_timeout_seconds,
            s3={"payload_signing_enabled": s.s3_payload_signing, "addressing_style": "path"},
        )

    def sync_s3(self) -> Any:
        """One synchronous boto3 S3 client, configured like ``s3()``, for code that reads in
        threads (downloads, PyAV's file object) or only presigns. Thread-safe; built once."""
        if self._sync_s3 is None:
            import boto3

            session = boto3.session.Session(
                region_name=self.settings.aws_region, **self._credentials
            )
            instrument_sync_session(session)
            self._sync_s3 = session.client(
                "s3", endpoint_url=self.settings.s3_endpoint_url, config=self.config()
            )
        return self._sync_s3

    def presigner(self) -> Any:
        """The synchronous client that mints URLs handed to clients (presigned GET/PUT).

        A SigV4 signature covers the Host header, so a URL must be signed for the host that
        will receive it: with ``s3_public_endpoint_url`` set (the services reach S3 at one
        address, clients at another), this client is configured with the public endpoint.
        Presigning makes no call, so it never talks to that endpoint itself.
        """
        public = self.settings.s3_public_endpoint_url
        if public is None or public == self.settings.s3_endpoint_url:
            return self.sync_s3()
        if self._presigner is None:
            import boto3

            session = boto3.session.Session(
                region_name=self.settings.aws_region, **self._credentials
            )
            self._presigner = session.client("s3", endpoint_url=public, config=self.config())
        return self._presigner

    def s3(self) -> AbstractAsyncContextManager[Any]:
        """``async with clients.s3() as s3: await s3.put_object(...)``."""
        return self.session.client(  # type: ignore[no-any-return]
            "s3", endpoint_url=self.settings.s3_endpoint_url, config=self.config()
        )


async def ensure_bucket(s3: Any, bucket: str, *, versioning: bool = True) -> None:
    """Create ``bucket`` if missing and turn versioning on (idempotent)."""
    existing = {b["Name"] for b in (await s3.list_buckets()).get("Buckets", [])}
    if bucket not in existing:
        await s3.create_bucket(Bucket=bucket)
    if versioning:
        await s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
