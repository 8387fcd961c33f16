"""mediagrid provision against a real S3 server (moto's): creates, corrects, is idempotent,
keeps what the operator added, and a dry run writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from common.provision import TLS_STATEMENT_ID, provision
from common.settings import Environment, Settings


@pytest.fixture
def staging(settings: Settings) -> Settings:
    return settings.model_copy(update={"environment": Environment.STAGING, "bucket_prefix": "prov"})


def client(settings: Settings) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.aws_region,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


async def test_first_run_sets_everything_and_second_changes_nothing(staging: Settings) -> None:
    s3 = client(staging)
    bucket = staging.bucket("files")
    first = await provision(staging)
    assert {c.what for c in first} == {
        "create bucket",
        "enable versioning",
        "default encryption SSE-S3",
        "lifecycle rules",
        "block public access",
        "require TLS (bucket policy)",
    }
    assert {c.outcome for c in first} == {"changed"}
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["expire-old-versions"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 14
    assert rules["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 7
    }
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    statements = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
    assert [s["Sid"] for s in statements] == [TLS_STATEMENT_ID]
    assert await provision(staging) == []


async def test_drift_is_corrected_and_the_operators_additions_kept(staging: Settings) -> None:
    s3 = client(staging)
    bucket = staging.bucket("files")
    await provision(staging)
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "logs",
                    "Status": "Enabled",
                    "Filter": {"Prefix": "logs/"},
                    "Expiration": {"Days": 3},
                }
            ]
        },
    )
    other = {"Sid": "ReadOnlyAuditor", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}  # fmt: skip
    s3.put_bucket_policy(
        Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [other]})
    )
    changes = await provision(staging)
    assert [c.what for c in changes] == ["lifecycle rules", "require TLS (bucket policy)"]
    rules = {r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules == {"logs", "abort-incomplete-multipart-uploads", "expire-old-versions"}
    sids = [
        s["Sid"] for s in json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
    ]
    assert sids == ["ReadOnlyAuditor", TLS_STATEMENT_ID]
    assert await provision(staging) == []


async def test_dry_run_reports_and_writes_nothing(staging: Settings) -> None:
    s3 = client(staging)
    planned = await provision(staging, dry_run=True)
    assert len(planned) == 6 and {c.outcome for c in planned} == {"would change"}
    names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    assert staging.bucket("files") not in names
    prod = staging.model_copy(update={"environment": Environment.PROD})
    await provision(prod)
    s3.put_bucket_versioning(
        Bucket=prod.bucket("files"), VersioningConfiguration={"Status": "Suspended"}
    )
    [change] = await provision(prod, dry_run=True)
    assert (change.what, change.outcome) == ("enable versioning", "would change")
    assert s3.get_bucket_versioning(Bucket=prod.bucket("files"))["Status"] == "Suspended"
    rules = {
        r["ID"]: r
        for r in s3.get_bucket_lifecycle_configuration(Bucket=prod.bucket("files"))["Rules"]
    }
    assert rules["expire-old-versions"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 90


def test_the_command_reports_plans_and_changes_then_nothing(staging: Settings) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": f"{root}:{root / 'gen'}",
        "MEDIAGRID_S3_ENDPOINT_URL": str(staging.s3_endpoint_url),
        "MEDIAGRID_AWS_ACCESS_KEY_ID": "test",
        "MEDIAGRID_AWS_SECRET_ACCESS_KEY": "test",
        "MEDIAGRID_BUCKET_PREFIX": "provcli",
    }

    def provision_command(*args: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", "from common.cli import main; main()", "provision", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    planned = provision_command("--environment", "staging", "--dry-run")
    assert planned[0] == "provcli-staging-files: create bucket: would change" and len(planned) == 6
    applied = provision_command("--environment", "staging")
    assert all(line.endswith("changed") or "changed (" in line for line in applied)
    assert provision_command("--environment", "staging") == [
        "provcli-staging-files: nothing to change"
    ]
