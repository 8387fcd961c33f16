"""The S3 the integration lane runs against: SeaweedFS (default) or real AWS S3 (opt-in).

``MEDIAGRID_TEST_S3`` (read by tests/conftest.py before the ``MEDIAGRID_*`` clean-up) picks it:

- unset or ``seaweedfs``: one ``weed mini`` per test session (common/seaweed.py) in a
  temporary directory, with an identities file, so signatures, expiry and checksums are
  really checked.
- ``moto``: moto's server in the test process (quicker, checks nothing: signatures, expiry
  and checksums are not verified); for a quick local run, not for CI.
- ``aws``: real S3, enabled only by explicit variables (``AWS_LANE_VARIABLES``); without
  them every test of the lane is skipped, and the skip says which variable is missing.

Every test gets buckets of its own (``bucket_prefix`` unique per test, created versioned
before the test starts): tests never see each other's objects, and nothing needs a reset.
On AWS the buckets are emptied (every version and delete marker, every open multipart
upload) and deleted after the test, whether it passed or not.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.seaweed import SeaweedServer, ensure_identities
from common.settings import BUCKET_PURPOSES, Settings
from tests.support.stores import suite_settings

# The variables that enable the real-AWS lane (all required; see docs/operations.md).
AWS_LANE_VARIABLES = (
    "MEDIAGRID_TEST_AWS_ACCESS_KEY_ID",
    "MEDIAGRID_TEST_AWS_SECRET_ACCESS_KEY",
    "MEDIAGRID_TEST_AWS_REGION",
    "MEDIAGRID_TEST_AWS_BUCKET_PREFIX",
)

# Bucket sets a SeaweedFS session keeps ready ahead of the tests that will use them.
PREPARED_BUCKET_SETS = 2
# Volumes a test session's SeaweedFS may create (one per bucket, a few per large object).
MAX_VOLUMES = 5000


@dataclass
class ObjectStore:
    """Where the lane's S3 is and how to sign for it; ``skip_reason`` when it is not there."""

    kind: str  # "seaweedfs", "moto" or "aws"
    endpoint: str | None  # None: AWS's own endpoints
    access_key: str = ""
    secret_key: str = ""
    region: str = "us-east-1"
    bucket_prefix: str = "t"
    skip_reason: str = ""
    server: SeaweedServer | None = None
    created: list[str] = field(default_factory=list)
    # SeaweedFS: prefixes whose buckets a background thread already made (see ``take_prefix``).
    _ready: list[Future[str]] = field(default_factory=list)
    _maker: ThreadPoolExecutor | None = None

    @property
    def local(self) -> bool:
        return self.kind != "aws"

    def new_prefix(self) -> str:
        """A bucket prefix nobody used: ``{prefix}-{8 hex}`` (bucket names are global on AWS)."""
        return f"{self.bucket_prefix}-{uuid.uuid4().hex[:8]}"

    def take_prefix(self) -> str:
        """A prefix whose buckets exist, versioned and empty, and have storage allocated.

        SeaweedFS allocates the volumes of a bucket at its first write, which costs a few
        tenths of a second; a background thread keeps the next tests' buckets ready so that
        the tests do not wait for it. On AWS the buckets are created here, on demand.
        """
        if self._maker is None:
            prefix = self.new_prefix()
            self.create_buckets(prefix)
            return prefix
        while len(self._ready) < PREPARED_BUCKET_SETS + 1:
            self._ready.append(self._maker.submit(self._prepared_buckets))
        return self._ready.pop(0).result()

    def _prepared_buckets(self) -> str:
        prefix = self.new_prefix()
        s3 = self.client()
        for name in self.bucket_names(prefix):
            s3.create_bucket(Bucket=name)
            # Written and deleted before versioning is on: the volumes get allocated, and
            # neither a version nor a delete marker is left behind.
            s3.put_object(Bucket=name, Key="warm-up", Body=b"")
            s3.delete_object(Bucket=name, Key="warm-up")
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return prefix

    def start_preparing(self) -> None:
        self._maker = ThreadPoolExecutor(1, thread_name_prefix="buckets")

    def stop_preparing(self) -> None:
        if self._maker is not None:
            self._maker.shutdown(wait=True, cancel_futures=True)
            self._maker = None

    def bucket_names(self, prefix: str) -> list[str]:
        return [f"{prefix}-test-{purpose}" for purpose in BUCKET_PURPOSES]

    def settings(self, database_url: str, prefix: str, **overrides: Any) -> Settings:
        """Suite settings on this store with the buckets of ``prefix`` (``take_prefix``)."""
        values: dict[str, Any] = {
            "s3_endpoint_url": self.endpoint,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "aws_region": self.region,
            "bucket_prefix": prefix,
            # Plain HTTP to a local server: skip the SHA-256 of every payload; AWS is HTTPS.
            "s3_payload_signing": False,
        }
        values.update(overrides)
        return suite_settings(database_url, self.endpoint or "", **values)

    def client(self) -> Any:
        """A synchronous boto3 client on this store (the tests' own checks and set-up)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def create_buckets(self, prefix: str) -> list[str]:
        """Create the buckets of ``prefix``, versioned (in the store's region on AWS)."""
        s3 = self.client()
        names = self.bucket_names(prefix)
        for name in names:
            kwargs: dict[str, Any] = {"Bucket": name}
            if self.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            s3.create_bucket(**kwargs)
            self.created.append(name)
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return names

    def delete_buckets(self, names: list[str]) -> None:
        """Empty (versions, delete markers, open multipart uploads) and delete each bucket."""
        s3 = self.client()
        for name in names:
            empty_bucket(s3, name)
            s3.delete_bucket(Bucket=name)
            self.created.remove(name)


def empty_bucket(s3: Any, bucket: str) -> None:
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        doomed = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        for start in range(0, len(doomed), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed[start : start + 1000]})


