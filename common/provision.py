"""``mediagrid provision``: the suite's buckets as they must be, created or corrected in place.

For each bucket ``{prefix}-{environment}-{purpose}``: it exists; versioning is on; default
encryption is SSE-S3; lifecycle rules abort incomplete multipart uploads and expire old
versions (other rules on the bucket are kept); public access is blocked; a bucket policy
refuses plain-HTTP requests (other statements are kept). The same settings as
``deploy/aws/mediagrid.yaml``, for buckets made outside CloudFormation or drifted since.

Idempotent: each property is read first and written only when it differs, so a second run
changes nothing. ``dry_run`` reports what would change and writes nothing. A property the
endpoint does not implement (some S3-compatible servers lack public access blocks) is
reported as skipped, not as a failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from common.aws import AwsClients
from common.settings import BUCKET_PURPOSES, Environment, Settings

ABORT_MULTIPART_DAYS = 7
TLS_STATEMENT_ID = "DenyInsecureTransport"
# Error codes of an endpoint that does not implement a bucket property at all.
NOT_IMPLEMENTED = frozenset({"NotImplemented", "XNotImplemented", "MethodNotAllowed"})
# Error codes that mean "the property is not set".
NOT_SET = frozenset(
    {
        "NoSuchLifecycleConfiguration",
        "NoSuchBucketPolicy",
        "NoSuchPublicAccessBlockConfiguration",
        "ServerSideEncryptionConfigurationNotFoundError",
    }
)


@dataclass(frozen=True)
class Change:
    bucket: str
    what: str
    # "changed", "would change" (dry run) or "skipped" (the endpoint lacks the property).
    outcome: str
    detail: str = ""

    def __str__(self) -> str:
        suffix = f" ({self.detail})" if self.detail else ""
        return f"{self.bucket}: {self.what}: {self.outcome}{suffix}"


def noncurrent_days(environment: Environment) -> int:
    return 90 if environment is Environment.PROD else 14


def lifecycle_rules(environment: Environment) -> list[dict[str, Any]]:
    return [
        {
            "ID": "abort-incomplete-multipart-uploads",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS},
        },
        {
            "ID": "expire-old-versions",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "NoncurrentVersionExpiration": {"NoncurrentDays": noncurrent_days(environment)},
        },
    ]


def tls_statement(bucket: str) -> dict[str, Any]:
    return {
        "Sid": TLS_STATEMENT_ID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _rule_key(rule: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two lifecycle rules the same for us (servers add or drop empty fields)."""
    return (
        rule.get("ID"),
        rule.get("Status"),
        (rule.get("AbortIncompleteMultipartUpload") or {}).get("DaysAfterInitiation"),
        (rule.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays"),
    )


class Provisioner:
    def __init__(self, s3: Any, environment: Environment, *, dry_run: bool) -> None:
        self.s3 = s3
        self.environment = environment
        self.dry_run = dry_run
        self.changes: list[Change] = []

    async def bucket(self, name: str) -> None:
        existing = {b["Name"] for b in (await self.s3.list_buckets()).get("Buckets", [])}
        if name not in existing:
            await self._apply(name, "create bucket", lambda: self.s3.create_bucket(Bucket=name))
            if self.dry_run:
                # Nothing can be read from a bucket that is not there: every property would
                # be set on the new one.
                for what in (
                    "enable versioning",
                    "default encryption SSE-S3",
                    "lifecycle rules",
                    "block public access",
                    "require TLS (bucket policy)",
                ):
                    self.changes.append(Change(name, what, "would change"))
                return
        await self._versioning(name)
        await self._encryption(name)
        await self._lifecycle(name)
        await self._public_access(name)
        await self._tls_policy(name)

    async def _apply(self, bucket: str, what: str, write: Any, detail: str = "") -> None:
        if self.dry_run:
            self.changes.append(Change(bucket, what, "would change", detail))
            return
        try:
            await write()
        except ClientError as exc:
            if _code(exc) in NOT_IMPLEMENTED:
                self.changes.append(
                    Change(bucket, what, "skipped", "not supported by the endpoint")
                )
                return
            raise
        self.changes.append(Change(bucket, what, "changed", detail))

    async def _read(self, call: Any) -> dict[str, Any] | None:
        """The property, None when unset, or {"_unsupported": True}."""
        try:
            return dict(await call())
        except ClientError as exc:
            if _code(exc) in NOT_SET:
                return None
            if _code(exc) in NOT_IMPLEMENTED:
                return {"_unsupported": True}
            raise

    def _skipped(self, bucket: str, what: str) -> None:
        self.changes.append(Change(bucket, what, "skipped", "not supported by the endpoint"))

    async def _versioning(self, bucket: str) -> None:
        state = await self.s3.get_bucket_versioning(Bucket=bucket)
        if state.get("Status") != "Enabled":
            await self._apply(
                bucket,
                "enable versioning",
                lambda: self.s3.put_bucket_versioning(
                    Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
                ),
            )

    async def _encryption(self, bucket: str) -> None:
        current = await self._read(lambda: self.s3.get_bucket_encryption(Bucket=bucket))
        if current and current.get("_unsupported"):
            return self._skipped(bucket, "default encryption SSE-S3")
        rules = ((current or {}).get("ServerSideEncryptionConfiguration") or {}).get("Rules", [])
        algorithms = {
            (r.get("ApplyServerSideEncryptionByDefault") or {}).get("SSEAlgorithm") for r in rules
        }
        if algorithms & {"AES256", "aws:kms", "aws:kms:dsse"}:
            return None  # encrypted already (a KMS key chosen by the operator is kept)
        config = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
        await self._apply(
            bucket,
            "default encryption SSE-S3",
            lambda: self.s3.put_bucket_encryption(
                Bucket=bucket, ServerSideEncryptionConfiguration=config
            ),
        )
        return None

    async def _lifecycle(self, bucket: str) -> None:
        current = await self._read(
            lambda: self.s3.get_bucket_lifecycle_configuration(Bucket=bucket)
        )
        if current and current.get("_unsupported"):
            return self._skipped(bucket, "lifecycle rules")
        existing = list((current or {}).get("Rules", []))
        wanted = lifecycle_rules(self.environment)
        have = {_rule_key(r) for r in existing}
        if all(_rule_key(rule) in have for rule in wanted):
            return None
        ours = {rule["ID"] for rule in wanted}
        merged = [r for r in existing if r.get("ID") not in ours] + wanted
        await self._apply(
            bucket,
            "lifecycle rules",
            lambda: self.s3.put_bucket_lifecycle_configuration(
                Bucket=bucket, LifecycleConfiguration={"Rules": merged}
            ),
            detail=f"abort uploads after {ABORT_MULTIPART_DAYS} d, "
            f"old versions expire after {noncurrent_days(self.environment)} d",
        )
        return None

    async def _public_access(self, bucket: str) -> None:
        current = await self._read(lambda: self.s3.get_public_access_block(Bucket=bucket))
        if current and current.get("_unsupported"):
            return self._skipped(bucket, "block public access")
        if (current or {}).get("PublicAccessBlockConfiguration") == PUBLIC_ACCESS_BLOCK:
            return None
        await self._apply(
            bucket,
            "block public access",
            lambda: self.s3.put_public_access_block(
                Bucket=bucket, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK
            ),
        )
        return None

    async def _tls_policy(self, bucket: str) -> None:
        current = await self._read(lambda: self.s3.get_bucket_policy(Bucket=bucket))
        if current and current.get("_unsupported"):
            return self._skipped(bucket, "require TLS (bucket policy)")
        policy = json.loads((current or {}).get("Policy") or '{"Version": "2012-10-17"}')
        statements = [s for s in policy.get("Statement", []) if s.get("Sid") != TLS_STATEMENT_ID]
        if len(statements) < len(policy.get("Statement", [])):
            return None
        policy["Statement"] = [*statements, tls_statement(bucket)]
        await self._apply(
            bucket,
            "require TLS (bucket policy)",
            lambda: self.s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy)),
        )
        return None


async def provision(settings: Settings, *, dry_run: bool = False) -> list[Change]:
    """Bring every bucket of ``settings.environment`` to the required state; return changes."""
    async with AwsClients(settings).s3() as s3:
        provisioner = Provisioner(s3, settings.environment, dry_run=dry_run)
        for purpose in BUCKET_PURPOSES:
            await provisioner.bucket(settings.bucket(purpose))
    return provisioner.changes