def aws_store(environ: Mapping[str, str]) -> ObjectStore:
    """The real-AWS store from the lane's variables, or one that only carries a skip reason."""
    missing = [name for name in AWS_LANE_VARIABLES if not environ.get(name)]
    if missing:
        return ObjectStore(
            "aws",
            None,
            skip_reason=(
                "the real-AWS lane needs " + ", ".join(missing) + " (docs/operations.md, "
                "'Integration tests against real AWS')"
            ),
        )
    return ObjectStore(
        "aws",
        None,
        access_key=environ["MEDIAGRID_TEST_AWS_ACCESS_KEY_ID"],
        secret_key=environ["MEDIAGRID_TEST_AWS_SECRET_ACCESS_KEY"],
        region=environ["MEDIAGRID_TEST_AWS_REGION"],
        bucket_prefix=environ["MEDIAGRID_TEST_AWS_BUCKET_PREFIX"],
    )


@contextlib.contextmanager
def seaweed_store() -> Iterator[ObjectStore]:
    """One SeaweedFS in a temporary directory, signatures checked; stopped and removed after."""
    with tempfile.TemporaryDirectory(prefix="mg-s3-") as tmp:
        identity = ensure_identities(Path(tmp) / "identities.json")
        # One SeaweedFS volume per bucket (a collection each), and by default only as many
        # volumes as the free disk holds at their 1 GiB size limit: a session's hundreds of
        # buckets need more. Volumes grow on disk as they fill, not up front.
        server = SeaweedServer(
            Path(tmp) / "s3", identities=identity, extra_args=(f"-volume.max={MAX_VOLUMES}",)
        )
        endpoint = server.start()
        store = ObjectStore(
            "seaweedfs",
            endpoint,
            access_key=identity.access_key,
            secret_key=identity.secret_key,
            server=server,
        )
        store.start_preparing()
        try:
            yield store
        finally:
            store.stop_preparing()
            server.stop()


@contextlib.contextmanager
def object_store_for_tests(kind: str, environ: Mapping[str, str]) -> Iterator[ObjectStore]:
    """The lane's store for a whole session (module doc); AWS buckets left over are removed."""
    if kind == "aws":
        store = aws_store(environ)
        try:
            yield store
        finally:
            if store.created:
                store.delete_buckets(list(store.created))
        return
    if kind == "moto":
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield ObjectStore("moto", f"http://{host}:{port}", "testing", "testing")
        finally:
            server.stop()
        return
    if kind not in ("", "seaweedfs"):
        raise ValueError(f"MEDIAGRID_TEST_S3 is seaweedfs (default), moto or aws, not {kind!r}")
    with seaweed_store() as store:
        yield store


def lane_environment() -> dict[str, str]:
    """The lane's variables, read before tests/conftest.py removes every ``MEDIAGRID_*``."""
    return {k: v for k, v in os.environ.items() if k.startswith("MEDIAGRID_TEST_AWS_")}
